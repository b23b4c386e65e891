"""Feeds the reconciler's routes to the node's router: only what changed, and a periodic re-check."""

from __future__ import annotations

import logging
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

    def apply(self, *, routes: Sequence[Route], port: int, domain: str, address: str) -> None:
        """Render, check and load a config serving ``routes``; a no-op when it already serves it.

        Raises:
            FenceError: the config was refused (the previous one keeps serving).
        """


class RouteFeed:
    """Routes changed → render → check → apply, once per change.

    The reconciler publishes its routes after every pass; the router is asked only when the
    routes or ``router/port``, ``router/domain`` or ``router/bind_address`` changed, and again
    every ``recheck`` seconds even when nothing did. The re-check is what brings back a router
    that died under a running daemon (nginx killed by an admin, the OOM killer, a crash, or
    stopped by another fence process): the router restarts itself when asked and not running,
    and skips the reload when its running config is the same text. A refused config is retried
    on every publish (a port freed later is taken) but logged once until it changes.

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

    def publish(self, routes: Sequence[Route]) -> None:
        """Hand the routes to the router if they (or its settings) changed or a re-check is due.

        Args:
            routes: every app the node routes, with its healthy upstreams.

        Raises:
            FenceError: the router refused the config (logged once per config).
        """
        port = int(self._config.fence("router/port"))
        domain = str(self._config.fence("router/domain"))
        address = str(self._config.fence("router/bind_address"))
        key = (tuple(routes), port, domain, address)
        now = self._clock()
        if key == self._applied and now - self._checked < self._recheck:
            return
        self._checked = now
        try:
            self._router.apply(routes=routes, port=port, domain=domain, address=address)
        except FenceError as exc:
            if key != self._refused:
                log.error("router refused its config: %s", exc.message)
                self._refused = key
            raise
        self._applied, self._refused = key, None
