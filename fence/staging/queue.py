"""Bounds how many stagings run at once (staging/concurrency); the rest wait, and say so."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from fence.errors import StagingFailed


class StagingSlots:
    """A counting gate whose size is read from config each time someone waits.

    Args:
        limit: returns the number of stagings allowed at once (``staging/concurrency``).
    """

    def __init__(self, *, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._cond = threading.Condition()
        self._running = 0

    @property
    def running(self) -> int:
        """Stagings holding a slot now."""
        with self._cond:
            return self._running

    @contextlib.contextmanager
    def slot(self, *, on_line: Callable[[str], None], cancelled: Callable[[], bool]) -> Iterator[None]:
        """Hold a slot for the duration of the block, waiting (and saying so) when all are taken.

        Raises:
            StagingFailed: cancelled while waiting.
        """
        with self._cond:
            if self._running >= self._limit():
                on_line(f"-----> Queued: {self._running} stagings running (staging/concurrency is "
                        f"{self._limit()}); waiting for a slot")
            while self._running >= self._limit():
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
