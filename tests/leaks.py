"""What a test left running: fence daemons, nginx masters, extra engines and fence-labelled containers.

The suite snapshots them before the first test and after every test; whatever is still there at
the end of the session and was not there at its start is a leak, reported with the test after
which it first appeared (the test that started it, or the module whose fixture did), then stopped
so the machine is left as it was found.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Callable

import psutil

NODE_LABEL = "fence.node"


@dataclass(frozen=True, order=True)
class Leftover:
    """One thing a test may have left behind.

    Attributes:
        kind: ``daemon``, ``nginx``, ``engine`` or ``container``.
        ident: its pid or container id.
        what: a short description for the report.
    """

    kind: str
    ident: str
    what: str = field(compare=False)


def _process_kind(cmdline: list[str]) -> str | None:
    """What kind of fence-started process a command line is, if any."""
    text = " ".join(cmdline)
    if text.startswith("nginx: master process"):
        return "nginx"
    if any(part.endswith("dockerd") for part in cmdline[:1]):
        return "engine"
    if "serve" in cmdline and any(part == "fence" or part.endswith("/fence") for part in cmdline):
        return "daemon"
    return None


def running_processes() -> set[Leftover]:
    """Fence daemons, nginx masters and engines running now."""
    found: set[Leftover] = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        kind = _process_kind(cmdline)
        if kind and proc.info["pid"] != os.getpid():
            found.add(Leftover(kind, str(proc.info["pid"]), " ".join(cmdline)[:160]))
    return found


def fence_containers() -> set[Leftover]:
    """Containers carrying a fence node label on the local engine (none when no engine answers)."""
    if not os.path.exists("/var/run/docker.sock"):
        return set()
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            listed = client.api.containers(all=True, filters={"label": NODE_LABEL})
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - an engine that does not answer has no containers to leak
        return set()
    return {Leftover("container", item["Id"][:12],
                     f"{item.get('Image', '')} labels {item.get('Labels', {}).get('fence.role', '?')}"
                     f"/{item.get('Labels', {}).get('fence.app', '-')}") for item in listed}


@dataclass
class LeakWatch:
    """Attributes what is running to the test after which it first appeared.

    Attributes:
        snapshot: lists what is running now (processes and containers).
    """

    snapshot: Callable[[], set[Leftover]] = lambda: running_processes() | fence_containers()
    baseline: set[Leftover] = field(default_factory=set)
    first_seen: dict[Leftover, str] = field(default_factory=dict)

    def start(self) -> None:
        """Remember what was running before the suite (a `make demo` node, the main engine)."""
        self.baseline = self.snapshot()

    def after(self, test: str) -> None:
        """Note what appeared during (or before the end of) ``test``."""
        for item in self.snapshot() - self.baseline:
            self.first_seen.setdefault(item, test)

    def leaks(self) -> dict[Leftover, str]:
        """What is running now that was not before the suite, with the test that left it."""
        return {item: self.first_seen.get(item, "(before the first test ended)")
                for item in sorted(self.snapshot() - self.baseline)}

    @staticmethod
    def stop(item: Leftover) -> None:
        """Stop one leftover (TERM, then KILL for processes; ``rm -f`` for containers)."""
        if item.kind == "container":
            import subprocess

            subprocess.run(["docker", "rm", "-f", item.ident], capture_output=True, timeout=60)
            return
        try:
            proc = psutil.Process(int(item.ident))
            proc.send_signal(signal.SIGTERM if item.kind != "nginx" else signal.SIGQUIT)
            proc.wait(timeout=15)
        except psutil.TimeoutExpired:
            psutil.Process(int(item.ident)).kill()
        except psutil.NoSuchProcess:
            pass
