"""One instance and one instance slot as the reconciler tracks them, and how an instance's health is checked."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Protocol

from fence import labels
from fence.models import ContainerInfo
from fence.running.backoff import BackoffPolicy, CrashCount
from fence.running.starter import RELEASE_LABEL
from fence.states import InstanceState, check_transition

# The only process type today; slots carry it so that more types need no new keys.
WEB = "web"


class HealthCheck(Protocol):
    """Whether an instance's web process accepts connections."""

    def ready(self, address: str, port: int) -> bool:
        """True when ``address:port`` accepts a TCP connection now."""


class TcpHealth:
    """Connects to the instance's address on its bridge network (not through the published
    port, whose userland proxy accepts connections even when nothing listens behind it)."""

    def ready(self, address: str, port: int) -> bool:
        """True when a TCP connection to ``address:port`` succeeds within 0.25 s."""
        try:
            with socket.create_connection((address, port), timeout=0.25):
                return True
        except OSError:
            return False


@dataclass(frozen=True, order=True)
class SlotKey:
    """An instance slot: the app's ``index``-th instance of one process type."""

    app: str
    process: str
    index: int


@dataclass(frozen=True)
class PendingStart:
    """A start job in flight: what it reserves and why it was started."""

    memory_mib: int
    replacing: bool
    rollout: bool


@dataclass
class Slot:
    """What the manager knows of one slot beyond its containers (mutable, never leaves the
    running package); a deleted app's slots are dropped whole.

    Attributes:
        crashes: the restart policy's count for the slot.
        last_crash: why the slot's instance last crashed (kept after the restart).
        refused: why the last start failed before any container ran, and for which release.
        starting: start jobs in flight, by release.
    """

    crashes: CrashCount = field(default_factory=CrashCount)
    last_crash: str | None = None
    refused: tuple[str, int] | None = None
    starting: dict[int, PendingStart] = field(default_factory=dict)

    def crashed(self, reason: str, now: float, policy: BackoffPolicy) -> float | None:
        """Count a crash of the slot's instance; returns the restart delay (``None``: given up)."""
        self.last_crash = reason
        return self.crashes.crashed(now, policy)

    def start_failed(self, reason: str, release: int, now: float, policy: BackoffPolicy) -> None:
        """A start that failed before its container ran counts as a crash of the slot."""
        self.refused = (reason, release)
        self.crashes.crashed(now, policy)


@dataclass
class Instance:
    """The manager's record of one instance container (mutable, never leaves the running package)."""

    container_id: str
    app: str
    index: int
    release: int
    state: InstanceState
    created: float
    health_deadline: float
    host_port: int | None = None
    address: str | None = None
    healthy_since: float | None = None
    reason: str | None = None
    seq: int = 0  # registration order: newer than a listing means the listing could not see it
    image_id: str = ""
    memory_mib: int = 0
    replacing: bool = False  # started beside a serving instance of its slot (counts against surge)
    rollout: bool = False  # started by a stack rollout, not yet the slot's only instance
    process: str = WEB

    @property
    def slot(self) -> SlotKey:
        """The slot this instance fills."""
        return SlotKey(app=self.app, process=self.process, index=self.index)

    def move(self, state: InstanceState) -> None:
        self.state = check_transition(self.state, state)


def slot_of(info: ContainerInfo) -> tuple[SlotKey, int]:
    """The slot and release of an instance container, from its labels (index and release 0 when
    a label is unreadable)."""
    found = info.labels
    app = found.get(labels.APP, "")
    try:
        index, release = int(found.get(labels.INSTANCE, "0")), int(found.get(RELEASE_LABEL, "0"))
    except ValueError:
        index, release = 0, 0
    return SlotKey(app=app, process=WEB, index=index), release
