"""Bounds the output lines waiting between a worker thread and a client slower than the output."""

# Container output reaches a client through the daemon; a client that reads slowly (or not at
# all) must not make the daemon queue that output in memory. Two ways to stay bounded: hold the
# worker back (a one-off task: its output is the point, and it holds no shared slot), or drop
# lines and say how many (a staging: it holds a staging slot and a deadline, and its log file
# keeps every line).

from __future__ import annotations

import threading

# Bytes of line text that may wait for one client.
MAX_WAITING = 4 * 1024 * 1024


class Backlog:
    """The byte count of lines on their way to one client.

    Args:
        lossless: when full, ``admit`` waits for room (``True``) or refuses the line (``False``).
        limit: bytes that may wait.
    """

    def __init__(self, *, lossless: bool, limit: int = MAX_WAITING) -> None:
        self._lossless = lossless
        self._limit = limit
        self._waiting = 0
        self._dropped = 0
        self._closed = False
        self._room = threading.Condition()

    def admit(self, line: str) -> bool:
        """Count a line in before it is queued (worker thread); ``False``: do not queue it.

        Lossy, a line that does not fit is counted as dropped; lossless, it waits for room, and
        is refused only once the client has gone (``close``).
        """
        size = len(line) + 1
        with self._room:
            while self._waiting and self._waiting + size > self._limit:
                if self._closed:
                    return False
                if not self._lossless:
                    self._dropped += 1
                    return False
                self._room.wait(timeout=1.0)
            if self._closed:
                return False
            self._waiting += size
            return True

    def dropped(self) -> int:
        """How many lines were dropped since the last call (and so now reported)."""
        with self._room:
            dropped, self._dropped = self._dropped, 0
            return dropped

    def taken(self, line: str) -> None:
        """A line left for the client (consumer side): its room is free again."""
        with self._room:
            self._waiting -= len(line) + 1
            self._room.notify_all()

    def close(self) -> None:
        """The client has gone: nothing waits for room any more."""
        with self._room:
            self._closed = True
            self._room.notify_all()
