"""What one app's slots need this pass: which instances to start and which to stop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from fence.models import AppRecord
from fence.running.instance import Instance, SlotKey, SlotTable
from fence.labels import short_id
from fence.running.rollout import RolloutState
from fence.states import InstanceState

S = InstanceState


class StartSlot(Protocol):
    """Submits a start job for a slot of the app being planned."""

    def __call__(self, key: SlotKey, *, replacing: bool, rollout: RolloutState | None = None) -> bool:
        """Start an instance in ``key`` beside any serving one (``replacing``); False when refused."""


def is_steady(apps: dict[str, AppRecord], instances: Iterable[Instance], *, moved: bool, pending: bool,
              rolling: bool) -> bool:
    """Whether nothing but an engine event or a wake can give the next pass work: every instance
    runs and fills a wanted slot, and nothing starts (``pending``), stops (``moved``) or rolls."""
    if moved or pending or rolling:
        return False
    found = list(instances)
    wanted = sum(sum(app.counts().values()) for app in apps.values() if app.started and app.release is not None)
    return len(found) == wanted and all(i.state is S.RUNNING for i in found)


def plan_app(*, app: AppRecord | None, instances: list[Instance], slots: SlotTable, rollout: RolloutState | None,
             surge: int | None, now: float, start: StartSlot) -> list[Instance]:
    """Start what the app lacks; return what must stop (everything, for a deleted or stopped app).

    Every process type has its own slots (``web.0``, ``worker.0`` …, as many as the app's count
    of the type); an instance whose index is beyond its type's count stops. A slot keeps its newest healthy instance of the current release (during a rollout: the
    newest on the rollout's image) and stops the rest once it is healthy; a slot without one
    starts one unless its crash backoff waits or the app's ``surge`` (replacements started
    while an old instance still serves) is used up.

    Args:
        app: the app's desired state (``None``: deleted).
        instances: the app's instance records.
        slots: the manager's slot records.
        rollout: the app's stack rollout, if one runs.
        surge: the app's surge (``None``: no limit).
        now: the manager's clock.
        start: submits a start job.

    Returns:
        The instances to stop.
    """
    mine = [i for i in instances if i.state is not S.STOPPING]
    if app is None or not app.started or app.release is None:
        return mine
    counts = app.counts()
    stop = [i for i in mine if i.index >= counts.get(i.process, 0)]
    replacing = sum(1 for i in mine if i.replacing and i.state is S.STARTING) + \
        sum(1 for pending in slots.pending(app.name) if pending.replacing)
    keys = [SlotKey(app=app.name, process=process, index=index)
            for process, count in counts.items() for index in range(count)]
    by_slot: dict[SlotKey, list[Instance]] = {}
    for instance in mine:  # once, not once per slot: a pass over 50 slots was 2,500 comparisons
        by_slot.setdefault(instance.slot, []).append(instance)
    for key in keys:
        record = slots[key]
        slot = by_slot.get(key, [])
        current = [i for i in slot if i.release == app.release and i.state in (S.STARTING, S.RUNNING)]
        running = [i for i in current if i.state is S.RUNNING]
        if running:
            # Keep the newest healthy instance (during a rollout: the newest on its image).
            keep = max(running, key=lambda i: (rollout is not None and i.image_id == rollout.image_id, i.created))
            stop += [i for i in slot if i.release != app.release or i.state is S.CRASHED]
            stop += [i for i in running if i is not keep]
            if rollout is not None:
                rollout.replaced_by(keep, [i for i in running if i is not keep])
                assert surge is not None  # a rollout always has one
                if _roll_slot(key, keep, current, rollout, surge - replacing,
                              starting=app.release in record.starting, start=start):
                    replacing += 1
        elif not current and app.release not in record.starting:
            serving = any(i.state is S.RUNNING for i in slot)
            if serving and surge is not None and replacing >= surge:
                continue  # the app's surge is used up: this slot's old instance serves on
            count = record.crashes
            if count.gave_up or (count.restart_at is not None and now < count.restart_at):
                continue
            stop += [i for i in slot if i.state is S.CRASHED]
            if start(key, replacing=serving) and serving:
                replacing += 1
    return stop


def _roll_slot(key: SlotKey, keep: Instance, current: list[Instance], rollout: RolloutState, room: int, *,
               starting: bool, start: StartSlot) -> bool:
    """Start a replacement for a slot whose serving instance runs on another image."""
    if rollout.failed is not None or keep.image_id == rollout.image_id or room <= 0:
        return False
    if starting or any(i.state is S.STARTING for i in current):
        return False
    if not start(key, replacing=True, rollout=rollout):
        return False
    rollout.note(f"instance {_name(key)}: starting a replacement on the new stack (container "
                 f"{keep.container_id[:12]} on {short_id(keep.image_id)} keeps serving)")
    return True


def _name(key: SlotKey) -> str:
    """How rollout lines name a slot: the index for web (as before process types), else ``TYPE.INDEX``."""
    return str(key.index) if key.process == "web" else f"{key.process}.{key.index}"
