"""The FakeBackend's networks: bridge networks in memory, with the engine's answers and refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
import uuid
from typing import Callable, Mapping

from fence.backend.firewall import bridge_interface
from fence.errors import EngineError, UsageError
from fence.labels import NODE
from fence.models import NetworkInfo, NetworkSpec

# network name → ids of the running containers on it (the backend knows its containers)
RunningOn = Callable[[str], tuple[str, ...]]


class FakeNetworks:
    """Networks by name; each gets the subnet ``10.250.N.0/24`` (N counts up), gateway ``.1``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._networks: dict[str, NetworkInfo] = {}
        self._numbers = itertools.count(1)

    def create(self, spec: NetworkSpec) -> NetworkInfo:
        """Make the network unless it exists; refuse one of that name another node made."""
        with self._lock:
            found = self._networks.get(spec.name)
            if found is None:
                number = next(self._numbers)
                found = self._networks[spec.name] = NetworkInfo(
                    id=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), name=spec.name,
                    labels=dict(spec.labels), bridge=bridge_interface(spec.name),
                    subnet=f"10.250.{number}.0/24", gateway=f"10.250.{number}.1")
        if found.labels.get(NODE) != spec.labels[NODE]:
            raise UsageError(detail=f"network {spec.name} exists but this node did not make it "
                                    "(remove it with `docker network rm` if it is stale)")
        return dataclasses.replace(found, labels=dict(found.labels))

    def info(self, name: str, running_on: RunningOn) -> NetworkInfo | None:
        """A network by name or id prefix, with its running containers."""
        with self._lock:
            found = self._networks.get(name) or next(
                (n for n in self._networks.values() if name and n.id.startswith(name)), None)
        if found is None:
            return None
        return dataclasses.replace(found, labels=dict(found.labels), containers=running_on(found.name))

    def list(self, labels: Mapping[str, str], running_on: RunningOn) -> list[NetworkInfo]:
        """Networks carrying all the labels."""
        with self._lock:
            names = list(self._networks)
        found = [n for n in (self.info(name, running_on) for name in names) if n is not None]
        return [n for n in found if all(n.labels.get(k) == v for k, v in labels.items())]

    def remove(self, name: str, running_on: RunningOn) -> None:
        """Remove a network; refused, as by the engine, while a container runs on it."""
        found = self.info(name, running_on)
        if found is None:
            return
        if found.containers:
            raise EngineError(action=f"removing network {name}",
                              detail=f"error while removing network: network {found.name} id {found.id} "
                                     "has active endpoints")
        with self._lock:
            self._networks.pop(found.name, None)

    def prefix(self, name: str) -> str | None:
        """The first three octets of a network's subnet (a container's address on it is PREFIX.N)."""
        with self._lock:
            found = self._networks.get(name)
        return None if found is None or found.subnet is None else found.subnet.rsplit(".", 1)[0]
