"""The instance manager's record of one app moving its instances onto another stack image."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Callable

from fence.labels import short_id
from fence.models import RolloutProgress
from fence.running.instance import Instance
from fence.states import InstanceState

MAX_EVENTS = 1000
log = logging.getLogger("fence.instances")


@dataclass
class RolloutState:
    """One app's rollout as the manager carries it out (mutable; read through ``progress``).

    Attributes:
        app: the app's name.
        image_id: the stack image id its instances move to.
        surge: instances of the app replaced at once.
        replaced: instances replaced so far.
        failed: why it stopped, once it has.
        events: progress lines, oldest first.
    """

    app: str
    image_id: str
    surge: int = 1
    replaced: int = 0
    failed: str | None = None
    events: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        """Add a progress line."""
        if len(self.events) < MAX_EVENTS:
            self.events.append(line)

    def fail(self, index: int, why: str) -> None:
        """Stop replacing: the new instance at ``index`` did not come up (the first reason wins)."""
        if self.failed is None:
            self.failed = f"instance {index}: {why}"
            self.note(f"instance {index}: failed on the new stack: {why}; its old instance keeps serving")

    def replaced_by(self, keep: Instance, stopped: list[Instance]) -> None:
        """Count the slot's old instances that ``keep``, healthy on the new image, replaces; from
        here on ``keep`` is the slot's instance like any other."""
        if keep.image_id != self.image_id:
            return
        for old in stopped:
            if old.image_id != self.image_id:
                self.replaced += 1
                self.note(f"instance {keep.index}: container {keep.container_id[:12]} on "
                          f"{short_id(keep.image_id)} is healthy; stopping container "
                          f"{old.container_id[:12]} (on {short_id(old.image_id)})")
        keep.rollout = keep.replacing = False

    def progress(self, instances: list[Instance], *, starting: bool) -> RolloutProgress:
        """A snapshot for the service: ``done`` once no serving instance runs on another image,
        no replacement is starting (``starting``: a start job is in flight) and the old
        instances are gone, unless it failed.

        Args:
            instances: the app's instances.
            starting: whether a replacement's start job is in flight.
        """
        remaining = tuple(sorted({i.index for i in instances
                                  if i.state is InstanceState.RUNNING and i.image_id != self.image_id}))
        busy = starting or any(i.rollout and i.state is InstanceState.STARTING for i in instances) or \
            any(i.state is InstanceState.STOPPING and i.image_id != self.image_id for i in instances)
        return RolloutProgress(app=self.app, image_id=self.image_id, replaced=self.replaced,
                               remaining=remaining, events=tuple(self.events), failed=self.failed,
                               done=self.failed is None and not remaining and not busy)



class Rollouts:
    """How far each app's serving instances may be replaced at once: its *surge*, and the
    rollout (if any) moving them onto another stack image.

    The stack rollout (``fence.stack.rollout``) sets these through the manager; a reconcile
    pass only reads them as it plans and reports here what failed. The manager's lock guards
    every call.
    """

    def __init__(self) -> None:
        self._surge: dict[str, int] = {}
        self._active: dict[str, RolloutState] = {}

    def set_surge(self, app: str, surge: int | None) -> None:
        """At most ``surge`` (at least 1) of the app's serving instances replaced at once; ``None``: no limit."""
        if surge is None:
            self._surge.pop(app, None)
        else:
            self._surge[app] = max(1, surge)

    def begin(self, app: str, *, image_id: str, surge: int) -> None:
        """Start moving the app's serving instances onto ``image_id``, ``surge`` at a time."""
        self._active[app] = RolloutState(app=app, image_id=image_id, surge=max(1, surge))

    def get(self, app: str) -> RolloutState | None:
        """The app's rollout, ``None`` without one."""
        return self._active.get(app)

    def surge(self, app: str) -> int | None:
        """How many of the app's slots a pass may replace at once (a rollout's own surge first)."""
        rollout = self._active.get(app)
        return rollout.surge if rollout is not None else self._surge.get(app)

    def fail(self, app: str, index: int, why: str) -> None:
        """The replacement at ``index`` did not come up: the app's rollout (if any) stops there."""
        rollout = self._active.get(app)
        if rollout is not None:
            rollout.fail(index, why)

    def started(self, replacement: Instance) -> None:
        """A replacement's container runs: the rollout stops if it is not on the rollout's image
        (the configured stack changed meanwhile)."""
        rollout = self._active.get(replacement.app)
        if rollout is not None and replacement.image_id != rollout.image_id:
            rollout.fail(replacement.index, f"the stack changed during the rollout (the new container runs on "
                                            f"{short_id(replacement.image_id)}); run the rollout again")

    def crashed(self, replacement: Instance, reason: str, *, output: Callable[[], str | None]) -> None:
        """A replacement on the new stack crashed: the rollout stops there (``output``: the
        container's last output, asked only when a rollout is on); its old instance keeps serving."""
        if self._active.get(replacement.app) is not None:
            said = output()
            self.fail(replacement.app, replacement.index, f"{reason} (its last output: {said})" if said else reason)
        log.warning("rollout replacement failed", extra={"app": replacement.app, "index": replacement.index,
                                                         "reason": reason})

    def rolling(self, apps: Iterable[str]) -> bool:
        """Whether one of these apps has a rollout on."""
        return any(app in self._active for app in apps)

    def end(self, app: str) -> None:
        """Forget the app's rollout (its surge stays)."""
        self._active.pop(app, None)

    def forget(self, app: str) -> None:
        """Forget the app's surge and rollout (a deleted app)."""
        self._surge.pop(app, None)
        self._active.pop(app, None)
