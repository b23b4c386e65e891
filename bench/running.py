"""Running figures: instance start, 50 instances at once, daemon RSS, and the apps API's latency."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker as docker_sdk
import psutil

from bench.baseline import BENCH_LABEL, Docker, running_context
from bench.node import EXAMPLES, BenchNode, free_port, wait_for_200
from bench.stats import Summary, summary
from fence import labels
from fence.models import AppRecord
from fence.running.starter import SCRIPT_ENV
from fence.store import StateStore

APP = "bench-start"
Say = Callable[[str], None]


@dataclass(frozen=True)
class RunningResults:
    """What the running sections measured.

    Attributes:
        figures: figure name → summary.
        droplet_bytes: the python droplet's size.
        baseline_image: the image the docker-run baselines used.
        droplet: the id of the last droplet pushed.
    """

    figures: dict[str, Summary]
    droplet_bytes: int
    baseline_image: str
    droplet: str


def _timed_scale(node: BenchNode, instances: int) -> tuple[float, float, float]:
    """Scale APP to ``instances`` (one more than it runs); returns seconds from the API call to the
    new instance's first 200 (asked directly at its address, as its health check does), to the
    first 200 naming it through the router, and to the API call's return."""
    assert node.client is not None
    index = instances - 1
    direct: list[float] = []
    routed: list[float] = []
    pollers = [
        threading.Thread(target=lambda: direct.append(_first_200_by_label(
            [f"{labels.NODE}={node.home.node_id}", f"{labels.APP}={APP}", f"{labels.INSTANCE}={index}"])),
            daemon=True),
        threading.Thread(target=lambda: routed.append(wait_for_200(
            node.router_port, host=f"{APP}.localhost", containing=f"(instance {index})")), daemon=True),
    ]
    started = time.perf_counter()
    for poller in pollers:
        poller.start()
    node.client.scale(APP, instances, on_line=lambda line: None)
    returned = time.perf_counter() - started
    for poller in pollers:
        poller.join(timeout=180)
    if not direct or not routed:
        raise RuntimeError(f"scaling {APP} to {instances}: instance {index} never answered 200")
    return direct[0] - started, routed[0] - started, returned


def _first_200_by_label(wanted: list[str], timeout: float = 120.0) -> float:
    """Find a running container by its labels (every 5 ms) and GET its bridge address until 200
    (the observer of a fence instance, whose host port is only known once it runs, and of the
    docker-run baseline alike)."""
    api = docker_sdk.APIClient(version="auto")
    filters = {"label": wanted, "status": ["running"]}
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            for summary in api.containers(filters=filters):
                networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
                address = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
                if address:
                    return wait_for_200(8080, address=address, timeout=deadline - time.perf_counter())
            time.sleep(0.005)
    finally:
        api.close()
    raise TimeoutError(f"no container labelled {', '.join(wanted)} ran")


def _push(node: BenchNode, instances: int) -> tuple[str, float]:
    """Push python-hello as APP; returns the droplet id and the seconds the push said its droplet
    image took (0.0 when it was already there)."""
    assert node.client is not None
    lines: list[str] = []
    view = node.client.push(source=str(EXAMPLES / "python-hello"), app=APP, buildpacks=(), env_pairs=(),
                            instances=instances, mem=None, on_line=lines.append, force=True)
    assert view.droplet
    made = [re.search(r"Droplet image .* in ([0-9.]+) s", line) for line in lines]
    return view.droplet, next((float(m.group(1)) for m in made if m), 0.0)


def push_sample(node: BenchNode) -> str:
    """A python-hello droplet on the node (for the API figure when staging was not measured)."""
    return _push(node, 0)[0]


def _baseline_image(node: BenchNode, docker: Docker, droplet: str, host_work: Path) -> str:
    """An image holding the same droplet and start script as fence's instance 0."""
    container = next(iter(_app_containers(node, APP)))
    env = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", container],
                                    capture_output=True, check=True, text=True).stdout)
    prefix = f"{SCRIPT_ENV}="
    script = next(e[len(prefix):] for e in env if e.startswith(prefix)).encode()
    context = running_context(host_work / "ctx-run", host_droplet=node.root / "droplets" / f"{droplet}.tgz",
                              start_script=script)
    _, image = docker.build(context, tag=f"fence-bench/run:{docker.run_id}", cache=True)
    return image


