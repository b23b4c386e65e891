"""The CLI figure a user feels: `fence apps --json` as a whole process, beside `python -c pass` (same interpreter)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from typing import Callable

from bench.node import BenchNode
from bench.stats import Summary, summary
from fence.models import AppRecord
from fence.store import StateStore

Say = Callable[[str], None]
APPS = 5
WARMUP = 3


def measure_cli(node: BenchNode, *, reps: int, say: Say) -> dict[str, Summary]:
    """Wall time of ``fence apps --json`` (interpreter start, imports, the API call, printing) with
    ``APPS`` stopped apps in the store, and of ``python -c pass``, runs interleaved so load on the
    machine falls on both alike.

    Bytecode caching is allowed for these runs (``PYTHONDONTWRITEBYTECODE`` dropped) and the first
    runs are not counted: an installed fence has compiled modules, as a user's does.
    """
    store = StateStore(host_db=node.home.host_db)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    names = [f"bench-cli-{index}" for index in range(APPS)]
    for name in names:
        store.put_app(AppRecord(name=name, instances=1, memory_mib=128, env={"K": "v"}, started=False,
                                release=None, health_timeout=None, urls=(), created_at=now))
    env = {k: v for k, v in node.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = {"cli.fence": [sys.executable, "-m", "fence", "apps", "--json"],
            "cli.python": [sys.executable, "-c", "pass"]}
    samples: dict[str, list[float]] = {key: [] for key in runs}
    try:
        for rep in range(WARMUP + reps):
            for key, argv in runs.items():
                started = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                                      stdin=subprocess.DEVNULL)
                took = (time.perf_counter() - started) * 1000
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv[1:])} failed: {done.stderr.strip()}")
                if rep >= WARMUP:
                    samples[key].append(took)
    finally:
        for name in names:
            store.delete_app(name)
        store.close()
    result = {key: summary(values, "ms") for key, values in samples.items()}
    say(f"  `fence apps --json` {result['cli.fence'].median:.0f} ms, `python -c pass` "
        f"{result['cli.python'].median:.0f} ms (medians of {reps}, load {os.getloadavg()[0]:.1f})")
    return result
