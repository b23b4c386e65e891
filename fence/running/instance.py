"""One instance as the reconciler tracks it, how its health is checked, and its slot from labels."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

from fence import labels
from fence.models import ContainerInfo
from fence.states import InstanceState, check_transition


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


@dataclass(frozen=True)
class PendingStart:
    """A start job in flight: what it reserves and why it was started."""

    memory_mib: int
    replacing: bool
    rollout: bool


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

    def move(self, state: InstanceState) -> None:
        self.state = check_transition(self.state, state)


def slot_of(info: ContainerInfo) -> tuple[str, int, int]:
    found = info.labels
    try:
        return found.get(labels.APP, ""), int(found.get(labels.INSTANCE, "0")), int(found.get(labels.RELEASE, "0"))
    except ValueError:
        return found.get(labels.APP, ""), 0, 0
