"""Usage figures (issue 18): `fence stats` of 50 instances as a CLI process, and the daemon's CPU with them idle and scraped."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from bench.node import EXAMPLES, BenchNode
from bench.stats import Summary, summary

Say = Callable[[str], None]
APP = "bench-stats"
SCRAPE_EVERY = 5.0  # seconds between /metrics scrapes while the daemon's CPU is measured (Prometheus: 15 s)


def measure(node: BenchNode, *, count: int, reps: int, idle_seconds: float, say: Say) -> dict[str, Summary]:
    """``count`` small instances (procfile-hello, 32 MiB each); then the daemon's CPU time over
    ``idle_seconds`` while nothing happens but a /metrics scrape every 5 s, and ``reps`` runs of
    ``fence stats APP --json`` as whole CLI processes (the first one included) beside the CLI's
    floor, ``fence --version``."""
    assert node.client is not None and node.proc is not None
    started = time.perf_counter()
    node.client.push(source=str(EXAMPLES / "procfile-hello"), app=APP, buildpacks=(), env_pairs=(),
                     instances=count, mem="32M", on_line=lambda _: None, force=False)
    say(f"  {count} instances of {APP} healthy in {time.perf_counter() - started:.1f} s")
    # First the daemon's CPU with the instances idle and scraped (nobody has asked `fence stats`
    # yet, so its sampler sleeps, as on a node that is only monitored).
    daemon = psutil.Process(node.proc.pid)
    time.sleep(3)  # the push's last work is done
    quiet = _daemon_cpu(daemon, idle_seconds, scrape=None)
    scraped = _daemon_cpu(daemon, idle_seconds, scrape=node.client.metrics_text)
    figures = {"usage.daemon_cpu": summary([scraped], "%"), "usage.daemon_cpu_quiet": summary([quiet], "%")}
    say(f"  daemon CPU with {count} instances idle: {scraped:.2f} % of one core with /metrics scraped every "
        f"{SCRAPE_EVERY:.0f} s, {quiet:.2f} % unscraped")
    runs: list[float] = []
    floor: list[float] = []
    for _ in range(reps):
        # Every run counts, the first too (the first request after a quiet minute: it must not
        # wait for a second CPU sample).
        began_run = time.perf_counter()
        done = node.cli("fence", "stats", APP, "--json")
        runs.append((time.perf_counter() - began_run) * 1000)
        if done.returncode != 0:
            raise RuntimeError(f"fence stats failed: {done.stderr.strip()}")
        began_run = time.perf_counter()
        node.cli("fence", "--version")
        floor.append((time.perf_counter() - began_run) * 1000)
    figures["usage.stats_cli"] = summary(runs, "ms")
    figures["usage.cli_floor"] = summary(floor, "ms")
    say(f"  `fence stats` of {count} instances: p50 {figures['usage.stats_cli'].percentile(50):.0f} ms, "
        f"p99 {figures['usage.stats_cli'].percentile(99):.0f} ms (`fence --version`: p50 "
        f"{figures['usage.cli_floor'].percentile(50):.0f} ms)")
    node.client.scale(APP, 0, on_line=lambda _: None)
    return figures


def _daemon_cpu(daemon: psutil.Process, seconds: float, *, scrape: Callable[[], object] | None) -> float:
    """The daemon's CPU time over ``seconds``, in % of one core (``scrape`` called every 5 s)."""
    before, began = daemon.cpu_times(), time.monotonic()
    while time.monotonic() - began < seconds:
        if scrape is not None:
            scrape()
        time.sleep(min(SCRAPE_EVERY, max(0.0, seconds - (time.monotonic() - began))))
    after, elapsed = daemon.cpu_times(), time.monotonic() - began
    return 100 * ((after.user - before.user) + (after.system - before.system)) / elapsed
