"""The node's drains in one place: which shippers run (app drains from the store, node drains from config) and where each line goes."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from fence.drains.frame import LogEvent
from fence.drains.models import DrainHealth, DrainRecord
from fence.drains.senders import Sender, sender_for
from fence.drains.shipper import DrainShipper
from fence.drains.urls import parse_drain_url
from fence.errors import FenceError

log = logging.getLogger("fence.drains")

MAX_LINE = 8192  # characters of one line a drain gets; longer lines are cut (the engine's log keeps them)
SEND_TIMEOUT = 5.0  # seconds a connect or a write to a drain may take

LineCallback = Callable[[str], None]
SenderFactory = Callable[..., Sender]


class DrainSource(Protocol):
    """What the hub reads its drains from (the state store and the config store)."""

    def drains(self) -> list[DrainRecord]:
        """Every app's drains."""

    def node_drains(self) -> Sequence[str]:
        """The node-wide drain URLs (``logs/drains``)."""

    def buffer_bytes(self) -> int:
        """Each drain's buffer, in bytes (``logs/drain_buffer``)."""

    def ca_file(self) -> str | None:
        """CAs to trust for TLS drains (``logs/ca_file``), ``None``: the system's."""

    def loopback_ok(self) -> bool:
        """Whether apps' drains may reach the node's own addresses (``logs/drain_loopback``)."""


class DrainHub:
    """Runs one shipper per drain and fans each line out to its app's drains and the node's.

    ``emit`` and the callbacks of ``tap`` never block: each shipper only buffers. ``sync``
    brings the shippers in line with the store and config (a drain whose URL changed gets a
    new shipper; its counts start again).

    Args:
        source: where the drains are listed.
        hostname: this node's name in the lines (default: the host's name).
        make_sender: builds a transport (tests: a fake).
    """

    def __init__(self, *, source: DrainSource, hostname: str | None = None,
                 make_sender: SenderFactory = sender_for) -> None:
        self._source = source
        self._hostname = hostname or socket.gethostname()
        self._make_sender = make_sender
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one sync at a time (the taps' pass, an add, a staging's start)
        # (app or None, name) → shipper; replaced whole on change, so emit reads it without the lock
        self._shippers: dict[tuple[str | None, str], tuple[str, DrainShipper]] = {}
        self._by_app: dict[str | None, tuple[DrainShipper, ...]] = {}
        self._loopback: bool | None = None  # logs/drain_loopback as the shippers were made

    def sync(self) -> None:
        """Start shippers for new drains, stop those of deleted ones (after a short flush)."""
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
        wanted: dict[tuple[str | None, str], str] = {(r.app, r.name): r.url for r in self._source.drains()}
        for index, url in enumerate(self._source.node_drains(), start=1):
            wanted[(None, f"node-{index}")] = url
        capacity = self._source.buffer_bytes()
        loopback = self._source.loopback_ok()
        if self._loopback is not None and loopback != self._loopback:
            self._shippers_reset()
        self._loopback = loopback
        with self._lock:
            old = self._shippers
            keep = {key: old[key] for key in wanted if key in old and old[key][0] == wanted[key]}
            stop = [shipper for key, (url, shipper) in old.items() if keep.get(key, (None, None))[1] is not shipper]
            fresh = {key: (url, self._shipper(key, url, capacity, loopback)) for key, url in wanted.items()
                     if key not in keep}
            self._shippers = {**keep, **{k: v for k, v in fresh.items() if v[1] is not None}}  # type: ignore[misc]
            by_app: dict[str | None, list[DrainShipper]] = {}
            for (app, _), (_, shipper) in self._shippers.items():
                by_app.setdefault(app, []).append(shipper)
            self._by_app = {app: tuple(shippers) for app, shippers in by_app.items()}
        for shipper in stop:
            shipper.close(flush=1.0)

    def _shippers_reset(self) -> None:
        """Stop every shipper (``logs/drain_loopback`` changed: each gets its sender again)."""
        with self._lock:
            old, self._shippers, self._by_app = self._shippers, {}, {}
        for _, shipper in old.values():
            shipper.close(flush=1.0)

    def _shipper(self, key: tuple[str | None, str], url: str, capacity: int, loopback: bool) -> DrainShipper | None:
        app, name = key
        try:
            parsed = parse_drain_url(url, what=f"drain {name!r}")
        except FenceError as exc:  # a hand-edited config file: said in the log, the rest ships on
            log.warning("drain %s of %s not started: %s", name, app or "the node", exc.message)
            return None
        sender = self._make_sender(parsed, hostname=self._hostname, timeout=SEND_TIMEOUT,
                                   ca_file=self._source.ca_file(), own_host=app is None or loopback)
        return DrainShipper(name=name, app=app, url=parsed.shown, sender=sender, capacity=capacity)

    def any(self) -> bool:
        """Whether any drain is configured (an app's or a node-wide one)."""
        return bool(self._by_app)

    def wants(self, app: str) -> bool:
        """Whether any drain takes this app's lines (its own, or a node-wide one)."""
        by_app = self._by_app
        return bool(by_app.get(app) or by_app.get(None))

    def emit(self, event: LogEvent) -> None:
        """Give one line to the app's drains and the node's; never blocks."""
        by_app = self._by_app
        targets = by_app.get(event.app, ()) + by_app.get(None, ())
        if not targets:
            return
        if len(event.line) > MAX_LINE:
            event = LogEvent(app=event.app, process=event.process, instance=event.instance, release=event.release,
                             stream=event.stream, line=event.line[:MAX_LINE], at=event.at)
        for shipper in targets:
            shipper.put(event)

    def tap(self, *, app: str, process: str, release: int | None = None,
            instance: int | None = None, stream: str = "stdout", fresh: bool = False) -> LineCallback:
        """A callback that sends each line it is given to the drains (staging, release and cron
        output: ``fence.logfile.LogTap``); drains added meanwhile get the lines that follow.

        ``fresh=True`` syncs the hub first (a staging's or a release phase's start), so a node
        drain configured a moment ago (``logs/drains``, otherwise read by the taps' pass every
        few seconds) gets this output from its first line.
        """
        if fresh:
            self.sync()

        def line(text: str) -> None:
            self.emit(LogEvent(app=app, process=process, instance=instance, release=release, stream=stream,
                               line=text, at=time.time()))
        return line

    def health(self, app: str | None = None) -> list[DrainHealth]:
        """Every drain's health (only ``app``'s own when given), node-wide drains last."""
        with self._lock:
            shippers = [s for _, s in self._shippers.values()]
        found = [s.health() for s in shippers if app is None or s.app == app]
        return sorted(found, key=lambda h: (h.app is None, h.app or "", h.name))

    def drops(self) -> dict[str, int]:
        """Lines dropped per drain (``APP/NAME``, ``node/NAME``): for a metrics collector."""
        return {f"{h.app or 'node'}/{h.name}": h.dropped for h in self.health()}

    def close(self) -> None:
        """Stop every shipper, giving each a moment to send what it holds."""
        with self._lock:
            shippers = [s for _, s in self._shippers.values()]
            self._shippers, self._by_app = {}, {}
        for shipper in shippers:
            shipper.close(flush=1.0)
