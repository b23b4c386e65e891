"""Reads each running instance's output from the engine (two follow streams: stdout, stderr) into the drains."""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable

from fence import labels
from fence.backend.base import ContainerBackend, LogLines
from fence.drains.frame import LogEvent
from fence.drains.hub import DrainHub
from fence.errors import FenceError
from fence.models import WEB_PROCESS, ContainerInfo

log = logging.getLogger("fence.drains")

PASS_SECONDS = 2.0  # how often running instances are listed (and the node's drain config read)
# A follow that brought nothing for this long is opened again from its last line's time: the
# 20.10 engine's json-file follower can stall for good when the file rotates under a slow reader
# (seen here after a 20 MB flood: later lines never came); reopening costs one engine call.
REFOLLOW_SECONDS = 10.0


class InstanceTaps:
    """Follows the output of every running instance of an app that has drains, from its own thread.

    Each pass lists the node's running instance containers in one engine call. A container
    first seen in a later pass is new: its output is read from its start, so its first lines
    are not lost. Containers already running when the daemon started are read from then on
    (their older lines predate this daemon). A tap ends when its container stops; the taps of
    an app whose last drain went are closed.

    Args:
        backend: the engine.
        hub: the drains.
        node_id: this node's id (its containers' label).
        every: seconds between passes.
        refollow: seconds of silence after which a follow is opened again (``REFOLLOW_SECONDS``).
        clock: wall time (``since`` of a follow).
    """

    def __init__(self, *, backend: ContainerBackend, hub: DrainHub, node_id: str, every: float = PASS_SECONDS,
                 refollow: float = REFOLLOW_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self._backend, self._hub, self._node_id = backend, hub, node_id
        self._every, self._refollow, self._clock = every, refollow, clock
        self._taps: dict[tuple[str, str], _Tap] = {}  # (container id, stream) → its reader
        self._seen: set[str] = set()
        self._first = True
        self._skipped_at: float | None = None  # the last pass skipped for want of drains
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_in_background(self) -> None:
        """Start the passes in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="drain-taps", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.pass_once()
            except FenceError as exc:
                log.warning("drain taps: %s", exc.message)
            except Exception:
                log.exception("drain taps pass failed")
            self._stop.wait(self._every)

    def pass_once(self) -> None:
        """Sync the hub with the config, then tap new running instances of apps with drains."""
        self._hub.sync()
        with self._lock:
            if not self._taps and not self._hub.any():
                # No drain and nothing tapped: no engine call (an idle node pays nothing). When a
                # drain appears, every running container is read from this skipped pass on (a
                # container started since then from its start, as a new one is).
                self._skipped_at, self._seen = self._clock(), set()
                return
        infos = self._backend.list_info({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE})
        running = {info.id: info for info in infos if info.running}
        with self._lock:
            for key, tap in list(self._taps.items()):
                info = running.get(key[0])
                if tap.ended or info is None or not self._hub.wants(info.labels.get(labels.APP, "")):
                    tap.close()
                    del self._taps[key]
                elif tap.quiet_for() > self._refollow:
                    tap.refollow()
            now = self._clock() if self._skipped_at is None else self._skipped_at
            for cid, info in running.items():
                new = not self._first and self._skipped_at is None and cid not in self._seen
                self._seen.add(cid)
                if (cid, "stdout") in self._taps or not self._hub.wants(info.labels.get(labels.APP, "")):
                    continue
                for stream in ("stdout", "stderr"):
                    self._taps[(cid, stream)] = _Tap(backend=self._backend, hub=self._hub, info=info, stream=stream,
                                                     since=None if new else now)
            self._seen &= set(running)
            self._first, self._skipped_at = False, None

    def close(self) -> None:
        """Stop the passes and every follow."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for tap in self._taps.values():
                tap.close()
            self._taps.clear()


class _Tap:
    """One stream of one container, followed from its own thread (reopened on ``refollow``)."""

    def __init__(self, *, backend: ContainerBackend, hub: DrainHub, info: ContainerInfo, stream: str,
                 since: float | None) -> None:
        self._backend, self._hub, self._info, self._stream = backend, hub, info, stream
        self._since = since
        self._again_from_last = False  # the next follow starts at the last line given: skip up to it
        self._lines: LogLines | None = None
        self._lock = threading.Lock()
        self._again = False
        self._closed = False
        self.ended = False
        self._active = time.monotonic()
        found = info.labels
        self._app = found.get(labels.APP, "")
        self._process = found.get(labels.PROCESS, WEB_PROCESS)
        self._index = _int(found.get(labels.INSTANCE))
        self._release = _int(found.get(labels.RELEASE)) or None
        threading.Thread(target=self._run, name=f"tap-{info.id[:12]}-{stream}", daemon=True).start()

    def quiet_for(self) -> float:
        """Seconds since the last line (or since the follow was opened)."""
        return time.monotonic() - self._active

    def refollow(self) -> None:
        """Open the follow again from the last line's time."""
        with self._lock:
            self._again = True
            lines, self._active = self._lines, time.monotonic()
        if lines is not None:
            lines.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            lines = self._lines
        if lines is not None:
            lines.close()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    self._again = False
                try:
                    lines = self._backend.lookup(self._info.id).output(stream=self._stream, follow=True,
                                                                       since=self._since, timestamps=True)
                except FenceError as exc:
                    log.info("cannot follow %s of container %s: %s", self._stream, self._info.id[:12], exc.message)
                    return
                with self._lock:
                    self._lines = lines
                    if self._closed or self._again:
                        lines.close()
                self._read(lines)
                with self._lock:
                    if not self._again or self._closed:
                        return  # the container stopped (its follow ended), or the tap was closed
        except FenceError as exc:
            log.info("following %s of container %s ended: %s", self._stream, self._info.id[:12], exc.message)
        except Exception:
            log.exception("following %s of container %s failed", self._stream, self._info.id[:12])
        finally:
            self.ended = True

    def _read(self, lines: LogLines) -> None:
        start = last = self._since if self._again_from_last else None
        emit = self._hub.emit
        for raw in lines:
            stamp, _, text = raw.partition(" ")
            at = _epoch(stamp)
            if (start is not None and at <= start) or (last is not None and at < last):
                # A line given already: by the follow before this one, or again by this one (the
                # 20.10 follower repeats lines across a rotation; a stream's stamps only grow).
                continue
            last = at
            self._active = time.monotonic()
            emit(LogEvent(app=self._app, process=self._process, instance=self._index, release=self._release,
                          stream=self._stream, line=text, at=at))
        if last is not None:
            self._since = last
        self._again_from_last = True


def _int(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


_second: tuple[str, int] = ("", 0)  # the last whole second parsed, replaced whole (threads share it)


def _epoch(stamp: str) -> float:
    """``2026-12-02T00:57:31.970356123Z`` as seconds since the epoch (now, if it is not such a stamp)."""
    global _second
    head, cached = stamp[:19], _second
    try:
        if cached[0] != head:
            cached = _second = (head, calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")))
        fraction = stamp[20:-1] if len(stamp) > 20 and stamp[19] == "." else ""
        return cached[1] + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return time.time()
