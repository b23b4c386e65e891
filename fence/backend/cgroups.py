"""Reading a Docker container's usage from its cgroup and network counters (v1 or v2, cgroupfs or systemd driver)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from fence.backend.base import UsageSample

T = TypeVar("T")

# A limit this large means "none" (cgroup v1 writes PAGE_COUNTER_MAX scaled to bytes).
_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class CgroupMounts:
    """Where the cgroup hierarchies fence reads are mounted on this host.

    Attributes:
        version: 1 or 2.
        host_cpu: v1: the hierarchy with ``cpuacct``; v2: the unified one.
        host_memory: v1: the hierarchy with ``memory``; v2: the unified one.
    """

    version: int
    host_cpu: Path
    host_memory: Path


def find_mounts(host_mountinfo: Path = Path("/proc/self/mountinfo")) -> CgroupMounts | None:
    """The cgroup layout of this host, from its mount table; ``None`` if no cgroup is mounted."""
    cpu = memory = unified = None
    try:
        text = host_mountinfo.read_text()
    except OSError:
        return None
    for entry in text.splitlines():
        fields = entry.split()
        if " - " not in entry or len(fields) < 5:
            continue
        mount_point = Path(fields[4])
        fstype, _, super_options = entry.split(" - ", 1)[1].split(" ")[:3]
        if fstype == "cgroup2":
            unified = unified or mount_point
        elif fstype == "cgroup":
            options = set(super_options.split(","))
            if "cpuacct" in options:
                cpu = cpu or mount_point
            if "memory" in options:
                memory = memory or mount_point
    if cpu is not None and memory is not None:
        return CgroupMounts(version=1, host_cpu=cpu, host_memory=memory)
    if unified is not None:
        return CgroupMounts(version=2, host_cpu=unified, host_memory=unified)
    return None


class CgroupReader:
    """Reads containers' counters straight from the kernel: a few small files per container.

    A container's cgroup is found by its id under the layouts Docker uses (``docker/ID`` with
    the cgroupfs driver, ``system.slice/docker-ID.scope`` with systemd), then remembered.

    Args:
        mounts: the host's cgroup layout (``find_mounts()``); ``None``: nothing can be read.
        host_proc: the host's /proc (the network counters of a container's namespace).
    """

    def __init__(self, *, mounts: CgroupMounts | None, host_proc: Path = Path("/proc")) -> None:
        self._mounts = mounts
        self._proc = host_proc
        self._found: dict[str, str] = {}
        self._lock = threading.Lock()

    def sample(self, container_id: str) -> UsageSample | None:
        """The container's counters now, or ``None`` if it has no cgroup (not running)."""
        return self._reading(container_id, self._read)

    def cpu_seconds(self, container_id: str) -> tuple[float, float] | None:
        """The container's CPU time now and ``time.monotonic()`` then (one small file), or
        ``None`` if it has no cgroup (not running)."""
        return self._reading(container_id, lambda relative: (self._cpu(relative), time.monotonic()))

    def _reading(self, container_id: str, read: Callable[[str], T]) -> T | None:
        """``read`` of the container's cgroup (relative path), or ``None`` without one."""
        if self._mounts is None:
            return None
        relative = self._relative(container_id)
        if relative is None:
            return None
        try:
            return read(relative)
        except (OSError, ValueError):
            with self._lock:
                self._found.pop(container_id, None)  # it stopped, or its cgroup moved
            return None

    def _cpu(self, relative: str) -> float:
        """CPU seconds the cgroup used."""
        assert self._mounts is not None
        host_cpu = f"{self._mounts.host_cpu}/{relative}/"
        if self._mounts.version == 1:
            return int(_read(host_cpu + "cpuacct.usage")) / 1e9
        return _stat_int(_read(host_cpu + "cpu.stat"), "usage_usec") / 1e6

    def _relative(self, container_id: str) -> str | None:
        with self._lock:
            known = self._found.get(container_id)
        if known is not None:
            return known
        assert self._mounts is not None
        for relative in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"):
            if (self._mounts.host_memory / relative).is_dir():
                with self._lock:
                    self._found[container_id] = relative
                return relative
        return None

    def _read(self, relative: str) -> UsageSample:
        # Plain string paths and unbuffered reads: a /metrics scrape reads six files for each of
        # 50 instances, and pathlib's overhead was half of its cost.
        assert self._mounts is not None
        cpu = self._cpu(relative)
        host_memory = f"{self._mounts.host_memory}/{relative}/"
        if self._mounts.version == 1:
            used = int(_read(host_memory + "memory.usage_in_bytes"))
            limit = int(_read(host_memory + "memory.limit_in_bytes"))
            inactive = _stat_int(_read(host_memory + "memory.stat"), "total_inactive_file")
        else:
            used = int(_read(host_memory + "memory.current"))
            raw = _read(host_memory + "memory.max").strip()
            limit = _NO_LIMIT if raw == "max" else int(raw)
            inactive = _stat_int(_read(host_memory + "memory.stat"), "inactive_file")
        # As `docker stats` counts it: page cache the kernel may drop is not the app's memory.
        memory = used - inactive if inactive < used else used
        rx, tx = self._net(host_memory + "cgroup.procs")
        return UsageSample(cpu_seconds=cpu, memory_bytes=memory,
                           memory_limit_bytes=0 if limit >= _NO_LIMIT else limit,
                           net_rx_bytes=rx, net_tx_bytes=tx, at=time.monotonic())

    def _net(self, host_procs: str) -> tuple[int, int]:
        first = _read(host_procs).split("\n", 1)[0].strip()
        if not first:
            return 0, 0
        return net_counters(self._proc / first / "net" / "dev")


def net_counters(host_net_dev: Path) -> tuple[int, int]:
    """Bytes received and sent on every interface of a ``/proc/PID/net/dev`` but loopback."""
    rx = tx = 0
    try:
        lines = host_net_dev.read_text().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def _read(host_file: str) -> str:
    """A small kernel file's text (one open, one read)."""
    with open(host_file, "rb", buffering=0) as fh:
        return fh.read().decode()


def _stat_int(text: str, key: str) -> int:
    """The value of one ``KEY VALUE`` line of a cgroup stat file's text (0 if it has none)."""
    prefix = f"{key} "
    for line in text.splitlines():
        if line.startswith(prefix):
            value = line[len(prefix):].strip()
            return int(value) if value.isdigit() else 0
    return 0


def default_reader() -> CgroupReader:
    """A reader of this host's cgroups (nothing is read when the host has none mounted)."""
    return CgroupReader(mounts=find_mounts())
