"""Bounds how many stagings run at once (staging/concurrency); the rest wait, and say so."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from fence.errors import StagingFailed


class StagingSlots:
    """A counting gate whose size is read from config each time someone waits.

    A finished staging whose container is still being removed (in the background) keeps its
    place until it is gone: the limit bounds staging containers, not only stagings in progress.

    Args:
        limit: returns the number of stagings allowed at once (``staging/concurrency``).
        draining: returns how many finished stagings' containers are still being removed.
    """

    def __init__(self, *, limit: Callable[[], int], draining: Callable[[], int] = lambda: 0) -> None:
        self._limit = limit
        self._draining = draining
        self._cond = threading.Condition()
        self._running = 0

    @property
    def running(self) -> int:
        """Stagings holding a slot now."""
        with self._cond:
            return self._running

    def notify(self) -> None:
        """Something that held a place is gone (a container removed): let a waiter look again."""
        with self._cond:
            self._cond.notify_all()

    def _taken(self) -> int:
        return self._running + self._draining()

    @contextlib.contextmanager
    def slot(self, *, on_line: Callable[[str], None], cancelled: Callable[[], bool]) -> Iterator[None]:
        """Hold a slot for the duration of the block, waiting (and saying so) when all are taken.

        Raises:
            StagingFailed: cancelled while waiting.
        """
        with self._cond:
            if self._taken() >= self._limit():
                draining = self._draining()
                finishing = f", {draining} finishing" if draining else ""
                on_line(f"-----> Queued: {self._running} stagings running{finishing} (staging/concurrency "
                        f"is {self._limit()}); waiting for a slot")
            while self._taken() >= self._limit():
                if cancelled():
                    raise StagingFailed(phase="queue", buildpack="", detail="cancelled while waiting")
                self._cond.wait(0.5)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
