"""The scheduler seam: what the rest of fence asks of whatever keeps an app's instances running.

Desired state goes in through the store (apps, their releases, each process type's count) and a
``wake``; instance views and routes come out. Two implementations:

- ``fence.running.manager.InstanceManager``: the local reconciler (containers on this node's
  engine), the default (``cluster/role`` none);
- ``fence.cluster.scheduler.SwarmScheduler``: one Swarm service per app, process type and
  release, on a cluster's controller (``cluster/role`` controller).

Staging, tasks (``fence run``), the release phase, cron and backing services stay on the node's
own engine in both modes: they do not go through this seam.
"""

from __future__ import annotations

import threading
from typing import Protocol

from fence.models import InstanceView, RolloutProgress, Route


class Scheduler(Protocol):
    """Keeps each started app's process types at their counts on the current release."""

    def run_in_background(self, interval: float = 0.5) -> None:
        """Reconcile every ``interval`` seconds (and at once after ``wake``) until ``shutdown``."""

    def wake(self) -> None:
        """Reconcile now (desired state changed)."""

    def shutdown(self) -> None:
        """Stop reconciling; what runs keeps running (a restarted daemon re-adopts it)."""

    def tick(self) -> None:
        """One reconcile pass."""

    def wait_pass(self, timeout: float) -> None:
        """Wait until a pass ended since this thread last returned from here, or ``timeout``."""

    def instances(self, app: str) -> list[InstanceView]:
        """The app's instances now."""

    def instances_by_app(self) -> dict[str, list[InstanceView]]:
        """Every app's instances now."""

    def routes(self) -> list[Route]:
        """The routes the router last accepted."""

    def routed(self, app: str, release: int) -> int:
        """How many running web instances of the app's ``release`` the router last accepted."""

    def forget(self, app: str) -> None:
        """Drop what is kept about a deleted app."""

    def tracked(self) -> set[str]:
        """Ids of the containers it keeps a record of (gc leaves them alone)."""

    def running_ids(self) -> list[str]:
        """Full ids of the running instance containers on this node's own engine (the usage
        sampler and /metrics read their cgroups); no engine listing."""

    def promised_mib(self) -> int:
        """Memory promised to this node's instances (MiB)."""

    def set_surge(self, app: str, surge: int | None) -> None:
        """Replace at most ``surge`` serving instances of the app at once."""

    def roll(self, app: str, *, image_id: str, surge: int = 1) -> None:
        """Move the app's serving instances onto ``image_id`` (a stack rollout)."""

    def rollout_progress(self, app: str) -> RolloutProgress | None:
        """Where the app's rollout stands."""

    def end_rollout(self, app: str) -> None:
        """Forget the app's rollout."""


class Passes:
    """Counts a scheduler's ended passes for ``Scheduler.wait_pass``: a waiter returns once a pass
    has ended since the same thread last returned (on its first call: the next pass), so a pass
    that ended while the caller looked at what the last one left is not missed."""

    def __init__(self) -> None:
        self._ended = threading.Condition()
        self._count = 0  # passes ended, guarded by _ended
        self._seen = threading.local()  # per waiting thread: the count it last returned with

    def ended(self) -> None:
        """A pass ended: wake the waiters."""
        with self._ended:
            self._count += 1
            self._ended.notify_all()

    def wait(self, timeout: float) -> None:
        """Wait until a pass has ended since this thread last returned from here, or ``timeout`` seconds."""
        with self._ended:
            seen = getattr(self._seen, "count", self._count)
            self._ended.wait_for(lambda: self._count > seen, timeout)
            self._seen.count = self._count

