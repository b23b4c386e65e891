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


# --- instances as Swarm services (issue 17 Build 3) -------------------------------------------

# Task states Swarm reports (Task.Status.State) that end a task for good.
TASK_ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
TASK_FAILED = frozenset({"failed", "rejected"})


@dataclass(frozen=True)
class ServiceSpec:
    """One Swarm service of an app's process type and release, as the scheduler wants it.

    Attributes:
        name: the service's name (unique in the swarm).
        labels: the service's labels; its task containers carry the same ones.
        image: the image by digest (``registry/repo@sha256:…``), never a tag.
        user: ``uid[:gid]`` the processes run as (never root).
        command: argv, ``None`` for the image's.
        env: the environment.
        workdir: the working directory.
        limits: memory (swap held to the same only where the node has none), pids, nofile, log rotation.
        replicas: the task count.
        max_per_node: at most this many tasks on one node (0: no cap).
        container_port: the port published in host mode (0: none).
        published_port: the host port it is published on (0: one the engine picks).
        restart_delay: seconds Swarm waits before restarting a failed task.
        restart_attempts: restarts Swarm makes within ``restart_window`` before it gives up.
        restart_window: seconds over which ``restart_attempts`` counts.
    """

    name: str
    labels: Mapping[str, str]
    image: str
    user: str
    command: tuple[str, ...] | None
    env: Mapping[str, str]
    workdir: str
    limits: object  # fence.models.Limits (kept loose here: this module has no imports from models)
    replicas: int
    max_per_node: int = 0
    container_port: int = 0
    published_port: int = 0
    restart_delay: float = 5.0
    restart_attempts: int = 5
    restart_window: float = 120.0


@dataclass(frozen=True)
class TaskInfo:
    """One task of a service, as a manager sees it.

    Attributes:
        id: the task id.
        slot: its replica slot (1-based).
        node_id: the node it was placed on ("" before placement).
        node_address: that node's address (its ``Status.Addr``), where its published port is.
        state: ``Status.State``: ``new`` … ``running``, ``failed``, ``shutdown`` …
        desired_state: ``running`` or ``shutdown``.
        container_id: its container on that node ("" before it is created).
        published_port: the host-mode port its container port is published on (``None``: none yet).
        error: ``Status.Err`` (why it failed).
        exit_code: its container's exit code, if it ended.
        created: ISO time the task was created.
    """

    id: str
    slot: int
    node_id: str
    node_address: str
    state: str
    desired_state: str
    container_id: str = ""
    published_port: int | None = None
    error: str = ""
    exit_code: int | None = None
    created: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired_state == "running"


@dataclass(frozen=True)
class ServiceInfo:
    """One Swarm service with its tasks (the live ones and Swarm's kept history).

    Attributes:
        id: the service id.
        name: its name.
        labels: its labels.
        image: the image reference its spec names.
        replicas: its desired task count.
        max_per_node: its placement's cap per node (0: none).
        tasks: its tasks.
        version: the spec's version index (an update names it).
    """

    id: str
    name: str
    labels: Mapping[str, str]
    image: str
    replicas: int
    max_per_node: int = 0
    tasks: tuple[TaskInfo, ...] = ()
    version: int = 0
