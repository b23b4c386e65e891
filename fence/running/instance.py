"""One instance and one instance slot as the reconciler tracks them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fence import labels
from fence.models import WEB_PROCESS, ContainerInfo
from fence.running.backoff import BackoffPolicy, CrashCount
from fence.running.health import Probe
from fence.states import InstanceState, check_transition

# The type that gets $PORT, the router and the port check; the others get the process check.
WEB = WEB_PROCESS


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


class SlotTable:
    """Every slot's record, by app, so that a deleted app's records go at once."""

    def __init__(self) -> None:
        self._by_app: dict[str, dict[SlotKey, Slot]] = {}

    def __getitem__(self, key: SlotKey) -> Slot:
        """The slot's record (a fresh one the first time)."""
        return self._by_app.setdefault(key.app, {}).setdefault(key, Slot())

    def by_app(self) -> Mapping[str, Mapping[SlotKey, Slot]]:
        """Every record, by app."""
        return self._by_app

    def pending(self, app: str | None = None) -> list[PendingStart]:
        """The start jobs in flight (of one app, or all)."""
        groups = [self._by_app.get(app, {})] if app is not None else self._by_app.values()
        return [start for slots in groups for slot in slots.values() for start in slot.starting.values()]

    def forget(self, app: str) -> None:
        """Drop the app's records; a start job still in flight keeps its reservation until it ends."""
        kept = {key: Slot(starting=slot.starting) for key, slot in self._by_app.pop(app, {}).items()
                if slot.starting}
        if kept:
            self._by_app[app] = kept


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
    probe: Probe = field(default_factory=Probe)  # its health check, fixed when it starts

    @property
    def name(self) -> str:
        """``TYPE.INDEX`` (``web.0``, ``worker.1``)."""
        return f"{self.process}.{self.index}"

    @property
    def web(self) -> bool:
        """Whether it runs the web process (routed, port-checked)."""
        return self.process == WEB

    @property
    def slot(self) -> SlotKey:
        """The slot this instance fills."""
        return SlotKey(app=self.app, process=self.process, index=self.index)

    def move(self, state: InstanceState) -> None:
        self.state = check_transition(self.state, state)

    @classmethod
    def adopted(cls, info: ContainerInfo, *, now: float, memory_mib: int, reason: str | None) -> Instance:
        """The record of a container found by its labels (``reason``: why it is not running)."""
        key, release = slot_of(info)
        return cls(container_id=info.id, app=key.app, index=key.index, release=release, process=key.process,
                   state=InstanceState.RUNNING if info.running else InstanceState.CRASHED, created=now,
                   health_deadline=now, healthy_since=now if info.running else None, reason=reason,
                   image_id=info.stack_image_id, memory_mib=memory_mib)


def slot_of(info: ContainerInfo) -> tuple[SlotKey, int]:
    """The slot and release of an instance container, from its labels (index and release 0 when
    a label is unreadable; a container without a process label runs ``web``)."""
    found = info.labels
    app = found.get(labels.APP, "")
    try:
        index, release = int(found.get(labels.INSTANCE, "0")), int(found.get(labels.RELEASE, "0"))
    except ValueError:
        index, release = 0, 0
    return SlotKey(app=app, process=found.get(labels.PROCESS) or WEB, index=index), release

