"""The node's own resources (CPU, memory, disks) read with psutil, and the warnings they call for."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import psutil

from fence import labels
from fence.models import AppUid, ContainerInfo, DiskUsage, EngineInfo, InstanceView, NodeInfo

DISK_WARN_PERCENT = 90.0
CRASH_LOOP_RESTARTS = 3


def total_memory_mib() -> int:
    """The node's RAM in MiB (what ``node/memory_overcommit`` multiplies)."""
    return int(psutil.virtual_memory().total // (1024 * 1024))


def disk_usage(label: str, host_path: Path | str) -> DiskUsage | None:
    """The usage of the file system holding ``host_path``.

    Args:
        label: what lives there, for the admin (``FENCE_HOME`` …).
        host_path: a folder on the host.

    Returns:
        Its file system's usage, or ``None`` when the folder cannot be read.
    """
    try:
        usage = psutil.disk_usage(str(host_path))
    except OSError:
        return None
    return DiskUsage(label=label, path=str(host_path), total=usage.total, used=usage.used,
                     free=usage.free, percent=round(usage.percent, 1))


def disks(host_home: Path, engine: EngineInfo | None) -> tuple[DiskUsage, ...]:
    """FENCE_HOME's file system and, when the engine answered, its data root's."""
    found = [disk_usage("FENCE_HOME", host_home)]
    if engine is not None and engine.data_root:
        found.append(disk_usage("engine data root", engine.data_root))
    return tuple(d for d in found if d is not None)


def disk_warnings(found: Iterable[DiskUsage], threshold: float = DISK_WARN_PERCENT) -> list[str]:
    """One warning per file system fuller than ``threshold`` percent."""
    return [f"disk of {d.label} ({d.path}) is {d.percent:.0f} % full ({d.free / 1e9:.1f} GB free): "
            f"run `kato gc` and see `kato node info`"
            for d in found if d.percent > threshold]


_WILDCARDS = ("0.0.0.0", "::", "")


def _overlaps(listening: str, wanted: str) -> bool:
    """Whether a socket listening on ``listening`` keeps another from binding ``wanted``."""
    return listening in _WILDCARDS or wanted in _WILDCARDS or listening == wanted


def port_holder_problem(*, address: str, port: int, router_pid: int | None) -> str | None:
    """One line naming the process that listens on the router's port, when it is not this
    node's router (whose nginx master is ``router_pid``, its workers being its children).

    Args:
        address: ``router/bind_address``.
        port: ``router/port``.
        router_pid: this node's nginx master, ``None`` when it does not run.

    Returns:
        The problem, or ``None`` when the port is free or this node's router holds it.
    """
    ours: set[int] = set()
    if router_pid is not None:
        try:
            ours = {router_pid, *(child.pid for child in psutil.Process(router_pid).children())}
        except psutil.Error:
            pass
    try:
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                     and _overlaps(c.laddr.ip, address)]
    except (psutil.Error, OSError):
        return None
    others = [c for c in listening if c.pid is None or c.pid not in ours]
    if not others:
        return None
    holder = others[0]
    if holder.pid is None:
        who = "a process of another user (its pid is not visible to the daemon)"
        if router_pid is not None:
            return None  # most likely this router's own worker, seen without rights
    else:
        try:
            program = psutil.Process(holder.pid).name()
        except psutil.Error:
            program = "?"
        who = f"pid {holder.pid} ({program})"
    return (f"router/port {port} on {address} is taken by {who}, not this node's router: apps are "
            f"not reachable at their URLs; stop it or choose another port with "
            f"`kato config set fence router/port N`")


def app_uid_warnings(app_uid: AppUid | None) -> list[str]:
    """A warning when app processes run as a uid a host account has (only possible on an engine
    without userns-remap, where a container uid is a host uid)."""
    if app_uid is None or app_uid.remapped or app_uid.host_owner is None:
        return []
    how = ("`kato config del fence container/uid` lets fence pick a uid no host account has"
           if app_uid.source == "container/uid" else "remove FENCE_HOME/app-uid so that fence picks another")
    return [f"app processes run as uid {app_uid.uid} ({app_uid.source}), which is host {app_uid.host_owner}: "
            f"without userns-remap that account can read every app's environment and signal its "
            f"processes; {how}, or start dockerd with --userns-remap=default"]


def crash_loop_warnings(instances: dict[str, list[InstanceView]]) -> list[str]:
    """One warning per app with a slot that has restarted ``CRASH_LOOP_RESTARTS`` times or more.

    Args:
        instances: each app's instances, by app name.
    """
    found = []
    for app in sorted(instances):
        looping = sorted({(str(v.index) if v.process == "web" else v.name, v.restarts, v.last_crash or v.reason or "crashed")
                          for v in instances[app] if v.restarts >= CRASH_LOOP_RESTARTS})
        if looping:
            index, restarts, why = looping[0]
            found.append(f"app {app} is crash-looping: instance {index} restarted {restarts} times "
                         f"(last: {why}); see `fence app {app}` and `fence logs {app}`")
    return found


def node_info(*, node_id: str, host_home: Path, engine: EngineInfo | None,
              node_containers: list[ContainerInfo], engine_containers: list[ContainerInfo],
              promised_mib: int, overcommit: float) -> NodeInfo:
    """The node's resources for ``kato node info``.

    Args:
        node_id: this node's id.
        host_home: FENCE_HOME.
        engine: the engine's facts, ``None`` if it does not answer.
        node_containers: this node's containers.
        engine_containers: every container on the engine.
        promised_mib: the sum of the memory limits of this node's instances.
        overcommit: ``node/memory_overcommit``.

    Returns:
        CPU, memory, disks and containers.
    """
    memory = psutil.virtual_memory()
    roles = Counter(f"{c.labels.get(labels.ROLE, '?')}/{c.state}" for c in node_containers)
    states = Counter(c.state for c in engine_containers)
    return NodeInfo(
        node_id=node_id, cpus=psutil.cpu_count() or 1,
        load=tuple(round(x, 2) for x in os.getloadavg()),
        cpu_percent=psutil.cpu_percent(interval=0.2),
        memory_total=int(memory.total), memory_available=int(memory.available),
        memory_promised_mib=promised_mib,
        memory_limit_mib=int(overcommit * memory.total // (1024 * 1024)),
        disks=disks(host_home, engine),
        containers=dict(sorted(roles.items())), engine_containers=dict(sorted(states.items())),
        engine=engine)
