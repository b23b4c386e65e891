"""Dockerfile builds: fence's checked build of examples/dockerfile-app beside plain `docker build`, cold and warm."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.node import REPO
from bench.stats import Summary, summary

if TYPE_CHECKING:
    from bench.baseline import Docker
    from bench.node import BenchNode

SAMPLE = REPO / "examples" / "dockerfile-app"
# A step with some real work, so a cold build is more than the engine's fixed cost per step.
WORK = 'RUN python3 -c "import os; [open(f\\"/srv/f{i}\\", \\"w\\").write(\\"x\\" * 4096) for i in range(2000)]"\n'


def _context(host_work: Path) -> tuple[Path, Path]:
    """The sample with the work step, as a folder (for docker build) and as a source tar (for fence)."""
    host_dir = host_work / f"dockerfile-{uuid.uuid4().hex[:6]}"
    host_dir.mkdir()
    for name in ("app.py", "stackato.yml", ".dockerignore"):
        (host_dir / name).write_bytes((SAMPLE / name).read_bytes())
    text = (SAMPLE / "Dockerfile").read_text().replace("USER 1000", WORK.rstrip("\n") + "\nUSER 1000")
    (host_dir / "Dockerfile").write_text(text)
    host_tar = host_work / f"{host_dir.name}.tar"
    with tarfile.open(host_tar, mode="w") as archive:
        for path in sorted(host_dir.iterdir()):
            data = path.read_bytes()
            entry = tarfile.TarInfo(f"app/{path.name}")
            entry.size, entry.mode, entry.uid, entry.gid = len(data), 0o644, 1000, 1000
            archive.addfile(entry, io.BytesIO(data))
    return host_dir, host_tar


def measure(*, reps: int, host_work: Path, say: Callable[[str], None]) -> dict[str, Summary]:
    """Cold fence build vs ``docker build --no-cache`` (classic builder), and fence's warm rebuild.

    Returns:
        ``dockerfile.cold.fence``, ``dockerfile.cold.docker``, ``dockerfile.warm.fence`` (seconds).
    """
    from fence import labels
    from fence.backend.docker import DockerBackend
    from fence.config import ConfigStore
    from fence.staging.dockerfile_build import build_app_image

    backend = DockerBackend()
    config = ConfigStore(host_file=host_work / "dockerfile-config.yml")
    host_dir, host_tar = _context(host_work)
    cold, warm, plain = [], [], []
    tags: list[str] = []
    nodes: list[str] = []
    try:
        for rep in range(reps):
            node = f"nbench{uuid.uuid4().hex[:8]}"
            nodes.append(node)
            began = time.monotonic()
            build_app_image(backend=backend, config=config, node_id=node, app="bench", host_source=host_tar,
                            host_workdir=host_work, dockerfile="Dockerfile", build_args={}, on_line=lambda _: None)
            cold.append(time.monotonic() - began)
            began = time.monotonic()
            build_app_image(backend=backend, config=config, node_id=node, app="bench", host_source=host_tar,
                            host_workdir=host_work, dockerfile="Dockerfile", build_args={}, on_line=lambda _: None)
            warm.append(time.monotonic() - began)
            tag = f"fence-bench/dockerfile:{uuid.uuid4().hex[:8]}"
            tags.append(tag)
            began = time.monotonic()
            subprocess.run(["docker", "build", "--no-cache", "--network", "none", "-q", "-t", tag, str(host_dir)],
                           check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
            plain.append(time.monotonic() - began)
            say(f"       rep {rep + 1}: fence cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s, "
                f"docker build {plain[-1]:.2f} s")
    finally:
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
        for node in nodes:
            for image in backend.list_images({labels.NODE: node}):
                for tag in image.tags:
                    backend.remove_image(tag)
        backend.close()
    return {"dockerfile.cold.fence": summary(cold, "s"), "dockerfile.warm.fence": summary(warm, "s"),
            "dockerfile.cold.docker": summary(plain, "s")}


START_APP = "dockbench"


def measure_start(node: BenchNode, docker: Docker, *, reps: int, say: Callable[[str], None]) -> dict[str, Summary]:
    """First instance of an image app (examples/dockerfile-app pushed with 0 instances) from the
    scale call to its first 200, against ``docker run`` of the same image to its first 200 (both
    found by label and asked at their bridge address, as ``bench.running`` measures buildpack apps).

    Returns:
        ``dockerfile.start.fence``, ``dockerfile.start.docker`` (seconds).
    """
    import threading

    from bench.running import _docker_run_found_by_label, _first_200_by_label
    from fence import labels

    assert node.client is not None
    view = node.client.push(source=str(SAMPLE), app=START_APP, buildpacks=(), env_pairs=(), instances=0,
                            mem=None, on_line=lambda _: None)
    droplet = next(d for d in node.client.droplets(START_APP) if d.id == view.droplet)
    fence_runs, plain, own = [], [], []
    own_net = f"bench-own-{uuid.uuid4().hex[:8]}"
    for rep in range(reps):
        found: list[float] = []
        wanted = [f"{labels.NODE}={node.home.node_id}", f"{labels.APP}={START_APP}", f"{labels.INSTANCE}=0"]
        finder = threading.Thread(target=lambda: found.append(_first_200_by_label(wanted)), daemon=True)
        started = time.perf_counter()
        finder.start()
        node.client.scale(START_APP, 1, on_line=lambda _: None)
        finder.join(timeout=180)
        if not found:
            raise RuntimeError(f"{START_APP}: its first instance never answered 200")
        fence_runs.append(found[0] - started)
        node.client.scale(START_APP, 0, on_line=lambda _: None)
        seconds, container = _docker_run_found_by_label(docker, droplet.image_id)
        plain.append(seconds)
        docker.remove(container)
        # The same, on a bridge network of its own, as every fence app has (issue 13's isolation):
        # joining a user-defined network costs the engine's start its embedded-DNS setup.
        subprocess.run(["docker", "network", "create", own_net], capture_output=True, check=True)
        try:
            seconds, container = _docker_run_found_by_label(docker, droplet.image_id, network=own_net)
            own.append(seconds)
            docker.remove(container)
        finally:
            subprocess.run(["docker", "network", "rm", own_net], capture_output=True)
        say(f"       rep {rep + 1}: image app first instance {fence_runs[-1]:.3f} s, docker run {plain[-1]:.3f} s, "
            f"on its own network {own[-1]:.3f} s")
    node.client.delete(START_APP)
    return {"dockerfile.start.fence": summary(fence_runs, "s"), "dockerfile.start.docker": summary(plain, "s"),
            "dockerfile.start.docker_own_net": summary(own, "s")}
