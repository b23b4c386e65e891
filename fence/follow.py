"""Following several containers' logs at once for one client, ended the moment the client leaves."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable

from fence.backend.base import LogLines
from fence.errors import FenceError

log = logging.getLogger("fence.follow")

_PUT_WAIT = 0.2  # seconds a pump waits for room before it looks whether it was closed


class LogFollow:
    """The merged lines of several containers' logs, as they come, for one event loop.

    One pump thread per container reads its ``LogLines`` and hands each line to the loop
    (``next_line`` awaits them, so no worker thread of the server waits for a line). At most
    ``max_queued`` lines wait unread; a pump with no room waits, looking every 0.2 s whether
    it was closed. ``close`` closes every stream, which ends a read that is waiting on the
    engine, so every pump thread ends soon after the client leaves, not when its container stops.

    Args:
        sources: ``(tag, open)`` pairs: ``open()`` starts following one container's log.
        loop: the event loop ``next_line`` runs on.
        max_queued: lines that may wait unread.
    """

    def __init__(self, *, sources: list[tuple[str, Callable[[], LogLines]]],
                 loop: asyncio.AbstractEventLoop, max_queued: int = 256) -> None:
        self._sources = sources
        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._room = threading.Semaphore(max_queued)
        self._lock = threading.Lock()
        self._closed = False
        self._streams: list[LogLines] = []
        self._open = len(sources)
        self.threads: list[threading.Thread] = []

    def start(self) -> LogFollow:
        """Start the pumps; returns itself."""
        for tag, opener in self._sources:
            thread = threading.Thread(target=self._pump, args=(tag, opener), name=f"follow-{tag}", daemon=True)
            self.threads.append(thread)
            thread.start()
        return self

    async def next_line(self) -> str | None:
        """The next line, or ``None`` once every followed container's log has ended."""
        while self._open:
            line = await self._queue.get()
            if line is None:
                self._open -= 1
                continue
            self._room.release()
            return line
        return None

    def close(self) -> None:
        """Stop following: every stream is closed and every pump ends (callable from any thread)."""
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.close()
            except Exception as exc:  # closing is best effort; the pump ends on its next read anyway
                log.warning("could not close a log stream", extra={"error": str(exc)})

    def _pump(self, tag: str, opener: Callable[[], LogLines]) -> None:
        try:
            stream = opener()
            with self._lock:
                closed = self._closed
                if not closed:
                    self._streams.append(stream)
            if closed:
                stream.close()
                return
            for line in stream:
                if not self._wait_for_room():
                    return
                self._emit(f"[{tag}] {line}")
        except FenceError:
            pass  # the container went away, or the engine: this stream ends
        finally:
            self._emit(None)

    def _wait_for_room(self) -> bool:
        while not self._room.acquire(timeout=_PUT_WAIT):
            if self._closed:
                return False
        return not self._closed

    def _emit(self, line: str | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass
