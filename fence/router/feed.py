"""Feeds the reconciler's routes to the node's router: only what changed, and a periodic re-check."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from fence.config import ConfigStore
from fence.errors import FenceError
from fence.models import Route

log = logging.getLogger("fence.router")

RECHECK_SECONDS = 10.0


class AppliesRoutes(Protocol):
    """A router that serves exactly the routes it is given (``fence.router.nginx.NginxRouter``)."""

    def apply(self, *, routes: Sequence[Route], port: int, domain: str, address: str,
              settle: bool = True) -> Sequence[Route]:
        """Render, check and load a config serving ``routes``; a no-op when it already serves it.

        ``settle=False``: on a reload, the old workers may take new connections a moment longer.

        Returns:
            The routes now served: ``routes`` without what the router had to leave out.

        Raises:
            FenceError: the config was refused (the previous one keeps serving).
        """

    def serving(self) -> bool:
        """Whether the router runs, serving the config it last applied."""

    def precheck(self, *, routes: Sequence[Route], port: int, domain: str, address: str) -> None:
        """Check (not load) the config for these routes now, so that ``apply`` of the same
        routes soon after skips the check; a refused one is left for ``apply`` to report."""


class RouteFeed:
    """Routes changed → render → check → apply, once per change.

    The reconciler publishes its routes after every pass; the router is asked only when the
    routes or ``router/port``, ``router/domain`` or ``router/bind_address`` changed, and again
    every ``recheck`` seconds even when nothing did. The re-check is what brings back a router
    that died under a running daemon (nginx killed by an admin, the OOM killer, a crash, or
    stopped by another fence process): the router restarts itself when asked and not running,
    and skips the reload when its running config is the same text. A refused config is retried
    on every publish (a port freed later is taken) but logged once until it changes.

    A change that only adds upstreams to apps that already had some (a scale-up, a new release's
    instance beside the old one) does not wait for nginx's old workers to stop taking
    connections (nginx tells them 100 ms after its new workers start): whatever an old worker
    answers meanwhile is still right, from an instance that keeps running.

    Args:
        router: the node's router.
        config: node config (read at every publish; ``kato config set`` needs no restart).
        recheck: seconds between re-checks of unchanged routes.
        clock: monotonic seconds (a fake in tests).
    """

    def __init__(self, *, router: AppliesRoutes, config: ConfigStore, recheck: float = RECHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._router = router
        self._config = config
        self._recheck = recheck
        self._clock = clock
        self._applied: object = None
        self._refused: object = None
        self._checked = float("-inf")
        self._served: tuple[Route, ...] | None = None  # None: nothing applied by this feed yet
        self._ahead: tuple | None = None  # the routes (and settings) to precheck next
        self._ahead_busy = False  # a precheck thread runs
        self._ahead_lock = threading.Lock()

    def publish(self, routes: Sequence[Route]) -> Sequence[Route]:
        """Hand the routes to the router if they (or its settings) changed or a re-check is due.

        Args:
            routes: every app the node routes, with its healthy upstreams.

        Returns:
            The routes the router serves now (what it could not serve left out).

        Raises:
            FenceError: the router refused the config (logged once per config); it serves
                ``served()``.
        """
        key = self._key(routes)
        _, port, domain, address = key
        now = self._clock()
        if key == self._applied and now - self._checked < self._recheck and self._served is not None:
            return self._served
        self._checked = now
        previous = self._applied
        settle = not (isinstance(previous, tuple) and previous[1:] == key[1:] and _widens(previous[0], key[0]))
        try:
            served = tuple(self._router.apply(routes=routes, port=port, domain=domain, address=address,
                                              settle=settle))
        except FenceError as exc:
            if key != self._refused:
                log.error("router refused its config: %s", exc.message)
                self._refused = key
            raise
        self._applied, self._refused, self._served = key, None, served
        return served

    def anticipate(self, routes: Sequence[Route]) -> None:
        """Routes a coming publish will likely carry (an instance booting, counted as ready): the
        router checks their config now, off the pass, so that the publish that routes the
        instance does not wait for ``nginx -t``. Returns at once; of several calls while a
        check runs only the last is checked."""
        key = self._key(routes)
        if key == self._applied:
            return
        with self._ahead_lock:
            fresh = self._ahead is None and not self._ahead_busy
            self._ahead = key
            if fresh:
                self._ahead_busy = True
                threading.Thread(target=self._check_ahead, name="router-precheck", daemon=True).start()

    def _key(self, routes: Sequence[Route]) -> tuple[tuple[Route, ...], int, str, str]:
        """The routes with the router keys they are served with (read at every call)."""
        return (tuple(routes), int(self._config.fence("router/port")), str(self._config.fence("router/domain")),
                str(self._config.fence("router/bind_address")))

    def _check_ahead(self) -> None:
        while True:
            with self._ahead_lock:
                key, self._ahead = self._ahead, None
                if key is None:
                    self._ahead_busy = False
                    return
            routes, port, domain, address = key
            try:
                self._router.precheck(routes=routes, port=port, domain=domain, address=address)
            except FenceError as exc:  # the publish will say it again, once
                log.debug("router precheck: %s", exc.message)
            except Exception:
                log.exception("router precheck failed")

    def served(self) -> Sequence[Route] | None:
        """The routes the router serves now, as far as this feed knows.

        Returns:
            Those it last applied while the router runs (after a refusal the previous config
            keeps serving), none when the router is down, and ``None`` when the router runs a
            config this feed did not apply (one from before the daemon restarted): it may
            point at any instance.
        """
        if not self._router.serving():
            return ()
        return self._served


def _widens(old: Sequence[Route], new: Sequence[Route]) -> bool:
    """Whether ``new`` only adds upstreams to apps that had some: same apps and hosts, each old
    upstream kept, no app going from none to some (its old answer, 503, would be wrong)."""
    before = {route.app: route for route in old}
    if set(before) != {route.app for route in new}:
        return False
    for route in new:
        was = before[route.app]
        if was.hosts != route.hosts or not set(was.upstreams) <= set(route.upstreams):
            return False
        if route.upstreams and not was.upstreams:
            return False
    return True
