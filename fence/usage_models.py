"""What `fence stats` and `kato node top` show: per-instance and per-app usage (plain dataclasses, light for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceStats:
    """One instance's usage now.

    Attributes:
        app: the app.
        type: its process type.
        index: its instance index.
        state: ``running``, ``starting``, ``crashed`` …
        container: its container id (short).
        release: the release it runs.
        cpu_percent: CPU used over the last seconds, in % of one core (as ``docker stats``).
        cpu_seconds: CPU time used since it started.
        memory_bytes: memory in use (as ``docker stats`` counts it).
        memory_limit_bytes: its memory limit (0: none).
        net_rx_bytes: bytes received since it started.
        net_tx_bytes: bytes sent since it started.
        restarts: crashes counted by the restart policy.
        uptime: seconds since it became healthy (0 if it is not).
    """

    app: str
    type: str
    index: int
    state: str
    container: str
    release: int
    cpu_percent: float
    cpu_seconds: float
    memory_bytes: int
    memory_limit_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    restarts: int
    uptime: float


@dataclass(frozen=True)
class AppUsage:
    """One app's usage summed over its running instances (`kato node top`).

    Attributes:
        app: the app.
        instances: instances with a usage reading.
        cpu_percent: their CPU, in % of one core.
        memory_bytes: their memory in use.
        memory_limit_bytes: the sum of their limits.
    """

    app: str
    instances: int
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
