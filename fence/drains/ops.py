"""What ``fence drain add|list|delete`` and a manifest's ``drain:`` do to an app's drains, and where the hub reads them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from fence.config import ConfigStore
from fence.drains.hub import DrainHub
from fence.drains.models import DrainHealth, DrainRecord
from fence.drains.senders import own_address
from fence.drains.taps import InstanceTaps
from fence.drains.urls import MAX_APP_DRAINS, check_drain_name, parse_drain_url
from fence.errors import AppNotFound, UsageError
from fence.rules import check_app_name
from fence.store import StateStore


class StoredDrains:
    """The hub's ``DrainSource``: app drains from the state store, the rest from config."""

    def __init__(self, *, store: StateStore, config: ConfigStore) -> None:
        self._store, self._config = store, config

    def drains(self) -> list[DrainRecord]:
        return self._store.drains()

    def node_drains(self) -> Sequence[str]:
        return list(self._config.fence("logs/drains") or [])

    def buffer_bytes(self) -> int:
        return int(self._config.fence("logs/drain_buffer")) * 1024 * 1024

    def ca_file(self) -> str | None:
        return str(self._config.fence("logs/ca_file") or "") or None

    def loopback_ok(self) -> bool:
        return bool(self._config.fence("logs/drain_loopback"))


class DrainOps:
    """An app's drains: checked, stored, and the hub told at once.

    Args:
        store: the state store (the ``drains`` table).
        hub: the running shippers.
        taps: the instance readers, started by ``start``.
        loopback_ok: whether drains may point at the node itself (``logs/drain_loopback``).
    """

    def __init__(self, *, store: StateStore, hub: DrainHub, taps: InstanceTaps | None = None,
                 loopback_ok: Callable[[], bool] = lambda: False) -> None:
        self._store, self.hub, self._taps = store, hub, taps
        self._loopback_ok = loopback_ok

    def start(self) -> None:
        """Start reading running instances into the drains (and the node's drain config)."""
        self.hub.sync()
        if self._taps is not None:
            self._taps.run_in_background()

    def close(self) -> None:
        """Stop the taps and the shippers (each gets a moment to send what it holds)."""
        if self._taps is not None:
            self._taps.close()
        self.hub.close()

    def add(self, app: str, name: str, url: str, *, origin: str = "cli") -> DrainRecord:
        """Add (or re-point) a drain of an app.

        Raises:
            InvalidName: a malformed app or drain name.
            UsageError: a bad URL, or the app has ``MAX_APP_DRAINS`` drains already.
            AppNotFound: no such app.
        """
        check_app_name(app)
        check_drain_name(name)
        parsed = parse_drain_url(url, what=f"drain {name!r}")
        if (parsed.host == "localhost" or own_address(parsed.host)) and not self._loopback_ok():
            raise UsageError(detail=f"drain {name!r}: {parsed.host} is this node itself; an app's drain may "
                                    "not point there unless the admin sets logs/drain_loopback")
        if self._store.app(app) is None:
            raise AppNotFound(app=app)
        have = {d.name for d in self._store.drains(app)}
        if name not in have and len(have) >= MAX_APP_DRAINS:
            raise UsageError(detail=f"drain {name!r}: {app} has {len(have)} drains, the most an app may have")
        record = DrainRecord(app=app, name=name, url=url, origin=origin,
                             created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        self._store.put_drain(record)
        self.hub.sync()
        return record

    def from_manifest(self, app: str, drains: Mapping[str, str]) -> None:
        """Add or re-point the drains a manifest's ``drain:`` names (others are left alone)."""
        for name, url in drains.items():
            current = {d.name: d.url for d in self._store.drains(app)}
            if current.get(name) != url:
                self.add(app, name, url, origin="manifest")

    def delete(self, app: str, name: str) -> None:
        """Remove a drain of an app.

        Raises:
            InvalidName: a malformed app or drain name.
            AppNotFound: no such app.
            UsageError: the app has no drain of that name.
        """
        check_app_name(app)
        check_drain_name(name)
        if self._store.app(app) is None:
            raise AppNotFound(app=app)
        if not self._store.delete_drain(app, name):
            raise UsageError(detail=f"{app} has no drain named {name!r} (fence drain list {app})")
        self.hub.sync()

    def list(self, app: str) -> list[DrainHealth]:
        """An app's drains with their health, then the node-wide drains its lines also go to.

        Raises:
            InvalidName: a malformed app name.
            AppNotFound: no such app.
        """
        check_app_name(app)
        if self._store.app(app) is None:
            raise AppNotFound(app=app)
        health = {h.name: h for h in self.hub.health(app)}
        own = [health.get(d.name) or DrainHealth(name=d.name, app=app, url=parse_drain_url(d.url).shown,
                                                 state="idle") for d in self._store.drains(app)]
        return own + [h for h in self.hub.health() if h.app is None]

    def health(self) -> list[DrainHealth]:
        """Every drain's health (``kato status``)."""
        return self.hub.health()
