"""Removing finished containers in the background: what is done with a container (its droplet
out, its image committed) need not wait the few hundred ms the engine takes to remove it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from fence.backend.base import Container
from fence.errors import FenceError

log = logging.getLogger("fence.reaper")


class ContainerReaper:
    """Destroys containers on threads of their own; ``wait`` joins them (daemon stop).

    A removal that fails is logged; the daemon's start-up recovery removes what is left (every
    container fence makes carries its node and role labels).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._listeners: list[Callable[[], None]] = []

    @property
    def pending(self) -> int:
        """Removals started and not yet done."""
        with self._lock:
            return len(self._threads)

    def on_removed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every removal (done or failed)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_later(self, container: Container, what: str) -> None:
        """Destroy ``container`` in the background; ``what`` names it in a failure's log line."""
        def remove() -> None:
            try:
                container.destroy()
            except FenceError as exc:
                log.warning("could not remove a %s container %s: %s", what, container.id[:12], exc.message)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())
                    listeners = list(self._listeners)
                for listener in listeners:
                    listener()
        thread = threading.Thread(target=remove, name=f"{what}-remove", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def wait(self, timeout: float = 60.0) -> None:
        """Wait until the removals started so far are done (or ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._threads)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
