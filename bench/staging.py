"""Staging figures: `fence stage` cold and warm against `docker build` without and with its cache."""

from __future__ import annotations

import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.baseline import Docker, staging_context
from bench.node import BUILDPACKS, EXAMPLES, BenchNode
from bench.stats import Summary, summary
from fence.models import DropletRecord

SAMPLES = {"python": ("python-hello", "python"), "node": ("node-hello", "nodejs")}
Say = Callable[[str], None]


@dataclass(frozen=True)
class StagingResults:
    """What the staging section measured.

    Attributes:
        figures: figure name → summary (``stage.python.cold.fence`` …).
        droplets: sample → its last droplet (sizes).
        source_bytes: sample → bytes of its source files.
    """

    figures: dict[str, Summary]
    droplets: dict[str, DropletRecord]
    source_bytes: dict[str, int]


def measure(node: BenchNode, docker: Docker, *, reps: int, host_work: Path, say: Say) -> StagingResults:
    """Stage each sample ``reps`` times cold (a new app name: empty cache), warm (the same name
    again: its cache, unchanged source, so the droplet staged from the same inputs is reused) and
    warm forced (``--force``: every step runs again, from the warm cache), interleaved with cold
    and warm docker builds; then the fixed overhead with a buildpack that does nothing.
    """
    assert node.client is not None
    figures: dict[str, list[float]] = {}
    droplets: dict[str, DropletRecord] = {}
    sources: dict[str, int] = {}
    for sample, (example, buildpack) in SAMPLES.items():
        app_dir = EXAMPLES / example
        sources[sample] = _tree_bytes(app_dir)
        context = staging_context(host_work / f"ctx-{sample}", app_dir=app_dir,
                                  buildpack_dir=BUILDPACKS / buildpack, name=example)
        for rep in range(reps):
            name = f"bench-{sample}-{rep}"
            cold, _ = _stage(node, app_dir, name)
            warm, _ = _stage(node, app_dir, name)
            forced, droplets[sample] = _stage(node, app_dir, name, force=True)
            docker_cold, _ = docker.build(context, tag=f"fence-bench/{sample}:{docker.run_id}", cache=False)
            docker_warm, _ = docker.build(context, tag=f"fence-bench/{sample}:{docker.run_id}", cache=True)
            for key, value in (("cold.fence", cold), ("warm.fence", warm), ("forced.fence", forced),
                               ("cold.docker", docker_cold), ("warm.docker", docker_warm)):
                figures.setdefault(f"stage.{sample}.{key}", []).append(value)
            say(f"  {sample} #{rep + 1}: fence cold {cold:.2f} s, warm {warm:.2f} s, warm --force {forced:.2f} s; "
                f"docker build cold {docker_cold:.2f} s, cached {docker_warm:.2f} s")
    noop_pack, noop_app = _noop(host_work)
    context = staging_context(host_work / "ctx-noop", app_dir=noop_app, buildpack_dir=noop_pack, name="noop")
    for rep in range(reps):
        fence, _ = _stage(node, noop_app, f"bench-noop-{rep}", buildpacks=(str(noop_pack),))
        build, _ = docker.build(context, tag=f"fence-bench/noop:{docker.run_id}", cache=False)
        figures.setdefault("stage.noop.fence", []).append(fence)
        figures.setdefault("stage.noop.docker", []).append(build)
        say(f"  noop #{rep + 1}: fence {fence:.2f} s, docker build {build:.2f} s")
    return StagingResults(figures={k: summary(v, "s") for k, v in figures.items()}, droplets=droplets,
                          source_bytes=sources)


def _stage(node: BenchNode, app_dir: Path, name: str, buildpacks: tuple[str, ...] = (),
           force: bool = False) -> tuple[float, DropletRecord]:
    assert node.client is not None
    started = time.perf_counter()
    record = node.client.stage(source=str(app_dir), app=name, buildpacks=buildpacks, env_pairs=(),
                               on_line=lambda line: None, force=force)
    return time.perf_counter() - started, record


def _noop(host_work: Path) -> tuple[Path, Path]:
    """A buildpack whose detect accepts anything and whose compile does nothing, and a one-file app."""
    pack = host_work / "noop-buildpack"
    (pack / "bin").mkdir(parents=True, exist_ok=True)
    scripts = {"detect": "#!/bin/sh\necho noop\n",
               "compile": "#!/bin/sh\nexit 0\n",
               "release": "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: sleep infinity\\n'\n"}
    for name, text in scripts.items():
        (pack / "bin" / name).write_text(text)
        (pack / "bin" / name).chmod(0o755)
    app = host_work / "noop-app"
    app.mkdir(exist_ok=True)
    (app / "hello.txt").write_text("hello\n")
    return pack, app


def _tree_bytes(host_dir: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(host_dir):
        total += sum((Path(root) / f).stat().st_size for f in files)
    return total


def droplet_entries(host_droplet: Path) -> int:
    """How many entries a droplet holds."""
    with tarfile.open(host_droplet, "r:*") as tar:
        return sum(1 for _ in tar)
