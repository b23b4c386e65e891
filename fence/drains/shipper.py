"""One drain's shipper: a bounded buffer that never blocks its writers, a sender thread with backoff, counted drops."""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from fence.drains.frame import LogEvent
from fence.drains.models import DrainHealth
from fence.drains.senders import Sender, SendFailed

log = logging.getLogger("fence.drains")

BATCH = 500  # lines per send: one write (or one POST) carries this many at most
BACKOFF_FIRST = 0.5  # seconds after the first failure, doubling up to BACKOFF_MOST
BACKOFF_MOST = 10.0
OVERHEAD = 200  # bytes a buffered line costs beyond its text (the event object, the deque slot)


class DrainShipper:
    """Ships the lines given to ``put`` to one drain, from its own thread.

    ``put`` only appends to a bounded deque under a lock: an app, a staging or the daemon never
    waits for a drain. When the buffer is full the oldest line gives way and is counted as
    dropped (the newest lines say most about a drain that was down). A failed send keeps its
    batch and is retried after a backoff of 0.5 s doubling to 10 s; the state turns ``down``
    with the error until a send works again.

    Args:
        name: the drain's name.
        app: its app, ``None`` for a node-wide drain.
        url: its URL without credentials (for health).
        sender: the transport.
        capacity: the most bytes buffered (each line counts its text and ``OVERHEAD``).
        sleep: waits between retries (tests: a fake clock); it returns early on ``close``.
    """

    def __init__(self, *, name: str, app: str | None, url: str, sender: Sender, capacity: int,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.name, self.app, self.url = name, app, url
        self._sender = sender
        self._buffer: collections.deque[LogEvent] = collections.deque()
        self._capacity = capacity
        self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._sent = self._dropped = 0
        self._state = "idle"
        self._error: str | None = None
        self._error_at: str | None = None
        self._sleep = sleep
        self._thread = threading.Thread(target=self._run, name=f"drain-{app or 'node'}-{name}", daemon=True)
        self._thread.start()

    def put(self, event: LogEvent) -> None:
        """Buffer one line; never blocks (a full buffer drops its oldest line, counted)."""
        with self._cond:
            if self._closed:
                return
            self._bytes += len(event.line) + OVERHEAD
            while self._bytes > self._capacity and self._buffer:
                self._bytes -= len(self._buffer.popleft().line) + OVERHEAD
                self._dropped += 1
            self._buffer.append(event)
            if len(self._buffer) == 1:
                self._cond.notify()

    def health(self) -> DrainHealth:
        """The drain's state, counts and last error."""
        with self._cond:
            return DrainHealth(name=self.name, app=self.app, url=self.url, state=self._state, sent=self._sent,
                               dropped=self._dropped, queued=len(self._buffer), error=self._error,
                               error_at=self._error_at)

    def close(self, *, flush: float = 0.0) -> None:
        """Stop the thread, after up to ``flush`` seconds of sending what is buffered."""
        deadline = time.monotonic() + flush
        with self._cond:
            while self._buffer and self._state != "down" and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._sender.close()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        batch: list[LogEvent] = []
        while True:
            with self._cond:
                while not self._buffer and not batch and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                while self._buffer and len(batch) < BATCH:
                    batch.append(self._buffer.popleft())
                    self._bytes -= len(batch[-1].line) + OVERHEAD
            try:
                self._sender.send(batch)
            except SendFailed as exc:
                self._failed(str(exc))
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MOST)
                batch = self._trimmed(batch)
                continue
            except Exception as exc:  # a bug in a sender must not end the thread quietly
                log.exception("drain %s of %s: send failed", self.name, self.app or "the node")
                self._failed(f"{type(exc).__name__}: {exc}"[:200])
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MOST)
                continue
            with self._cond:
                self._sent += len(batch)
                if self._state == "down":
                    log.info("drain %s of %s is up again", self.name, self.app or "the node")
                self._state, self._error, self._error_at = "up", None, None
                self._cond.notify_all()
            batch = []
            backoff = BACKOFF_FIRST

    def _failed(self, error: str) -> None:
        with self._cond:
            if self._state != "down":
                log.warning("drain %s of %s is down: %s", self.name, self.app or "the node", error)
            self._state, self._error = "down", error
            self._error_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self._cond.notify_all()

    def _trimmed(self, batch: list[LogEvent]) -> list[LogEvent]:
        """The retried batch counts against the capacity too: while the drain stays down, lines
        that waited longest give way to newer ones."""
        with self._cond:
            held = self._bytes + sum(len(e.line) + OVERHEAD for e in batch)
            cut = 0
            while held > self._capacity and cut < len(batch):
                held -= len(batch[cut].line) + OVERHEAD
                cut += 1
            self._dropped += cut
            return batch[cut:]

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
            return
        with self._cond:
            if not self._closed:
                self._cond.wait(seconds)
