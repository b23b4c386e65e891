"""What a test left running: fence daemons, nginx masters, extra engines (their dockerd, containerd,
bridges and folders), fence-labelled containers and the registries fence runs.

The suite snapshots them before the first test and after every test; whatever is still there at
the end of the session, was not there at its start AND belongs to this session (its FENCE_HOME,
nginx prefix, engine data root or node id lies under the session's temporary folder) is a leak,
reported with the test after which it first appeared (the test that started it, or the module whose
fixture did), then stopped. What other sessions run on the same machine (a `make demo` node,
another checkout's test run) is never touched.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

NODE_LABEL = "fence.node"


@dataclass(frozen=True, order=True)
class Leftover:
    """One thing a test may have left behind.

    Attributes:
        kind: ``daemon``, ``nginx``, ``engine`` (an extra dockerd, or the containerd or shims it
            started), ``registry``, ``bridge`` (an extra engine's), ``engine-root`` (an extra
            engine's folder), ``container`` or ``volume`` (a fence-labelled one).
        ident: its pid, container id, volume name, interface name or folder.
        what: a short description for the report.
        owner: the folder (FENCE_HOME, nginx prefix, engine data root) or node id it belongs to.
    """

    kind: str
    ident: str
    what: str = field(compare=False)
    owner: str = field(default="", compare=False)


def _process_kind(cmdline: list[str]) -> str | None:
    """What kind of fence-started process a command line is, if any."""
    text = " ".join(cmdline)
    if text.startswith("nginx: master process"):
        return "nginx"
    if any(part.endswith(("dockerd", "containerd", "containerd-shim-runc-v2")) for part in cmdline[:1]):
        return "engine"
    if any(part.endswith("docker-registry") for part in cmdline[:1]) and "serve" in cmdline:
        return "registry"
    if "serve" in cmdline and any(part == "fence" or part.endswith("/fence") for part in cmdline):
        return "daemon"
    return None


def _flag(cmdline: list[str], *names: str) -> str:
    """The value of ``--name VALUE``/``--name=VALUE``/``-p VALUE`` in a command line ("" if absent)."""
    words = " ".join(cmdline).split()
    for position, word in enumerate(words):
        for name in names:
            if word == name and position + 1 < len(words):
                return words[position + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return ""


def _owner(proc: psutil.Process, kind: str, cmdline: list[str]) -> str:
    if kind == "nginx":
        return _flag(cmdline, "-p")
    if kind == "engine":
        return _flag(cmdline, "--data-root", "--exec-root", "-g", "--config", "-address")
    if kind == "registry":
        return cmdline[-1] if cmdline else ""
    try:
        return proc.environ().get("FENCE_HOME", "")
    except (psutil.Error, OSError):
        return ""


def running_processes() -> set[Leftover]:
    """Fence daemons, nginx masters and engines running now."""
    found: set[Leftover] = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        kind = _process_kind(cmdline)
        if kind and proc.info["pid"] != os.getpid():
            found.add(Leftover(kind, str(proc.info["pid"]), " ".join(cmdline)[:160], _owner(proc, kind, cmdline)))
    return found


# Extra engines of the cluster tier (tests/cluster/engines.py) mark their bridges with this alias
# prefix and link their folders here.
ENGINE_BRIDGE_ALIAS = "fence-test-engine"
ENGINE_ROOTS = Path("/run/fence-test-engines/roots")


def engine_bridges() -> set[Leftover]:
    """Bridges an extra test engine made (their alias names the engine's folder)."""
    found: set[Leftover] = set()
    for host_alias in Path("/sys/class/net").glob("*/ifalias"):
        try:
            alias = host_alias.read_text().strip()
        except OSError:
            continue
        if alias.startswith(ENGINE_BRIDGE_ALIAS + " "):
            name = host_alias.parent.name
            found.add(Leftover("bridge", name, f"bridge {name}", alias.split(" ", 1)[1]))
    return found


def engine_roots() -> set[Leftover]:
    """Folders of extra test engines that still exist."""
    found: set[Leftover] = set()
    for link in ENGINE_ROOTS.glob("*") if ENGINE_ROOTS.is_dir() else ():
        try:
            target = Path(os.readlink(link))
        except OSError:
            continue
        if target.exists():
            found.add(Leftover("engine-root", str(target), f"engine folder {target}", str(target)))
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
                     f"/{item.get('Labels', {}).get('fence.app', '-')}",
                     item.get("Labels", {}).get(NODE_LABEL, "")) for item in listed}


def fence_volumes() -> set[Leftover]:
    """Volumes carrying a fence node label (service data, issue 16; none when no engine answers)."""
    if not os.path.exists("/var/run/docker.sock"):
        return set()
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            listed = (client.api.volumes(filters={"label": NODE_LABEL}) or {}).get("Volumes") or []
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - an engine that does not answer has no volumes to leak
        return set()
    return {Leftover("volume", item["Name"], f"volume of service {(item.get('Labels') or {}).get('fence.service', '?')}",
                     (item.get("Labels") or {}).get(NODE_LABEL, "")) for item in listed}


def node_ids_under(host_root: Path) -> set[str]:
    """The ids of the fence nodes whose FENCE_HOME lies under ``host_root``."""
    found: set[str] = set()
    for host_file in host_root.glob("**/node-id"):
        try:
            found.add(host_file.read_text().strip())
        except OSError:
            pass
    return found


def in_scope(item: Leftover, host_root: Path, node_ids: set[str]) -> bool:
    """Whether a leftover belongs to the session whose temporary folder is ``host_root``."""
    if item.kind in ("container", "volume"):
        return item.owner in node_ids
    if not item.owner:
        return False
    try:
        return Path(item.owner).resolve().is_relative_to(host_root.resolve())
    except (OSError, ValueError):
        return False


@dataclass
class LeakWatch:
    """Attributes what is running to the test after which it first appeared.

    Attributes:
        snapshot: lists what is running now (processes and containers).
    """

    snapshot: Callable[[], set[Leftover]] = lambda: (running_processes() | fence_containers() | fence_volumes()
                                                     | engine_bridges() | engine_roots())
    baseline: set[Leftover] = field(default_factory=set)
    first_seen: dict[Leftover, str] = field(default_factory=dict)

    def start(self) -> None:
        """Remember what was running before the suite (a `make demo` node, the main engine)."""
        self.baseline = self.snapshot()

    def after(self, test: str) -> None:
        """Note what appeared during (or before the end of) ``test``."""
        for item in self.snapshot() - self.baseline:
            self.first_seen.setdefault(item, test)

    def leaks(self, scope: Path | None = None) -> dict[Leftover, str]:
        """What is running now that was not before the suite, with the test that left it.

        Args:
            scope: the session's temporary folder: only what belongs under it counts (``None``:
                everything new counts).
        """
        new = sorted(self.snapshot() - self.baseline)
        if scope is not None:
            node_ids = node_ids_under(scope)
            new = [item for item in new if in_scope(item, scope, node_ids)]
        return {item: self.first_seen.get(item, "(before the first test ended)") for item in new}

    @staticmethod
    def stop(item: Leftover) -> None:
        """Stop one leftover (TERM, then KILL for processes; ``rm -f`` for containers)."""
        if item.kind == "container":
            import subprocess

            subprocess.run(["docker", "rm", "-f", item.ident], capture_output=True, timeout=60)
            return
        if item.kind == "volume":
            import subprocess

            subprocess.run(["docker", "volume", "rm", "-f", item.ident], capture_output=True, timeout=60)
            return
        if item.kind in ("bridge", "engine-root"):
            from tests.cluster.engines import kill_processes_of, remove_leftovers

            if item.kind == "bridge":
                import subprocess

                subprocess.run(["ip", "link", "del", item.ident], capture_output=True, timeout=60)
                return
            kill_processes_of(Path(item.ident))
            remove_leftovers(name=Path(item.ident).name, host_dir=Path(item.ident), bridge=None)
            return
        try:
            proc = psutil.Process(int(item.ident))
            proc.send_signal(signal.SIGTERM if item.kind != "nginx" else signal.SIGQUIT)
            proc.wait(timeout=15)
        except psutil.TimeoutExpired:
            psutil.Process(int(item.ident)).kill()
        except psutil.NoSuchProcess:
            pass
