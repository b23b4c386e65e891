"""Each app's own bridge network: made when its first instance or task starts, removed with the app."""

# On Docker's default bridge every container could reach every other one, so an app could talk to
# another app's instances directly, past the router. On a network of its own an app's containers
# reach each other (instances of one app may talk) and nothing else fence runs: the engine drops
# traffic between two user-defined bridges, and fence's host firewall (fence.backend.firewall)
# drops what they send to the host.

from __future__ import annotations

import logging
import threading

from fence import labels
from fence.backend.base import ContainerBackend
from fence.errors import FenceError
from fence.models import NetworkSpec

log = logging.getLogger(__name__)


def network_name(node_id: str, app: str) -> str:
    """The name of an app's network on a node: ``fence-NODE-APP``."""
    return f"fence-{node_id}-{app}"


class AppNetworks:
    """Makes and removes the per-app networks of one node.

    Args:
        backend: the engine.
        node_id: this node's id (the networks' node label).
    """

    def __init__(self, *, backend: ContainerBackend, node_id: str) -> None:
        self._backend = backend
        self._node_id = node_id
        self._lock = threading.Lock()
        self._known: set[str] = set()  # apps whose network this process made or found
        self._making: dict[str, threading.Lock] = {}  # app → held while its network is made

    def ensure(self, app: str) -> str:
        """The app's network, made first if the engine does not have it.

        Args:
            app: the app's name.

        Returns:
            The network's name (what a ``ContainerSpec`` names as its network).

        Raises:
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused (e.g. no address pool left).
            UsageError: a network of that name exists that this node did not make.
        """
        name = network_name(self._node_id, app)
        with self._lock:
            if app in self._known:
                return name
            lock = self._making.setdefault(app, threading.Lock())
        # One creation per app at a time: the instances of a new app start in parallel, and two
        # creations racing in the engine can fail on the bridge name rather than find each other.
        with lock:
            with self._lock:
                if app in self._known:
                    return name
            self._backend.create_network(NetworkSpec(
                name=name, labels=labels.owned(self._node_id, labels.ROLE_NETWORK, app=app)))
            with self._lock:
                self._known.add(app)
                self._making.pop(app, None)
        return name

    def missing(self, app: str) -> bool:
        """Whether the app's network is gone (removed by hand or by gc since it was made);
        then the next ``ensure`` makes it again."""
        if self._backend.network_info(network_name(self._node_id, app)) is not None:
            return False
        with self._lock:
            self._known.discard(app)
        return True

    def remove(self, app: str) -> bool:
        """Remove the app's network (its containers are gone); a missing one is fine.

        Returns:
            Whether it is gone; ``False`` when a container still runs on it (logged: gc removes
            it later, once it is free).
        """
        with self._lock:
            self._known.discard(app)
        try:
            self._backend.remove_network(network_name(self._node_id, app))
        except FenceError as exc:
            log.warning("could not remove an app's network", extra={"app": app, "error": exc.message})
            return False
        return True
