"""Cloud Foundry's crash restart policy, and the clock it reads (replaced by a fake in tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


@dataclass(frozen=True)
class BackoffPolicy:
    """When a crashed instance is restarted.

    The first ``immediate`` crashes restart at once; then the wait is ``base`` seconds, doubling
    with each crash up to ``cap``; after ``give_up`` crashes the instance stays down. An instance
    that has run for ``reset_after`` seconds since its last start has its count reset.
    """

    immediate: int = 3
    base: float = 30.0
    cap: float = 16 * 60.0
    give_up: int = 200
    reset_after: float = 5 * 60.0

    def delay(self, crashes: int) -> float | None:
        """Seconds to wait before restarting after the ``crashes``-th crash; ``None``: give up."""
        if crashes > self.give_up:
            return None
        if crashes <= self.immediate:
            return 0.0
        return min(self.cap, self.base * 2 ** (crashes - self.immediate - 1))


@dataclass
class CrashCount:
    """Crash history of one instance slot (app and index).

    Attributes:
        crashes: crashes since the last reset.
        last_start: clock time of the last (re)start, ``None`` before the first.
        restart_at: clock time the next restart may happen, ``None`` when not waiting.
        gave_up: whether the policy gave up on this slot.
    """

    crashes: int = 0
    last_start: float | None = None
    restart_at: float | None = None
    gave_up: bool = False

    def started(self, now: float) -> None:
        """Note a (re)start."""
        self.last_start = now
        self.restart_at = None

    def crashed(self, now: float, policy: BackoffPolicy) -> float | None:
        """Count a crash and schedule the restart; returns the delay, ``None`` if giving up."""
        if self.last_start is not None and now - self.last_start >= policy.reset_after:
            self.crashes = 0
        self.crashes += 1
        delay = policy.delay(self.crashes)
        if delay is None:
            self.gave_up = True
            self.restart_at = None
        else:
            self.restart_at = now + delay
        return delay

    def healthy_for(self, now: float, policy: BackoffPolicy) -> None:
        """Reset the count once the instance has run ``reset_after`` seconds."""
        if self.crashes and self.last_start is not None and now - self.last_start >= policy.reset_after:
            self.crashes = 0
