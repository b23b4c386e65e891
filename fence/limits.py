"""The resource limits every container fence makes gets from the node config (staging, image, instance, task)."""

from __future__ import annotations

from fence.config import ConfigStore
from fence.models import Limits


def container_limits(config: ConfigStore, memory_mib: int) -> Limits:
    """A container's limits: ``memory_mib`` of memory, the rest from config.

    Args:
        config: node config (``max_container_processes``, ``container/cpu_shares``, ``container/nofile``,
            ``container/log_max_size``, ``container/log_max_files``).
        memory_mib: the hard memory limit in MiB (swap is held to the same).

    Returns:
        The limits to put in a ``ContainerSpec``.
    """
    fence = config.fence
    return Limits(memory_bytes=memory_mib * 1024 * 1024, pids=int(fence("max_container_processes")),
                  cpu_shares=int(fence("container/cpu_shares")), nofile=int(fence("container/nofile")),
                  log_max_size=str(fence("container/log_max_size")),
                  log_max_files=int(fence("container/log_max_files")))
