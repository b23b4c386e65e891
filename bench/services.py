"""Backing services beside raw Docker (issue 16): create → accepting connections, and a backup of a
100 MB PostgreSQL database beside pg_dump run by hand in the container."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable

from bench.node import BenchNode
from bench.stats import Summary, summary

Say = Callable[[str], None]
IMAGE = "fence/service-postgresql:bookworm"
_PG = "/usr/lib/postgresql/15/bin"
# 100 000 rows of 30 random md5s (~ 1 kB each): about 100 MB on disk, and a dump that does not
# compress to nothing.
_FILL = ("CREATE TABLE big AS SELECT t.n AS id, (SELECT string_agg(md5(random()::text || t.n || s.k), '') "
         "FROM generate_series(1, 30) AS s(k)) AS body FROM generate_series(1, 100000) AS t(n);")


def _docker(*args: str, check: bool = True, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], text=True, stdout=stdout, stderr=subprocess.PIPE, check=check)


def _service_container(node: BenchNode, name: str) -> str:
    return _docker("ps", "-q", "--filter", f"label=fence.node={node.home.node_id}",
                   "--filter", f"label=fence.service={name}").stdout.strip()


def _docker_run_to_ready(run_id: str, n: int, host_work: Path) -> float:
    """`docker run` of the service image with fence's options, until pg_isready answers."""
    name, volume = f"bench-{run_id}-pg{n}", f"bench-{run_id}-pgdata{n}"
    host_creds = host_work / "creds"
    host_creds.write_text("SVC_DB=bench\nSVC_USER=bench\nSVC_PASSWORD=benchbenchbench\n")
    began = time.monotonic()
    _docker("volume", "create", "--label", f"fence-bench={run_id}", volume)
    _docker("create", "--name", name, "--label", f"fence-bench={run_id}", "--user", "1001:1001",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--init", "--memory", "256m",
            "--memory-swap", "256m", "--pids-limit", "512", "--network", "none",
            "-v", f"{volume}:/var/lib/fence-service/data", IMAGE, "/usr/local/lib/fence-service/run")
    _docker("cp", str(host_creds), f"{name}:/etc/fence-service/credentials")
    _docker("start", name)
    while _docker("exec", name, f"{_PG}/pg_isready", "-q", "-h", "/tmp", "-U", "fence", check=False).returncode:
        time.sleep(0.05)
    took = time.monotonic() - began
    _docker("rm", "-f", name)
    _docker("volume", "rm", volume)
    return took


def measure(node: BenchNode, *, reps: int, run_id: str, host_work: Path, say: Say) -> dict[str, Summary]:
    """The figures ``services.create.*`` and ``services.backup.*``; nothing of them is left behind
    (the services' volumes and networks, the baseline's containers and volumes)."""
    try:
        return _measure(node, reps=reps, run_id=run_id, host_work=host_work, say=say)
    finally:
        node_id = node.home.node_id
        mine = ["--filter", f"label=fence-bench={run_id}"]
        services = ["--filter", f"label=fence.node={node_id}", "--filter", "label=fence.role=service"]
        for ls, rm, filters in ((["ps", "-aq"], ["rm", "-f"], mine), (["ps", "-aq"], ["rm", "-f"], services),
                                (["network", "ls", "-q"], ["network", "rm"], services),
                                (["volume", "ls", "-q"], ["volume", "rm", "-f"], mine),
                                (["volume", "ls", "-q"], ["volume", "rm", "-f"], ["--filter", f"label=fence.node={node_id}"])):
            found = _docker(*ls, *filters, check=False).stdout.split()
            if found:
                _docker(*rm, *found, check=False)


def _measure(node: BenchNode, *, reps: int, run_id: str, host_work: Path, say: Say) -> dict[str, Summary]:
    fence_create, docker_create = [], []
    for n in range(reps):
        began = time.monotonic()
        done = node.cli("fence", "service", "create", "postgresql", f"b{n}")
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        fence_create.append(time.monotonic() - began)
        node.cli("fence", "service", "delete", f"b{n}", "--delete-data")
        docker_create.append(_docker_run_to_ready(run_id, n, host_work))
        say(f"       create → accepting: fence {fence_create[-1]:.2f} s, docker run {docker_create[-1]:.2f} s")
    figures = {"services.create.fence": summary(fence_create, "s"),
               "services.create.docker": summary(docker_create, "s")}
    done = node.cli("fence", "service", "create", "postgresql", "big")
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    container = _service_container(node, "big")
    database = json.loads((node.home.host_service_credentials("big")).read_text())["database"]
    _docker("exec", container, f"{_PG}/psql", "-q", "-h", "/tmp", "-U", "fence", "-d", database, "-c", _FILL)
    size = _docker("exec", container, f"{_PG}/psql", "-tA", "-h", "/tmp", "-U", "fence", "-d", database, "-c",
                   f"SELECT pg_database_size('{database}')").stdout.strip()
    say(f"       database of {int(size) / 1e6:.0f} MB")
    fence_backup, hand_backup = [], []
    for _ in range(reps):
        began = time.monotonic()
        done = node.cli("fence", "service", "backup", "big")
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        fence_backup.append(time.monotonic() - began)
        host_dump = host_work / "hand.dump"
        began = time.monotonic()
        with host_dump.open("w") as out:
            _docker("exec", container, f"{_PG}/pg_dump", "-h", "/tmp", "-U", "fence", "-Fc", database, stdout=out)
        hand_backup.append(time.monotonic() - began)
        say(f"       backup: fence {fence_backup[-1]:.2f} s, pg_dump by hand {hand_backup[-1]:.2f} s "
            f"({host_dump.stat().st_size / 1e6:.0f} MB dump)")
        host_dump.unlink()
    node.cli("fence", "service", "delete", "big", "--delete-data")
    figures["services.backup.fence"] = summary(fence_backup, "s")
    figures["services.backup.docker"] = summary(hand_backup, "s")
    return figures
