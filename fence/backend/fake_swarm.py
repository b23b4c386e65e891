"""FakeSwarm: the ClusterBackend in memory, several fake engines sharing one world, for unit tests."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import dataclass, field, replace

from fence.backend.swarm_services import service_body
from fence.cluster_models import (
    AVAILABILITIES,
    SWARM_ACTIVE,
    SWARM_INACTIVE,
    ClusterNode,
    EngineChecks,
    JoinTokens,
    ServiceInfo,
    ServiceSpec,
    SwarmState,
    TaskInfo,
)
from fence.errors import ClusterError, NodeNotFound, RegistryUnavailable, UsageError

_ids = itertools.count(1)


@dataclass
class FakeSwarmWorld:
    """What the fake engines share: swarms by manager address, registries, the images in them."""

    swarms: dict[str, _Swarm] = field(default_factory=dict)
    registries: dict[str, dict[str, str]] = field(default_factory=dict)  # address → digest → image id

    def start_registry(self, address: str) -> None:
        self.registries.setdefault(address, {})


@dataclass
class _Swarm:
    id: str
    tokens: JoinTokens
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
    members: dict[str, FakeSwarm] = field(default_factory=dict)
    services: dict[str, _Service] = field(default_factory=dict)


@dataclass
class _Service:
    """A fake service: the body the real backend would send, and its tasks."""

    id: str
    body: dict
    tasks: list[TaskInfo] = field(default_factory=list)
    version: int = 1


class FakeSwarm:
    """One fake engine's ClusterBackend.

    Args:
        world: shared by the fake engines of one test.
        hostname: the node's host name.
        userns_remap: what ``engine_checks`` reports.
        no_new_privileges: what the probe reads.
        images: image references on this engine, with their ids.
    """

    def __init__(self, *, world: FakeSwarmWorld, hostname: str = "node", userns_remap: bool = True,
                 no_new_privileges: bool = True, images: dict[str, str] | None = None) -> None:
        self.world = world
        self.hostname = hostname
        self.userns_remap = userns_remap
        self.no_new_privileges = no_new_privileges
        self.images = dict(images or {})
        self.node_id = ""
        self.swarm: _Swarm | None = None
        self.address = ""

    def swarm_state(self) -> SwarmState:
        """See ``ClusterBackend.swarm_state``."""
        if self.swarm is None:
            return SwarmState(state=SWARM_INACTIVE)
        manager = self.swarm.nodes[self.node_id].role == "manager"
        managers = tuple(n.address for n in self.swarm.nodes.values() if n.role == "manager")
        return SwarmState(state=SWARM_ACTIVE, node_id=self.node_id, manager=manager,
                          cluster_id=self.swarm.id if manager else "", manager_addresses=managers)

    def swarm_init(self, *, listen_addr: str, advertise_addr: str | None) -> SwarmState:
        """See ``ClusterBackend.swarm_init``."""
        if self.swarm is not None:
            if not self.swarm_state().manager:
                raise ClusterError(detail="this engine is a worker of another swarm; `kato cluster leave` first")
            return self.swarm_state()
        advertise_addr = advertise_addr or _picked(listen_addr)
        key = f"swarm{next(_ids)}"
        self.swarm = _Swarm(id=key, tokens=JoinTokens(worker=f"SWMTKN-1-{key}-w", manager=f"SWMTKN-1-{key}-m"))
        self.world.swarms[advertise_addr] = self.swarm
        self._add_self("manager", advertise_addr)
        return self.swarm_state()

    def _add_self(self, role: str, address: str) -> None:
        assert self.swarm is not None
        self.node_id = uuid.uuid4().hex[:25]  # like Swarm's ids: a prefix names one node
        self.address = address
        self.swarm.nodes[self.node_id] = ClusterNode(
            id=self.node_id, hostname=self.hostname, role=role, state="ready", availability="active",
            address=address, engine_version="20.10.24", leader=role == "manager")
        self.swarm.members[self.node_id] = self

    def join_tokens(self) -> JoinTokens:
        """See ``ClusterBackend.join_tokens``."""
        return self._managed().tokens

    def swarm_join(self, *, token: str, remote_addr: str, listen_addr: str,
                   advertise_addr: str | None) -> SwarmState:
        """See ``ClusterBackend.swarm_join``."""
        if self.swarm is not None:
            raise ClusterError(detail="this engine is already in a swarm (active); `kato cluster leave` first")
        swarm = self.world.swarms.get(remote_addr)
        if swarm is None:
            raise ClusterError(detail=f"joining the swarm at {remote_addr} failed: no manager answers")
        if token not in (swarm.tokens.worker, swarm.tokens.manager):
            raise ClusterError(detail=f"joining the swarm at {remote_addr} failed: invalid join token")
        self.swarm = swarm
        advertise_addr = advertise_addr or _picked(listen_addr)
        self._add_self("manager" if token == swarm.tokens.manager else "worker", advertise_addr)
        return self.swarm_state()

    def swarm_leave(self, *, force: bool) -> None:
        """See ``ClusterBackend.swarm_leave``."""
        if self.swarm is None:
            return
        if self.swarm_state().manager and not force:
            raise ClusterError(detail="leaving the swarm failed: a manager leaves only with force")
        del self.swarm.nodes[self.node_id]
        del self.swarm.members[self.node_id]
        self.swarm, self.node_id = None, ""

    def engine_checks(self, *, probe_image: str) -> EngineChecks:
        """See ``ClusterBackend.engine_checks``."""
        if probe_image not in self.images:
            raise UsageError(detail=f"the probe image {probe_image!r} is not on this engine "
                                    "(the stack image, docker/image, is used)")
        return EngineChecks(version="20.10.24", userns_remap=self.userns_remap,
                            no_new_privileges=self.no_new_privileges)

    def probe_nodes(self, *, probe_image: str, timeout: float = 60.0) -> dict[str, EngineChecks]:
        """See ``ClusterBackend.probe_nodes``."""
        swarm = self._managed()
        return {node_id: EngineChecks(version="20.10.24", userns_remap=member.userns_remap,
                                      no_new_privileges=member.no_new_privileges)
                for node_id, member in swarm.members.items()
                if swarm.nodes[node_id].state == "ready" and swarm.nodes[node_id].availability == "active"
                and (probe_image in member.images or self._pullable(probe_image))}

    def _pullable(self, ref: str) -> bool:
        registry, _, rest = ref.partition("/")
        return rest in self.world.registries.get(registry, {})

    def list_nodes(self) -> list[ClusterNode]:
        """See ``ClusterBackend.list_nodes``."""
        return sorted(self._managed().nodes.values(), key=lambda n: (n.role != "manager", n.hostname, n.id))

    def set_availability(self, node: str, availability: str) -> ClusterNode:
        """See ``ClusterBackend.set_availability``."""
        if availability not in AVAILABILITIES:
            raise UsageError(detail=f"availability {availability!r} is not one of {', '.join(AVAILABILITIES)}")
        swarm = self._managed()
        matches = [n for n in swarm.nodes.values() if node in (n.id, n.hostname)] or \
            [n for n in swarm.nodes.values() if n.id.startswith(node)]
        if not matches:
            raise NodeNotFound(node=node)
        if len(matches) > 1:
            raise UsageError(detail=f"node {node!r} is ambiguous: {', '.join(n.id[:12] for n in matches)}")
        updated = replace(matches[0], availability=availability)
        swarm.nodes[updated.id] = updated
        return updated

    def _managed(self) -> _Swarm:
        if self.swarm is None:
            raise ClusterError(detail="this engine is not in a swarm; `kato cluster init` first")
        if not self.swarm_state().manager:
            raise ClusterError(detail="this engine is a swarm worker; run this on the cluster's controller")
        return self.swarm

    def push_image(self, ref: str, *, registry: str, repository: str, tag: str) -> str:
        """See ``ClusterBackend.push_image``."""
        if ref not in self.images:
            raise UsageError(detail=f"no image {ref!r} on this engine")
        if registry not in self.world.registries:
            raise RegistryUnavailable(address=registry, detail="does not answer")
        digest = "sha256:" + hashlib.sha256(self.images[ref].encode()).hexdigest()
        self.world.registries[registry][f"{repository}@{digest}"] = self.images[ref]
        return f"{registry}/{repository}@{digest}"

    def pull_image(self, ref: str) -> str:
        """See ``ClusterBackend.pull_image``."""
        if "@sha256:" not in ref:
            raise UsageError(detail=f"{ref!r} is not a reference by digest (repository@sha256:…)")
        registry, _, rest = ref.partition("/")
        stored = self.world.registries.get(registry)
        if stored is None:
            raise RegistryUnavailable(address=registry, detail="does not answer")
        if rest not in stored:
            raise RegistryUnavailable(address=registry, detail=f"refused the pull of {ref}: manifest unknown")
        self.images[ref] = stored[rest]
        return stored[rest]


    # --- services -------------------------------------------------------------------------

    def create_service(self, spec: ServiceSpec) -> str:
        """See ``ClusterBackend.create_service`` (tasks are placed and running at once)."""
        swarm = self._managed()
        body = service_body(spec)
        if any(s.body["Name"] == spec.name for s in swarm.services.values()):
            raise ClusterError(detail=f"service {spec.name} exists already")
        image = spec.image
        if not (image in self.images or self._pullable(image)):
            raise RegistryUnavailable(address=image.partition("/")[0], detail=f"no image {image}")
        service = _Service(id=uuid.uuid4().hex[:25], body=body)
        swarm.services[service.id] = service
        self._place(swarm, service)
        return service.id

    def scale_service(self, service_id: str, *, replicas: int, max_per_node: int) -> None:
        """See ``ClusterBackend.scale_service``."""
        swarm = self._managed()
        service = swarm.services[service_id]
        service.body["Mode"] = {"Replicated": {"Replicas": replicas}}
        service.body["TaskTemplate"]["Placement"]["MaxReplicas"] = max_per_node or None
        service.version += 1
        self._place(swarm, service)

    def remove_service(self, service_id: str) -> None:
        """See ``ClusterBackend.remove_service``."""
        self._managed().services.pop(service_id, None)

    def list_services(self, labels: dict[str, str]) -> list[ServiceInfo]:
        """See ``ClusterBackend.list_services``."""
        if self.swarm is None or not self.swarm_state().manager:
            raise ClusterError(detail="this engine is not a swarm manager: it schedules no instances "
                                      "(`kato cluster init`, or `kato cluster leave` and restart fence)")
        swarm = self._managed()
        found = []
        for service in swarm.services.values():
            if all(service.body["Labels"].get(k) == v for k, v in labels.items()):
                body = service.body
                found.append(ServiceInfo(
                    id=service.id, name=body["Name"], labels=dict(body["Labels"]),
                    image=body["TaskTemplate"]["ContainerSpec"]["Image"],
                    replicas=body["Mode"]["Replicated"]["Replicas"],
                    max_per_node=int(body["TaskTemplate"]["Placement"].get("MaxReplicas") or 0),
                    tasks=tuple(service.tasks), version=service.version))
        return found

    def service_body(self, name: str) -> dict:
        """The body a service was created with (tests)."""
        return next(s.body for s in self._managed().services.values() if s.body["Name"] == name)

    def fail_tasks(self, name: str, *, error: str = "task: non-zero exit (1)") -> None:
        """Every live task of service ``name`` fails, as Swarm shows a task that gave up (tests)."""
        service = next(s for s in self._managed().services.values() if s.body["Name"] == name)
        service.tasks = [replace(t, state="failed", desired_state="shutdown", error=error, exit_code=1)
                         if t.desired_state == "running" else t for t in service.tasks]

    def _place(self, swarm: _Swarm, service: _Service) -> None:
        """Live tasks for every slot up to the replica count, spread over ready, active nodes."""
        replicas = service.body["Mode"]["Replicated"]["Replicas"]
        cap = int(service.body["TaskTemplate"]["Placement"].get("MaxReplicas") or 0)
        live = [t for t in service.tasks if t.desired_state == "running"]
        keep = [t for t in live if t.slot <= replicas]
        service.tasks = [t if t.desired_state != "running" or t.slot <= replicas
                         else replace(t, state="shutdown", desired_state="shutdown") for t in service.tasks]
        nodes = [n for n in swarm.nodes.values() if n.state == "ready" and n.availability == "active"]
        ports = service.body["EndpointSpec"]["Ports"]
        for slot in range(1, replicas + 1):
            if any(t.slot == slot for t in keep):
                continue
            load = {n.id: sum(1 for t in service.tasks if t.node_id == n.id and t.desired_state == "running")
                    for n in nodes}
            free = [n for n in nodes if not cap or load[n.id] < cap]
            if not free:
                service.tasks.append(TaskInfo(id=uuid.uuid4().hex[:25], slot=slot, node_id="", node_address="",
                                              state="pending", desired_state="running",
                                              error="no suitable node (max replicas per node limit exceed)"))
                continue
            node = min(free, key=lambda n: (load[n.id], n.hostname))
            service.tasks.append(TaskInfo(
                id=uuid.uuid4().hex[:25], slot=slot, node_id=node.id, node_address=node.address.rpartition(":")[0],
                state="running", desired_state="running", container_id=uuid.uuid4().hex,
                published_port=(ports[0].get("PublishedPort") or 30000 + next(_ids)) if ports else None, created=str(next(_ids))))


def _picked(listen_addr: str) -> str:
    """What an engine advertises when not told: an interface's address and the listen port."""
    return "192.0.2.1:" + listen_addr.rpartition(":")[2]
