"""Bounds how many stagings, and how many source checks, run at once (staging/concurrency); the rest wait, and say so."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from fence.errors import StagingFailed


class StagingSlots:
    """A counting gate whose size is read from config each time someone waits.

    A finished staging whose container is still being removed (in the background) keeps its
    place until it is gone: the limit bounds staging containers, not only stagings in progress.

    The same gate, with its own count, bounds source preparation (``for_sources``): checking a
    source holds its entry list, and a zip's central directory, in memory, so N hostile uploads
    checked at once would cost N times that.

    Args:
        limit: returns the number of stagings allowed at once (``staging/concurrency``).
        draining: returns how many finished stagings' containers are still being removed.
        doing: what the holders are doing, for the queued line (``stagings running``).
    """

    def __init__(self, *, limit: Callable[[], int], draining: Callable[[], int] = lambda: 0,
                 doing: str = "stagings running") -> None:
        self._limit = limit
        self._draining = draining
        self._doing = doing
        self._cond = threading.Condition()
        self._running = 0

    @classmethod
    def for_sources(cls, *, limit: Callable[[], int]) -> StagingSlots:
        """A gate for checking and packing sources (``prepare_source``), ``limit`` at a time.

        Uploads are not gated while they arrive: they are written to disk in chunks as they
        come (a constant buffer each), and a slow sender would otherwise hold a place for as
        long as it likes.
        """
        return cls(limit=limit, doing="sources being checked")

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
                on_line(f"-----> Queued: {self._running} {self._doing}{finishing} (staging/concurrency "
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
