"""SwarmScheduler: an app's instances as Swarm services on a cluster's controller (issue 17).

One replicated service per app, process type and release; its tasks are the instances. A
redeploy creates the new release's service next to the old one; the router takes each new task
once it answers (fence's own check, from the controller), and the old service is removed only
once every task of the new one is running and healthy and the router serves a config without
the old tasks (then ``drain_seconds`` later). A rollback or a failed deploy keeps the old
release's service: nothing serving is touched until its replacement serves. Everything the
scheduler needs is in the services' labels and tasks, so a restarted daemon re-adopts them
without touching a task.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

from fence import labels
from fence.backend.base import ClusterBackend
from fence.cluster_models import TASK_FAILED, ServiceInfo, ServiceSpec, TaskInfo
from fence.config import ConfigStore
from fence.errors import ClusterError, FenceError
from fence.limits import container_limits
from fence.models import WEB_PROCESS, AppRecord, InstanceView, RolloutProgress, Route, Upstream
from fence.running.loop import PassLoop
from fence.running.scheduler import Passes
from fence.running.starter import CONTAINER_PORT, InstanceStarter, Launch
from fence.running.views import NoRouter, RouteSink
from fence.store import StateStore

log = logging.getLogger("fence.cluster")

REPOSITORY = "fence/droplet"
RESTART_DELAY = 5.0  # seconds; Swarm's restart delay is fixed (no backoff)
RESTART_ATTEMPTS = 5  # within RESTART_WINDOW, then Swarm gives up: a crash-looping instance
RESTART_WINDOW = 120.0
_PROBE_TIMEOUT = 1.0
RECHECK = 10.0  # seconds between checks of a task that answered (fence's port check interval)
_NAME_MAX = 63  # Swarm service names


# The web port of a task is published in host mode on a port fence picks from this range, one
# port per service (a worker node exposes these to the controller, nothing else of the apps).
TASK_PORTS = range(21000, 22000)
SHARD = "fence.shard"  # label: which of a release's services (each at most one task per node)
PORT = "fence.port"  # label: the host port its web tasks are published on
PUSHED_FROM = "fence.image-id"  # label: the controller's droplet image its registry image was pushed from


def service_name(node_id: str, app: str, process: str, release: int, shard: int = 0) -> str:
    """The service of one shard of an app's process type and release (at most 63 characters)."""
    name = f"fence-{app}-{process}-r{release}-s{shard}"
    if len(name) > _NAME_MAX:
        digest = hashlib.sha256(f"{node_id}/{app}/{process}".encode()).hexdigest()[:10]
        name = f"fence-{app[:_NAME_MAX - 36]}-{digest}-r{release}-s{shard}"
    return name


def shards(count: int, nodes: int) -> list[int]:
    """The replicas of each service ``count`` instances take on ``nodes`` active nodes: every
    service has at most one task per node (its web port is one host port), so ``count`` 7 on 3
    nodes is 3, 3 and 1."""
    nodes = max(1, nodes)
    return [min(nodes, count - start) for start in range(0, max(0, count), nodes)]


def max_per_node(count: int, nodes: int) -> int:
    """The per-node cap of a service (1 on more than one node; 0, none, on one)."""
    return 1 if nodes > 1 and count > 0 else 0


