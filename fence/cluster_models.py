"""Frozen dataclasses of the cluster that cross modules: swarm state, nodes, join tokens, engine checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# Swarm's LocalNodeState values.
SWARM_INACTIVE = "inactive"
SWARM_ACTIVE = "active"
AVAILABILITIES = ("active", "pause", "drain")


@dataclass(frozen=True)
class SwarmState:
    """This engine's place in a swarm.

    Attributes:
        state: Swarm's local node state: ``inactive``, ``pending``, ``active``, ``error``, ``locked``.
        node_id: this engine's swarm node id ("" when inactive).
        manager: whether this engine is a manager (it can list and update nodes).
        cluster_id: the swarm's id ("" when inactive or not a manager).
        manager_addresses: ``host:port`` of the managers this engine knows.
    """

    state: str
    node_id: str = ""
    manager: bool = False
    cluster_id: str = ""
    manager_addresses: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.state == SWARM_ACTIVE


@dataclass(frozen=True)
class JoinTokens:
    """The secrets a new node joins with, as a manager or as a worker."""

    worker: str
    manager: str


@dataclass(frozen=True)
class EngineChecks:
    """What a cluster node's engine must enforce because a 20.10 service spec cannot carry it.

    Attributes:
        version: the engine's version.
        userns_remap: user-namespace remapping is on (container root is not host root).
        no_new_privileges: a container started WITHOUT asking for it still runs with
            ``NoNewPrivs: 1`` (the engine's daemon-wide ``no-new-privileges``), read from a probe
            container's ``/proc/self/status``.
    """

    version: str
    userns_remap: bool
    no_new_privileges: bool

    @property
    def problems(self) -> tuple[str, ...]:
        """One line per failed check, saying how to fix it."""
        found = []
        if not self.userns_remap:
            found.append("user-namespace remapping is off on this engine (start dockerd with "
                         "--userns-remap=default)")
        if not self.no_new_privileges:
            found.append("the engine does not set no-new-privileges daemon-wide, and Swarm services "
                         "on Engine 20.10 cannot ask for it (start dockerd with --no-new-privileges, "
                         'or set "no-new-privileges": true in daemon.json)')
        return tuple(found)


@dataclass(frozen=True)
class ClusterNode:
    """One node of the swarm, as a manager sees it.

    Attributes:
        id: the swarm node id.
        hostname: the node's host name.
        role: ``manager`` or ``worker``.
        state: ``ready``, ``down``, ``disconnected`` or ``unknown``.
        availability: ``active``, ``pause`` or ``drain``.
        address: the address the node reported.
        engine_version: its engine's version.
        leader: whether it is the managers' leader.
        labels: the node's swarm labels.
        tasks: running tasks on it.
    """

    id: str
    hostname: str
    role: str
    state: str
    availability: str
    address: str = ""
    engine_version: str = ""
    leader: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    tasks: int = 0
