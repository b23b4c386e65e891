"""Reads each running instance's output from the engine (two follow streams: stdout, stderr) into the drains."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend, LogLines
from fence.drains.frame import LogEvent
from fence.drains.hub import DrainHub
from fence.errors import FenceError
from fence.models import WEB_PROCESS, ContainerInfo

log = logging.getLogger("fence.drains")

PASS_SECONDS = 2.0  # how often running instances are listed (and the node's drain config read)


class InstanceTaps:
    """Follows the output of every running instance of an app that has drains, from its own thread.

    Each pass lists the node's running instance containers in one engine call. A container
    first seen in a later pass is new: its output is read from its start, so its first lines
    are not lost. Containers already running when the daemon started are read from then on
    (their older lines were shipped by the daemon before, or predate the drains). A tap ends
    when its container stops; the taps of an app whose last drain went are closed.

    Args:
        backend: the engine.
        hub: the drains.
        node_id: this node's id (its containers' label).
        every: seconds between passes.
        clock: wall time (``since`` of a follow).
    """

    def __init__(self, *, backend: ContainerBackend, hub: DrainHub, node_id: str, every: float = PASS_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._backend, self._hub, self._node_id = backend, hub, node_id
        self._every, self._clock = every, clock
        self._taps: dict[tuple[str, str], LogLines] = {}  # (container id, stream) → its follow
        self._seen: set[str] = set()
        self._first = True
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
        infos = self._backend.list_info({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE})
        running = {info.id: info for info in infos if info.running}
        with self._lock:
            for key, lines in list(self._taps.items()):
                info = running.get(key[0])
                if lines.closed or info is None or not self._hub.wants(info.labels.get(labels.APP, "")):
                    lines.close()
                    del self._taps[key]
            now = self._clock()
            for cid, info in running.items():
                new = not self._first and cid not in self._seen
                self._seen.add(cid)
                if (cid, "stdout") in self._taps or not self._hub.wants(info.labels.get(labels.APP, "")):
                    continue
                for stream in ("stdout", "stderr"):
                    self._start(info, stream, since=None if new else now)
            self._seen &= set(running)
            self._first = False

    def _start(self, info: ContainerInfo, stream: str, *, since: float | None) -> None:
        try:
            lines = self._backend.lookup(info.id).output(stream=stream, follow=True, since=since)
        except FenceError as exc:
            log.info("cannot follow %s of container %s: %s", stream, info.id[:12], exc.message)
            return
        self._taps[(info.id, stream)] = lines
        found = info.labels
        app = found.get(labels.APP, "")
        emit = self._hub.emit

        def follow() -> None:
            try:
                index, release = int(found.get(labels.INSTANCE, "0")), int(found.get(labels.RELEASE, "0"))
                process = found.get(labels.PROCESS, WEB_PROCESS)
                for line in lines:
                    emit(LogEvent(app=app, process=process, instance=index, release=release or None,
                                  stream=stream, line=line, at=time.time()))
            except FenceError as exc:
                log.info("following %s of container %s ended: %s", stream, info.id[:12], exc.message)
            except Exception:
                log.exception("following %s of container %s failed", stream, info.id[:12])
            finally:
                lines.close()

        threading.Thread(target=follow, name=f"tap-{info.id[:12]}-{stream}", daemon=True).start()

    def close(self) -> None:
        """Stop the passes and every follow."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for lines in self._taps.values():
                lines.close()
            self._taps.clear()
