"""When the reconciler passes: a thread that runs one pass at a time, at once after a wake or an engine event, seldom on a steady node."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fence.backend.base import ContainerEvents
from fence.errors import FenceError

log = logging.getLogger("fence.instances")

# Seconds between passes on a steady node (every instance running and routed, nothing starting,
# stopping or waiting for a restart) while the engine's event stream is open: a crash or a
# removal wakes the reconciler at once, a desired-state change does too (``wake``). What only a
# pass notices (a node config change, a crash count healing with time) waits up to this long.
STEADY_INTERVAL = 5.0


class PassLoop:
    """Runs ``tick`` from its own thread: every ``interval`` seconds, every ``steady_interval``
    while ``steady()`` says the last pass found nothing in motion and the engine's events are
    followed, and at once after ``wake`` or any event of ``events()``'s stream.

    Args:
        tick: one pass; a ``FenceError`` is logged, any other exception too (and the next pass
            comes at ``interval``): nothing ends the loop but ``stop``.
        name: the pass thread's name (and its log lines').
        steady: whether the last pass left the node steady (default: never).
        events: opens the engine's event stream of the node's instances (default: none followed).
        on_error: told of a pass that failed with a bug (the manager is then not steady).
    """

    def __init__(self, *, tick: Callable[[], None], name: str = "reconciler",
                 steady: Callable[[], bool] = lambda: False, events: Callable[[], ContainerEvents] | None = None,
                 on_error: Callable[[], None] = lambda: None) -> None:
        self._tick, self._name, self._steady, self._on_error = tick, name, steady, on_error
        self._open_events = events
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: ContainerEvents | None = None  # the engine's event stream while it is open

    def start(self, interval: float = 0.5, steady_interval: float = STEADY_INTERVAL) -> None:
        """Start the pass thread and the event follower."""
        def loop() -> None:
            while not self._stop.is_set():
                # Cleared before the pass, not after the wait: a wake during the pass (an
                # instance found ready, a job done) brings the next pass at once, never a whole
                # interval later.
                self._wake.clear()
                try:
                    self._tick()
                except FenceError as exc:
                    log.warning("%s: pass failed: %s", self._name, exc.message)
                except Exception:  # a bug must not end the loop that keeps apps running
                    log.exception("%s: pass failed", self._name)
                    self._on_error()
                self._wake.wait(steady_interval if self._steady() and self._events is not None else interval)
        self._thread = threading.Thread(target=loop, name=self._name, daemon=True)
        self._thread.start()
        if self._open_events is not None:
            threading.Thread(target=self.follow_events, name=f"{self._name}-events", daemon=True).start()

    def follow_events(self, retry: float = 0.5) -> None:
        """Until ``stop``: wake the loop at each engine event of this node's instances (a crash is
        seen at once however seldom a steady node passes). While the stream is down (the engine
        is away) the loop passes every ``interval``; the stream is opened again after ``retry``
        seconds, doubling to 10 s."""
        assert self._open_events is not None
        wait = retry
        while not self._stop.is_set():
            try:
                stream = self._open_events()
            except FenceError as exc:
                log.debug("engine events unavailable: %s", exc.message)
                self._stop.wait(wait)
                wait = min(10.0, wait * 2)
                continue
            except Exception:  # a backend without events: the loop keeps its interval
                log.exception("engine events cannot be followed")
                return
            self._events, wait = stream, retry
            self.wake()  # what happened while no stream was open
            try:
                for _ in stream:
                    self.wake()
            except FenceError as exc:
                log.debug("engine events ended: %s", exc.message)
            except Exception:  # a bug must not end the watch: the loop falls back to its interval
                log.exception("engine events failed")
            finally:
                self._events = None
                stream.close()
                self.wake()
            self._stop.wait(wait)

    @property
    def following(self) -> bool:
        """Whether the engine's event stream is open now."""
        return self._events is not None

    @property
    def stopping(self) -> threading.Event:
        """Set once ``stop`` is called (other watchers of the manager end with it)."""
        return self._stop

    def wake(self) -> None:
        """Pass now."""
        self._wake.set()

    def stop(self) -> None:
        """End the loop and the event follower; waits for a pass under way."""
        self._stop.set()
        self._wake.set()
        events = self._events
        if events is not None:
            events.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