def _app_containers(node: BenchNode, app: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label={labels.NODE}={node.home.node_id}",
                          "--filter", f"label={labels.APP}={app}"], capture_output=True, text=True)
    return out.stdout.split()


def _docker_run_found_by_label(docker: Docker, image: str, network: str | None = None) -> tuple[float, str]:
    """``docker run`` of the baseline image, observed as fence's instances are: from the call,
    found by a label of its own and asked at its bridge address until 200 (``network``: on that
    network instead of the engine's default bridge)."""
    probe = f"{BENCH_LABEL}.probe={uuid.uuid4().hex}"
    found: list[float] = []
    finder = threading.Thread(target=lambda: found.append(_first_200_by_label([probe])), daemon=True)
    started = time.perf_counter()
    finder.start()
    container = docker.run(image, host_port=free_port(), label=probe, network=network)
    finder.join(timeout=120)
    if not found:
        raise RuntimeError(f"docker run {image}: never answered 200")
    return found[0] - started, container


def _docker_run_to_200(docker: Docker, image: str) -> tuple[float, str]:
    port = free_port()
    started = time.perf_counter()
    container = docker.run(image, host_port=port)
    return wait_for_200(port) - started, container


def measure_start(node: BenchNode, docker: Docker, *, reps: int, host_work: Path, say: Say) -> RunningResults:
    """Instance start: per rep a fresh droplet (push with 0 instances), then scale 0→1 (the first
    instance of that droplet on the node) and 1→2 (a further one), each from the API call to the
    new instance's first 200 (and, beside it, through the router and until the API returns);
    the baseline is ``docker run`` of an image holding the same droplet and start script, to its
    first 200.
    """
    figures: dict[str, list[float]] = {}
    image = ""
    droplet_bytes = 0
    for rep in range(reps):
        droplet, made = _push(node, 0)
        figures.setdefault("droplet.image", []).append(made)
        droplet_bytes = (node.root / "droplets" / f"{droplet}.tgz").stat().st_size
        first, first_routed, first_api = _timed_scale(node, 1)
        further, further_routed, further_api = _timed_scale(node, 2)
        if not image:
            image = _baseline_image(node, docker, droplet, host_work)
            fence_rw = [docker.size_rw(c) for c in _app_containers(node, APP)]
            figures["droplet.copied.fence"] = [float(min(fence_rw))]
        runs, by_port = [], []
        for _ in range(2):
            seconds, container = _docker_run_found_by_label(docker, image)
            runs.append(seconds)
            if "droplet.copied.docker" not in figures:
                figures["droplet.copied.docker"] = [float(docker.size_rw(container))]
            docker.remove(container)
            seconds, container = _docker_run_to_200(docker, image)
            by_port.append(seconds)
            docker.remove(container)
        for key, value in (("start.first.fence", first), ("start.further.fence", further),
                           ("start.first.fence_routed", first_routed), ("start.further.fence_routed", further_routed),
                           ("start.first.fence_api", first_api), ("start.further.fence_api", further_api)):
            figures.setdefault(key, []).append(value)
        figures.setdefault("start.docker", []).extend(runs)
        figures.setdefault("start.docker_port", []).extend(by_port)
        say(f"  start #{rep + 1}: droplet image made in {made:.2f} s at push; fence first {first:.3f} s (routed {first_routed:.3f} s, API returned "
            f"{first_api:.3f} s), further {further:.3f} s ({further_routed:.3f} s, {further_api:.3f} s); "
            f"docker run {runs[0]:.3f} s, {runs[1]:.3f} s (its published port polled from the start: "
            f"{by_port[0]:.3f} s, {by_port[1]:.3f} s)")
        _scale_quietly(node, 0)
    units = {"droplet.copied.fence": "B", "droplet.copied.docker": "B"}
    return RunningResults(figures={k: summary(v, units.get(k, "s")) for k, v in figures.items()},
                          droplet_bytes=droplet_bytes, baseline_image=image, droplet=droplet)


def _scale_quietly(node: BenchNode, instances: int) -> None:
    assert node.client is not None
    node.client.scale(APP, instances, on_line=lambda line: None)


def measure_scale(node: BenchNode, docker: Docker, *, image: str, count: int, reps: int,
                  concurrency: int, say: Say) -> dict[str, Summary]:
    """``count`` instances of one app at once (scale 0→count, until the API says all run and are
    routed) against ``count`` ``docker run``s of the baseline image, ``concurrency`` at a time,
    each until it answers 200; the daemon's RSS with them running."""
    assert node.client is not None and node.proc is not None
    daemon = psutil.Process(node.proc.pid)
    figures: dict[str, list[float]] = {"rss.idle": [daemon.memory_info().rss / 1e6]}
    for rep in range(reps):
        started = time.perf_counter()
        _scale_quietly(node, count)
        fence = time.perf_counter() - started
        running = len(_app_containers(node, APP))
        figures.setdefault("rss.running", []).append(daemon.memory_info().rss / 1e6)
        _scale_quietly(node, 0)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(lambda _: _docker_run_to_200(docker, image), range(count)))
        plain = time.perf_counter() - started
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(lambda result: docker.remove(result[1]), results))
        figures.setdefault("scale.fence", []).append(fence)
        figures.setdefault("scale.docker", []).append(plain)
        say(f"  scale #{rep + 1}: fence {count} instances {fence:.2f} s ({running} running), "
            f"{count} docker runs {plain:.2f} s; daemon RSS {figures['rss.running'][-1]:.0f} MB")
    units = {"rss.idle": "MB", "rss.running": "MB"}
    return {k: summary(v, units.get(k, "s")) for k, v in figures.items()}


def measure_api(node: BenchNode, *, apps: int, calls: int, droplet: str, say: Say) -> dict[str, Summary]:
    """Latency of the apps list (``fence apps --json``'s API call, decoded as the CLI does) with
    ``apps`` apps in the store, written straight into the node's StateStore; beside it the
    engine's own container list (``GET /containers/json``)."""
    assert node.client is not None
    store = StateStore(host_db=node.home.host_db)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for index in range(apps):
        name = f"bench-api-{index:03d}"
        store.put_app(AppRecord(name=name, instances=1, memory_mib=128, env={"K": "v"}, started=False,
                                release=None, health_timeout=None, urls=(), created_at=now))
        store.add_release(name, droplet, now, "bench")
    listed = len(node.client.apps())
    fence = []
    for _ in range(calls + 10):
        started = time.perf_counter()
        node.client.apps()
        fence.append((time.perf_counter() - started) * 1000)
    engine = []
    api = docker_sdk.APIClient(version="auto")
    try:
        for _ in range(calls + 10):
            started = time.perf_counter()
            api.containers(all=True)
            engine.append((time.perf_counter() - started) * 1000)
    finally:
        api.close()
    cli = []
    for _ in range(5):
        started = time.perf_counter()
        done = node.cli("fence", "apps", "--json")
        cli.append((time.perf_counter() - started) * 1000)
        assert done.returncode == 0, done.stderr
    result = {"api.fence": summary(fence[10:], "ms"), "api.docker": summary(engine[10:], "ms"),
              "api.cli": summary(cli, "ms")}
    say(f"  apps API with {listed} apps: p50 {result['api.fence'].percentile(50):.1f} ms, "
        f"p99 {result['api.fence'].percentile(99):.1f} ms; engine list p99 "
        f"{result['api.docker'].percentile(99):.1f} ms; `fence apps --json` {result['api.cli'].median:.0f} ms")
    for index in range(apps):
        store.delete_app(f"bench-api-{index:03d}")
    return result