def answers(address: str, port: int, *, timeout: float = _PROBE_TIMEOUT) -> bool:
    """fence's readiness of a task, from the controller: its published port answers a request
    with at least one byte (a port that only accepts, as the engine's proxy does for a
    container not listening yet, does not count)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"HEAD / HTTP/1.0\r\nHost: fence-health\r\n\r\n")
            return bool(conn.recv(1))
    except OSError:
        return False


@dataclass
class _Fleet:
    """What the last pass saw, by service id."""

    services: dict[str, ServiceInfo] = field(default_factory=dict)
    healthy: set[str] = field(default_factory=set)  # task ids whose port answered
    leaving: dict[str, float] = field(default_factory=dict)  # service id → when it left the router


class SwarmScheduler:
    """The ``Scheduler`` of a cluster's controller: instances are Swarm service tasks.

    Args:
        cluster: the controller engine's ClusterBackend (a swarm manager).
        store: desired state.
        config: node config (``cluster/registry_address``, limits).
        starter: makes droplet images and the command, env and user instances run with.
        node_id: this node's id (in every service's labels).
        routes: receives the routes after every pass.
        probe: fence's readiness check of a task's published address (a fake in tests).
        drain_seconds: pause between leaving the router and removing a service.
        clock: monotonic time source.
    """

    def __init__(self, *, cluster: ClusterBackend, store: StateStore, config: ConfigStore,
                 starter: InstanceStarter, node_id: str, routes: RouteSink | None = None,
                 probe: Callable[[str, int], bool] = answers, drain_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, workers: int = 4) -> None:
        self._cluster = cluster
        self._store = store
        self._config = config
        self._starter = starter
        self._node_id = node_id
        self._route_sink = routes or NoRouter()
        self._probe = probe
        self._drain = drain_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._fleet = _Fleet()
        self._pushing: dict[str, threading.Lock] = {}
        self._pushed: dict[str, str] = {}  # droplet image id → registry reference by digest
        self._creating: set[str] = set()  # service names being created by a job
        self._made: dict[str, int] = {}  # service name → the listing seq when its creation ended
        self._seq = 0  # listings started
        self._scaling: set[str] = set()
        self._ports: dict[str, int] = {}  # service name → the port its creation took  # service ids being scaled by a job
        self._refused_at: dict[str, float] = {}  # service name → when its creation last failed
        self._refused: dict[str, str] = {}  # service name → why it could not be created
        self._routes: list[Route] = []
        self._rolls: dict[str, RolloutProgress] = {}
        self._checked: dict[str, float] = {}  # task id → when its port was last asked
        self._misses: dict[str, int] = {}  # task id → checks it failed in a row since it answered
        self._jobs = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="swarm")
        self._probes = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="swarm-health")
        self._passes = Passes()  # wait_pass
        self._loop = PassLoop(tick=self.tick, name="swarm-scheduler")
        self._nodes: tuple[float, int] = (-1e9, 1)  # when counted, active nodes
        self._own_node: str | None = None  # the controller engine's swarm node id, once asked

    # --- the loop --------------------------------------------------------------------------

    def run_in_background(self, interval: float = 0.5) -> None:
        """See ``Scheduler.run_in_background``."""
        self._loop.start(interval)

    def wake(self) -> None:
        """See ``Scheduler.wake``."""
        self._loop.wake()

    def shutdown(self) -> None:
        """See ``Scheduler.shutdown``: services and their tasks keep running."""
        self._loop.stop()
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._probes.shutdown(wait=False, cancel_futures=True)

    def drain_jobs(self, timeout: float = 60.0) -> None:
        """Wait until service creations are done (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._creating and not self._scaling:
                    return
            time.sleep(0.05)

    def wait_pass(self, timeout: float) -> None:
        """See ``Scheduler.wait_pass``."""
        self._passes.wait(timeout)

    def tick(self) -> None:
        """One pass: services against the store, task health, routes, removals.

        Raises:
            EngineUnavailable, ClusterError: the controller's engine does not answer, or is no
                swarm manager (nothing is changed).
        """
        with self._lock:
            self._seq += 1
            listed_at = self._seq
        found = {s.id: s for s in self._cluster.list_services({labels.NODE: self._node_id,
                                                                labels.ROLE: labels.ROLE_INSTANCE})}
        apps = {app.name: app for app in self._store.apps()}
        healthy = self._check_health(found.values())
        with self._lock:
            fleet = self._fleet
            fleet.services = found
            fleet.healthy = healthy
            fleet.leaving = {sid: at for sid, at in fleet.leaving.items() if sid in found}
            by_name = {s.name: s for s in found.values()}
            nodes = self._active_nodes()
            wanted: dict[str, tuple[AppRecord, str, int, int]] = {}  # name → app, process, shard, replicas
            for app in apps.values():
                if not app.started or app.release is None:
                    continue
                for process, count in app.counts().items():
                    for shard, replicas in enumerate(shards(count, nodes)):
                        name = service_name(self._node_id, app.name, process, app.release, shard)
                        wanted[name] = (app, process, shard, replicas)
            cap = max_per_node(1, nodes)
            for name, (app, process, shard, replicas) in wanted.items():
                service = by_name.get(name)
                if service is not None:
                    self._made.pop(name, None)
                    self._ports.pop(name, None)
                if service is None:
                    retry = self._refused_at.get(name, -1e9) + RESTART_DELAY <= self._clock()
                    # A listing started before its creation ended may not show a service just made.
                    fresh = self._made.get(name, 0) >= listed_at
                    if name not in self._creating and retry and not fresh:
                        port = self._free_port(found.values()) if process == WEB_PROCESS else 0
                        if port:  # taken now: the next shard of this pass picks another
                            self._ports[name] = port
                        self._creating.add(name)
                        self._jobs.submit(self._create_job, app, process, shard, replicas, name, port, cap)
                elif (service.replicas != replicas or service.max_per_node != cap) and service.id not in self._scaling:
                    self._scaling.add(service.id)
                    self._jobs.submit(self._scale_job, service.id, replicas, cap)
            now = self._clock()
            for service in found.values():
                if service.name in wanted or service.id in fleet.leaving:
                    continue
                if self._replaced(service, wanted, by_name, apps):
                    fleet.leaving[service.id] = now
            for name in list(self._refused):
                if name not in wanted:
                    del self._refused[name]
            routes = self._routes_for(apps)
        try:
            served: Sequence[Route] | None = self._route_sink.publish(routes)
            self._routes = list(served or ())
        except FenceError as exc:
            log.warning("router update failed: %s", exc.message)
            served = self._route_sink.served()
        with self._lock:
            pointed = self._pointed(served)
            gone = [sid for sid, at in fleet.leaving.items()
                    if now - at >= self._drain and not pointed & {t.id for t in found[sid].tasks}]
        for sid in gone:
            try:
                self._cluster.remove_service(sid)
                log.info("service removed", extra={"service": found[sid].name})
            except FenceError as exc:
                log.warning("service removal failed: %s", exc.message)
        self._passes.ended()

    # --- what runs -------------------------------------------------------------------------

    def _replaced(self, service: ServiceInfo, wanted: dict[str, tuple[AppRecord, str, int, int]],
                  by_name: dict[str, ServiceInfo], apps: dict[str, AppRecord]) -> bool:
        """Whether an unwanted service may go: nothing of its app and type is wanted any more, or
        every wanted service of the app's type has all its tasks running and healthy."""
        app_name, process = service.labels.get(labels.APP, ""), service.labels.get(labels.PROCESS, WEB_PROCESS)
        app = apps.get(app_name)
        if app is None or not app.started or app.release is None or app.count(process) == 0:
            return True
        group = [name for name, (a, p, _, _) in wanted.items() if a.name == app_name and p == process]
        return all(name in by_name and self._ready(by_name[name]) for name in group)

    def _ready(self, service: ServiceInfo) -> bool:
        live = [t for t in service.tasks if t.running]
        web = service.labels.get(labels.PROCESS, WEB_PROCESS) == WEB_PROCESS
        ok = [t for t in live if not web or t.id in self._fleet.healthy]
        return len(ok) >= service.replicas

    def _free_port(self, services: object) -> int:
        """The lowest port of ``TASK_PORTS`` no service (nor a creation under way) publishes on."""
        used = {int(s.labels.get(PORT, "0") or 0) for s in services} | set(self._ports.values())  # type: ignore[attr-defined]
        for port in TASK_PORTS:
            if port not in used:
                return port
        raise ClusterError(detail=f"every task port {TASK_PORTS.start}-{TASK_PORTS.stop - 1} is taken")

    def _check_health(self, services: Sequence[ServiceInfo] | object) -> set[str]:
        """Task ids of running web tasks whose published port answers. A task not yet healthy
        is asked at every pass; a healthy one every ``RECHECK`` seconds, and it stops being
        routed after ``health/failures`` misses in a row (a hung app, a node cut off)."""
        now = self._clock()
        with self._lock:
            known = set(self._fleet.healthy)
        ask: list[TaskInfo] = []
        passed, live = set(), set()
        for service in services:  # type: ignore[attr-defined]
            if service.labels.get(labels.PROCESS, WEB_PROCESS) != WEB_PROCESS:
                continue
            for task in service.tasks:
                if not task.running or not task.published_port or not task.node_address:
                    continue
                live.add(task.id)
                if task.id in known and now - self._checked.get(task.id, -1e9) < RECHECK:
                    passed.add(task.id)
                else:
                    ask.append(task)
        if ask:
            results = list(self._probes.map(lambda t: self._probe(t.node_address, int(t.published_port or 0)), ask))
            limit = int(self._config.fence("health/failures"))
            for task, ok in zip(ask, results):
                self._checked[task.id] = now
                if ok:
                    self._misses.pop(task.id, None)
                    passed.add(task.id)
                elif task.id in known:
                    self._misses[task.id] = self._misses.get(task.id, 0) + 1
                    if self._misses[task.id] < limit:
                        passed.add(task.id)
                    else:
                        log.warning("task stopped answering", extra={"task": task.id[:12],
                                                                     "address": task.node_address})
        for gone in set(self._checked) - live:
            self._checked.pop(gone, None)
            self._misses.pop(gone, None)
        return passed

    def _active_nodes(self) -> int:
        """Ready, active nodes (counted again every 5 s: a drained or dead node changes the layout)."""
        at, nodes = self._nodes
        if self._clock() - at > 5:
            try:
                nodes = max(1, sum(1 for n in self._cluster.list_nodes()
                                   if n.state == "ready" and n.availability == "active"))
            except FenceError:
                pass
            self._nodes = (self._clock(), nodes)
        return nodes

    def _create_job(self, app: AppRecord, process: str, shard: int, count: int, name: str, port: int,
                    cap: int) -> None:
        if port:
            with self._lock:
                self._ports[name] = port
        try:
            spec = self.service_spec(app, process, count, name, shard=shard, port=port, cap=cap)
            self._cluster.create_service(spec)
            with self._lock:
                self._refused.pop(name, None)
                self._refused_at.pop(name, None)
            log.info("service created", extra={"app": app.name, "service": name, "replicas": count})
        except FenceError as exc:
            with self._lock:
                self._refused[name] = exc.message
                self._refused_at[name] = self._clock()
            log.warning("service creation failed", extra={"app": app.name, "service": name, "error": exc.message})
        except Exception as exc:  # noqa: BLE001 - shown on the app, not lost in a thread
            with self._lock:
                self._refused[name] = str(exc)
                self._refused_at[name] = self._clock()
            log.exception("service creation failed")
        finally:
            with self._lock:
                self._creating.discard(name)
                self._made[name] = self._seq
                if name in self._refused:
                    self._ports.pop(name, None)
            self.wake()

    def _scale_job(self, service_id: str, count: int, cap: int) -> None:
        try:
            self._cluster.scale_service(service_id, replicas=count, max_per_node=cap)
        except FenceError as exc:
            log.warning("service scale failed: %s", exc.message)
        except Exception:  # noqa: BLE001 - a bug must not vanish in a thread
            log.exception("service scale failed")
        finally:
            with self._lock:
                self._scaling.discard(service_id)
            self.wake()

    def service_spec(self, app: AppRecord, process: str, count: int, name: str, *, shard: int = 0, port: int = 0,
                     cap: int = 0) -> ServiceSpec:
        """The service of the app's current release's ``process`` (its image pushed first, once).

        Raises:
            FenceError: the droplet is gone, its image could not be made or pushed.
        """
        assert app.release is not None
        record = self._store.release(app.name, app.release)
        droplet = self._store.droplet(record.droplet) if record else None
        if droplet is None:
            raise ClusterError(detail=f"release {app.release} of {app.name} has no droplet any more")
        launch = Launch(app=app, release=app.release, droplet=droplet, index=0, process=process)
        # Shards before this one are full (one task per node): its first index is shard × nodes.
        image, user, command, env, workdir = self._starter.service_parts(
            launch, slot_base=shard * max(1, self._active_nodes()))
        env = {k: v for k, v in env.items() if k != "INSTANCE_INDEX"}
        reference = self._push(image.image_id, image.ref)
        service_labels = labels.owned(self._node_id, labels.ROLE_INSTANCE, app=app.name, droplet=droplet.id,
                                      release=str(app.release), process=process, stack_id=image.stack_id,
                                      stack_ref=image.stack_ref)
        service_labels[SHARD] = str(shard)
        service_labels[PUSHED_FROM] = image.image_id
        if port:
            service_labels[PORT] = str(port)
        return ServiceSpec(name=name, labels=service_labels, image=reference, user=user, command=command, env=env,
                           workdir=workdir, limits=container_limits(self._config, launch.memory_mib),
                           replicas=count, max_per_node=cap,
                           container_port=CONTAINER_PORT if process == WEB_PROCESS else 0, published_port=port,
                           restart_delay=RESTART_DELAY, restart_attempts=RESTART_ATTEMPTS,
                           restart_window=RESTART_WINDOW)

    def _push(self, image_id: str, ref: str) -> str:
        """The droplet image in the registry by digest, pushed once per image."""
        with self._lock:
            guard = self._pushing.setdefault(image_id, threading.Lock())
        with guard:  # two services of one droplet (web and worker) push it once
            with self._lock:
                known = self._pushed.get(image_id)
                if known is None:  # pushed by an earlier daemon: its services name it
                    known = next((svc.image for svc in self._fleet.services.values()
                                  if svc.labels.get(PUSHED_FROM) == image_id and "@sha256:" in svc.image), None)
            if known is not None:
                return known
            registry = str(self._config.fence("cluster/registry_address"))
            pushed = self._cluster.push_image(ref, registry=registry, repository=REPOSITORY,
                                              tag=image_id.removeprefix("sha256:")[:24])
            with self._lock:
                self._pushed[image_id] = pushed
        log.info("droplet image pushed", extra={"image": ref, "reference": pushed})
        return pushed

    # --- routes ----------------------------------------------------------------------------

    def _routes_for(self, apps: dict[str, AppRecord]) -> list[Route]:
        domain = str(self._config.fence("router/domain"))
        upstreams: dict[str, set[Upstream]] = {}
        for service in self._fleet.services.values():
            if service.id in self._fleet.leaving or service.labels.get(labels.PROCESS, WEB_PROCESS) != WEB_PROCESS:
                continue
            for task in service.tasks:
                if task.running and task.id in self._fleet.healthy:
                    upstreams.setdefault(service.labels.get(labels.APP, ""), set()).add(
                        Upstream(address=task.node_address, port=int(task.published_port or 0)))
        return [Route(app=name, hosts=(f"{name}.{domain}", *apps[name].urls),
                      upstreams=tuple(sorted(upstreams.get(name, ()), key=lambda u: (u.address, u.port))))
                for name in sorted(apps)]

    def _pointed(self, served: Sequence[Route] | None) -> set[str]:
        """Task ids the router may point at (all of them when that is unknown)."""
        tasks = [(s, t) for s in self._fleet.services.values() for t in s.tasks]
        if served is None:
            return {t.id for _, t in tasks}
        pointed = {(r.app, u.address, u.port) for r in served for u in r.upstreams}
        return {t.id for s, t in tasks if (s.labels.get(labels.APP, ""), t.node_address, t.published_port) in pointed}

    def routes(self) -> list[Route]:
        """See ``Scheduler.routes``."""
        return list(self._routes)

    def routed(self, app: str, release: int) -> int:
        """See ``Scheduler.routed``."""
        with self._lock:
            pointed = self._pointed(self._routes)
            return sum(1 for s in self._fleet.services.values()
                       if s.labels.get(labels.APP) == app and s.labels.get(labels.RELEASE) == str(release)
                       and s.labels.get(labels.PROCESS, WEB_PROCESS) == WEB_PROCESS
                       for t in s.tasks if t.running and t.id in pointed)

    # --- views -----------------------------------------------------------------------------

    def instances(self, app: str) -> list[InstanceView]:
        """See ``Scheduler.instances``."""
        return self.instances_by_app().get(app, [])

    def instances_by_app(self) -> dict[str, list[InstanceView]]:
        """See ``Scheduler.instances_by_app``: per service slot, its live task (else its last one);
        the shards of a release are numbered on (index 0 … count - 1)."""
        with self._lock:
            views: dict[str, list[InstanceView]] = {}
            groups: dict[tuple[str, str, str], list[tuple[int, int, ServiceInfo, list[TaskInfo]]]] = {}
            for service in self._fleet.services.values():
                key = (service.labels.get(labels.APP, ""), service.labels.get(labels.PROCESS, WEB_PROCESS),
                       service.labels.get(labels.RELEASE, "0"))
                shard = int(service.labels.get(SHARD, "0") or 0)
                for slot, tasks in _by_slot(service.tasks).items():
                    if slot > service.replicas and not any(t.desired_state == "running" for t in tasks):
                        continue
                    groups.setdefault(key, []).append((shard, slot, service, tasks))
            for (app, _, _), members in groups.items():
                for index, (_, _, service, tasks) in enumerate(sorted(members, key=lambda m: (m[0], m[1]))):
                    views.setdefault(app, []).append(
                        self._view(service, index, tasks, service.id in self._fleet.leaving))
            names = {s.name for s in self._fleet.services.values()}
            for name, why in self._refused.items():
                if name in names:
                    continue
                app, process, release = _parse_name(name, self._store)
                if app:
                    views.setdefault(app, []).append(InstanceView(
                        index=0, state="crashed", container="", host_port=None, restarts=0, release=release,
                        reason=f"could not start: {why}", process=process, health="port: failing"))
        return {app: sorted(found, key=lambda v: (v.process != WEB_PROCESS, v.process, v.index, v.release))
                for app, found in views.items()}

    def _view(self, service: ServiceInfo, index: int, tasks: list[TaskInfo], leaving: bool) -> InstanceView:
        live = [t for t in tasks if t.desired_state == "running"]
        task = live[-1] if live else tasks[-1]
        failures = [t for t in tasks if t.state in TASK_FAILED]
        process = service.labels.get(labels.PROCESS, WEB_PROCESS)
        web = process == WEB_PROCESS
        healthy = task.running and (not web or task.id in self._fleet.healthy)
        if leaving and task.desired_state == "running":
            state = "stopping"
        elif healthy:
            state = "running"
        elif task.state in TASK_FAILED or failures:
            # Between Swarm's restarts (its fixed delay) a slot that failed is crashed until a
            # task of it answers again, as a single node's instance is during its backoff.
            state = "crashed"
        elif task.desired_state != "running":
            state = "stopped"
        else:
            state = "starting"
        last = failures[-1] if failures else None
        reason = None
        if state == "crashed":
            reason = _why(task) if task.state in TASK_FAILED or last is None else _why(last)
        check = "port" if web else "process"
        return InstanceView(
            index=index, state=state, container=task.container_id[:12], host_port=task.published_port,
            restarts=len(failures), release=int(service.labels.get(labels.RELEASE, "0") or 0),
            reason=reason, last_crash=_why(last) if last else None, image_id=service.labels.get(labels.STACK_ID, ""),
            process=process,
            health=f"{check}: " + {"running": "passing", "crashed": "failing", "starting": "waiting"}.get(state, "-"))

    def forget(self, app: str) -> None:
        """See ``Scheduler.forget`` (the services of a deleted app go at the next pass)."""
        self.wake()

    def tracked(self) -> set[str]:
        """See ``Scheduler.tracked``: every task container Swarm still lists."""
        with self._lock:
            return {t.container_id for s in self._fleet.services.values() for t in s.tasks if t.container_id}

    def running_ids(self) -> list[str]:
        """See ``Scheduler.running_ids``: the containers of running tasks on the controller's own
        node (usage is read from this engine's cgroups; a worker's tasks are not here)."""
        if self._own_node is None:
            try:
                self._own_node = self._cluster.swarm_state().node_id
            except FenceError:
                return []
        with self._lock:
            return [t.container_id for s in self._fleet.services.values() for t in s.tasks
                    if t.running and t.container_id and t.node_id == self._own_node]

    def promised_mib(self) -> int:
        """See ``Scheduler.promised_mib``: the cluster's instances are not this node's to admit (0)."""
        return 0

    # --- stack rollouts: by restaging on a cluster ---------------------------------------------

    def set_surge(self, app: str, surge: int | None) -> None:
        """See ``Scheduler.set_surge``: a cluster redeploy is always a whole new service."""

    def roll(self, app: str, *, image_id: str, surge: int = 1) -> None:
        """See ``Scheduler.roll``: not in place on a cluster; the rollout reports the app failed
        with what to do (``kato stack rollout --restage`` redeploys it, a new service per release)."""
        with self._lock:
            self._rolls[app] = RolloutProgress(
                app=app, image_id=image_id, replaced=0, remaining=(),
                failed="a cluster's instances move to a new stack by restaging: `kato stack rollout --restage`")

    def rollout_progress(self, app: str) -> RolloutProgress | None:
        """See ``Scheduler.rollout_progress``."""
        with self._lock:
            return self._rolls.get(app)

    def end_rollout(self, app: str) -> None:
        """See ``Scheduler.end_rollout``."""
        with self._lock:
            self._rolls.pop(app, None)


def _by_slot(tasks: Sequence[TaskInfo]) -> dict[int, list[TaskInfo]]:
    found: dict[int, list[TaskInfo]] = {}
    for task in tasks:
        found.setdefault(task.slot, []).append(task)
    return dict(sorted(found.items()))


def _why(task: TaskInfo) -> str:
    if task.exit_code is not None and task.exit_code != 0:
        return f"exited {task.exit_code}"
    return task.error or task.state


def _parse_name(name: str, store: StateStore) -> tuple[str, str, int]:
    """The app, process type and release a refused service's name stands for."""
    for app in store.apps():
        for process in app.counts():
            prefix = f"fence-{app.name}-{process}-r"
            release, _, shard = name[len(prefix):].partition("-s")
            if name.startswith(prefix) and release.isdigit() and shard.isdigit():
                return app.name, process, int(release)
    return "", WEB_PROCESS, 0
