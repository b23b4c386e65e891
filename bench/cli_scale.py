"""The figure a user feels: `fence scale APP N+1` as a whole CLI process beside `docker run -d` to its first 200."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from bench.baseline import Docker
from bench.node import BenchNode
from bench.running import APP, _app_containers, _baseline_image, _docker_run_to_200, _push
from bench.stats import Summary, summary

Say = Callable[[str], None]


def measure(node: BenchNode, docker: Docker, *, reps: int, host_work: Path, say: Say) -> dict[str, Summary]:
    """Per rep: ``fence scale APP 2`` (APP runs 1 instance) as a CLI process, from its start to
    its exit (it returns once the new instance is healthy and routed; interpreter start and
    imports included), then back to 1 and until the stopped container is gone; beside it
    ``docker run -d -p`` of an image holding the same droplet and start script, from the call to
    its first 200 on the published port. Also the CLI process's floor (``fence --version``)."""
    droplet, _ = _push(node, 1)
    image = _baseline_image(node, docker, droplet, host_work)
    figures: dict[str, list[float]] = {}
    for rep in range(reps + 1):  # the first round warms the page cache and is not counted
        started = time.perf_counter()
        done = node.cli("fence", "scale", APP, "2")
        fence = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"fence scale {APP} 2 failed: {done.stderr.strip()}")
        started = time.perf_counter()
        node.cli("fence", "--version")
        floor = time.perf_counter() - started
        done = node.cli("fence", "scale", APP, "1")
        if done.returncode != 0:
            raise RuntimeError(f"fence scale {APP} 1 failed: {done.stderr.strip()}")
        _wait_for_containers(node, 1)
        plain, container = _docker_run_to_200(docker, image)
        docker.remove(container)
        if rep == 0:
            continue
        figures.setdefault("cli_scale.fence", []).append(fence)
        figures.setdefault("cli_scale.docker", []).append(plain)
        figures.setdefault("cli_scale.floor", []).append(floor)
        say(f"  scale #{rep}: `fence scale {APP} 2` {fence:.3f} s (`fence --version` {floor:.3f} s); "
            f"docker run -d to its first 200 {plain:.3f} s")
    node.cli("fence", "scale", APP, "0")
    result = {k: summary(v, "s") for k, v in figures.items()}
    fence_s, docker_s = result["cli_scale.fence"].median, result["cli_scale.docker"].median
    say(f"  `fence scale {APP} 2` {fence_s:.3f} s, docker run -d to its first 200 {docker_s:.3f} s: "
        f"{fence_s / docker_s:.2f}× (medians of {reps}, load {os.getloadavg()[0]:.1f})")
    return result


def _wait_for_containers(node: BenchNode, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(_app_containers(node, APP)) > count and time.monotonic() < deadline:
        time.sleep(0.1)
