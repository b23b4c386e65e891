"""The instance reconciler: desired apps in the store against containers found by label."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import ContainerNotFound, FenceError
from fence.models import AppRecord, ContainerInfo, InstanceView, Route, Upstream
from fence.running.backoff import BackoffPolicy, Clock, CrashCount, SystemClock
from fence.running.starter import CONTAINER_PORT, RELEASE_LABEL, InstanceStarter, Launch
from fence.states import InstanceState, check_transition
from fence.store import StateStore

log = logging.getLogger("fence.instances")
S = InstanceState


class HealthCheck(Protocol):
    """Whether an instance's web process accepts connections."""

    def ready(self, address: str, port: int) -> bool:
        """True when ``address:port`` accepts a TCP connection now."""


class TcpHealth:
    """Connects to the instance's address on its bridge network (not through the published
    port, whose userland proxy accepts connections even when nothing listens behind it)."""

    def ready(self, address: str, port: int) -> bool:
        """True when a TCP connection to ``address:port`` succeeds within 0.25 s."""
        try:
            with socket.create_connection((address, port), timeout=0.25):
                return True
        except OSError:
            return False


@dataclass
class _Instance:
    """The manager's record of one instance container (mutable, never leaves this module)."""

    container_id: str
    app: str
    index: int
    release: int
    state: InstanceState
    created: float
    health_deadline: float
    host_port: int | None = None
    address: str | None = None
    healthy_since: float | None = None
    reason: str | None = None
    seq: int = 0  # registration order: newer than a listing means the listing could not see it

    def move(self, state: InstanceState) -> None:
        self.state = check_transition(self.state, state)


class InstanceManager:
    """Keeps each started app's instances running its current release.

    Every ``tick`` lists this node's instance containers (one engine call), notes exits and
    health, restarts crashed instances with Cloud Foundry's backoff, starts missing ones, and
    stops what is no longer wanted: surplus indexes, stopped or deleted apps, and an old
    release's instance once the new release's instance at the same index is healthy (rolling,
    zero-downtime redeploys). The router is updated before an instance is stopped.

    Args:
        backend: the engine.
        store: desired state.
        config: node config.
        starter: creates instance containers.
        node_id: this node's id.
        on_routes: receives the routes after every pass; raises if the router refused them.
        clock: time source (a fake in tests).
        health: health check (a fake in tests).
        policy: crash backoff.
        drain_seconds: pause between leaving the router and TERM.
        workers: containers started or stopped at once.
    """

    def __init__(self, *, backend: ContainerBackend, store: StateStore, config: ConfigStore,
                 starter: InstanceStarter, node_id: str,
                 on_routes: Callable[[list[Route]], None] = lambda routes: None,
                 clock: Clock | None = None, health: HealthCheck | None = None,
                 policy: BackoffPolicy | None = None, drain_seconds: float = 2.0, workers: int = 8) -> None:
        self._backend = backend
        self._store = store
        self._config = config
        self._starter = starter
        self._node_id = node_id
        self._on_routes = on_routes
        self._clock = clock or SystemClock()
        self._health = health or TcpHealth()
        self._policy = policy or BackoffPolicy()
        self._drain = drain_seconds
        self._lock = threading.RLock()
        self._instances: dict[str, _Instance] = {}
        self._crashes: dict[tuple[str, int], CrashCount] = {}
        self._slot_reasons: dict[tuple[str, int], str] = {}
        self._last_crash: dict[tuple[str, int], str] = {}
        self._pending: set[tuple[str, int, int]] = set()
        self._seq = 0
        self._removed: collections.deque[str] = collections.deque(maxlen=4096)
        self._jobs = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="instance")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._routes: list[Route] | None = None

    # --- the loop --------------------------------------------------------------------------

    def run_in_background(self, interval: float = 0.5) -> None:
        """Reconcile every ``interval`` seconds (and at once after ``wake``) until ``shutdown``."""
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.tick()
                except FenceError as exc:
                    log.warning("reconcile failed: %s", exc.message)
                except Exception:  # a bug must not end the loop that keeps apps running
                    log.exception("reconcile failed")
                self._wake.wait(interval)
                self._wake.clear()
        self._thread = threading.Thread(target=loop, name="reconciler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Reconcile now (desired state changed)."""
        self._wake.set()

    def shutdown(self) -> None:
        """Stop reconciling; containers keep running (a restarted daemon re-adopts them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._jobs.shutdown(wait=False, cancel_futures=True)

    def drain_jobs(self, timeout: float = 60.0) -> None:
        """Wait until started start/stop jobs are done (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = bool(self._pending) or any(i.state is S.STOPPING for i in self._instances.values())
            if not busy:
                return
            time.sleep(0.05)

    def tick(self) -> None:
        """One reconcile pass.

        Raises:
            EngineUnavailable: the engine does not answer (nothing is changed).
        """
        with self._lock:
            listed_at = self._seq
        infos = self._backend.list_info({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE})
        apps = {app.name: app for app in self._store.apps()}
        now = self._clock.now()
        to_stop: list[_Instance] = []
        with self._lock:
            self._observe(infos, now, listed_at)
            self._check_health(now)
            for name in {i.app for i in self._instances.values()} | set(apps):
                to_stop += self._plan(name, apps.get(name), now)
            for instance in to_stop:
                instance.move(S.STOPPING)
            routes = self._current_routes(apps)
        try:
            self._on_routes(routes)  # the router reloads only when its config changes
            self._routes = routes
        except FenceError as exc:
            log.warning("router update failed: %s", exc.message)
        except Exception:
            log.exception("router update failed")
        for instance in to_stop:
            self._jobs.submit(self._stop_job, instance)

    # --- what the engine says ----------------------------------------------------------------

    def _observe(self, infos: list[ContainerInfo], now: float, listed_at: int) -> None:
        seen = set()
        for info in infos:
            seen.add(info.id)
            instance = self._instances.get(info.id)
            if instance is None:
                if info.id in self._removed:
                    continue  # this manager stopped it after the listing was taken
                if _slot_of(info) in self._pending:
                    continue  # its start job registers it
                instance = self._adopt(info, now)
            elif instance.seq > listed_at:
                continue  # registered after the listing: this info may predate its start
            if info.ports:
                instance.host_port = info.ports[0].host_port
            instance.address = info.ip_address or instance.address
            if not info.running and instance.state in (S.STARTING, S.RUNNING):
                self._crash(instance, self._exit_reason(info), now)
        for container_id, instance in list(self._instances.items()):
            if container_id in seen or instance.seq > listed_at:
                continue  # still there, or registered after the engine was asked
            if instance.state in (S.STARTING, S.RUNNING):
                self._crash(instance, "the container vanished", now)
            if instance.state is not S.STOPPING:
                del self._instances[container_id]

    def _adopt(self, info: ContainerInfo, now: float) -> _Instance:
        """A container found by label that this manager did not start (after a daemon restart)."""
        app, index, release = _slot_of(info)
        state = S.RUNNING if info.running else S.CRASHED
        instance = _Instance(container_id=info.id, app=app, index=index, release=release, state=state,
                             created=now, health_deadline=now, healthy_since=now if info.running else None,
                             reason=None if info.running else self._exit_reason(info))
        self._instances[info.id] = instance
        count = self._crashes.setdefault((app, index), CrashCount())
        if info.running:
            count.started(now)
        else:
            count.crashed(now, self._policy)
        log.info("adopted instance", extra={"app": app, "index": index, "container": info.id[:12],
                                            "state": state.value})
        return instance

    def _exit_reason(self, info: ContainerInfo) -> str:
        try:
            full = self._backend.lookup(info.id).info()
        except ContainerNotFound:
            return "the container vanished"
        if full.oom_killed:
            return "out of memory (killed at its memory limit)"
        return f"exited {full.exit_code}" if full.exit_code is not None else "exited"

    def _crash(self, instance: _Instance, reason: str, now: float) -> None:
        instance.move(S.CRASHED)
        instance.reason = reason
        self._last_crash[(instance.app, instance.index)] = reason
        instance.healthy_since = None
        count = self._crashes.setdefault((instance.app, instance.index), CrashCount())
        delay = count.crashed(now, self._policy)
        log.warning("instance crashed", extra={"app": instance.app, "index": instance.index,
                                               "reason": reason, "crashes": count.crashes,
                                               "restart_in": delay})

    def _check_health(self, now: float) -> None:
        for instance in self._instances.values():
            count = self._crashes.setdefault((instance.app, instance.index), CrashCount())
            if instance.state is S.RUNNING:
                count.healthy_for(now, self._policy)
            if instance.state is not S.STARTING:
                continue
            if instance.address and self._health.ready(instance.address, CONTAINER_PORT):
                instance.move(S.RUNNING)
                instance.healthy_since = now
                instance.reason = None
            elif now >= instance.health_deadline:
                self._crash(instance, f"unhealthy: nothing accepted connections on $PORT within "
                                      f"{instance.health_deadline - instance.created:.0f} s", now)
                self._jobs.submit(self._kill_job, instance.container_id)

    # --- what should be --------------------------------------------------------------------

    def _plan(self, name: str, app: AppRecord | None, now: float) -> list[_Instance]:
        """Start what the app lacks; return what must stop (everything, for a deleted app)."""
        mine = [i for i in self._instances.values() if i.app == name and i.state is not S.STOPPING]
        if app is None or not app.started or app.release is None:
            return mine
        stop = [i for i in mine if i.index >= app.instances]
        for index in range(app.instances):
            slot = [i for i in mine if i.index == index]
            current = [i for i in slot if i.release == app.release and i.state in (S.STARTING, S.RUNNING)]
            if any(i.state is S.RUNNING for i in current):
                stop += [i for i in slot if i.release != app.release or i.state is S.CRASHED]
                stop += sorted((i for i in current if i.state is S.RUNNING), key=lambda i: i.created)[:-1]
            elif not current and (app.name, index, app.release) not in self._pending:
                count = self._crashes.setdefault((app.name, index), CrashCount())
                if count.gave_up or (count.restart_at is not None and now < count.restart_at):
                    continue
                stop += [i for i in slot if i.state is S.CRASHED]
                self._start(app, index, now)
        return stop

    def _start(self, app: AppRecord, index: int, now: float) -> None:
        release = app.release
        assert release is not None
        self._pending.add((app.name, index, release))
        self._crashes.setdefault((app.name, index), CrashCount()).started(now)
        self._jobs.submit(self._start_job, app, index, release)

    def _start_job(self, app: AppRecord, index: int, release: int) -> None:
        slot = (app.name, index, release)
        try:
            record = next((r for r in self._store.releases(app.name) if r.number == release), None)
            droplet = self._store.droplet(record.droplet) if record else None
            if droplet is None:
                raise ContainerNotFound(container=f"release {release} of {app.name} (droplet gone)")
            container = self._starter.launch(Launch(app=app, release=release, droplet=droplet, index=index))
            info = container.info()
            now = self._clock.now()
            timeout = app.health_timeout or int(self._config.fence("health/timeout"))
            with self._lock:
                self._seq += 1
                self._instances[container.id] = _Instance(
                    container_id=container.id, app=app.name, index=index, release=release,
                    state=S.STARTING, created=now, health_deadline=now + timeout,
                    host_port=info.ports[0].host_port if info.ports else None, address=info.ip_address,
                    seq=self._seq)
                self._slot_reasons.pop((app.name, index), None)
        except FenceError as exc:
            with self._lock:
                self._slot_reasons[(app.name, index)] = f"could not start: {exc.message}"
                self._crashes.setdefault((app.name, index), CrashCount()).crashed(self._clock.now(), self._policy)
            log.warning("instance start failed", extra={"app": app.name, "index": index, "error": exc.message})
        finally:
            with self._lock:
                self._pending.discard(slot)
            self.wake()

    def _stop_job(self, instance: _Instance) -> None:
        try:
            if self._drain and instance.healthy_since is not None:
                time.sleep(self._drain)  # the router has already dropped it; let requests finish
            container = self._backend.lookup(instance.container_id)
            container.stop(grace=10)
            container.destroy()
        except ContainerNotFound:
            pass
        except FenceError as exc:
            log.warning("instance stop failed", extra={"container": instance.container_id[:12], "error": exc.message})
        finally:
            with self._lock:
                instance.move(S.STOPPED)
                self._removed.append(instance.container_id)
                self._instances.pop(instance.container_id, None)
            self.wake()

    def _kill_job(self, container_id: str) -> None:
        try:
            self._backend.lookup(container_id).stop(grace=0)
        except FenceError:
            pass

    # --- views -----------------------------------------------------------------------------

    def instances(self, app: str) -> list[InstanceView]:
        """The app's instances now, by index."""
        now = self._clock.now()
        with self._lock:
            views = [InstanceView(
                index=i.index, state=i.state.value, container=i.container_id[:12], host_port=i.host_port,
                restarts=self._crashes.get((i.app, i.index), CrashCount()).crashes, release=i.release,
                uptime=round(now - i.healthy_since, 1) if i.healthy_since is not None else 0.0,
                reason=i.reason, last_crash=self._last_crash.get((i.app, i.index)))
                for i in self._instances.values() if i.app == app]
            for (name, index), reason in self._slot_reasons.items():
                if name == app and not any(v.index == index for v in views):
                    views.append(InstanceView(index=index, state=S.CRASHED.value, container="",
                                              host_port=None, restarts=self._crashes.get((name, index), CrashCount()).crashes,
                                              release=0, reason=reason))
        return sorted(views, key=lambda v: (v.index, v.release))

    def forget(self, app: str) -> None:
        """Drop the crash counts of a deleted app."""
        with self._lock:
            for key in [k for k in self._crashes if k[0] == app]:
                del self._crashes[key]
            for table in (self._slot_reasons, self._last_crash):
                for key in [k for k in table if k[0] == app]:
                    del table[key]

    def _current_routes(self, apps: dict[str, AppRecord]) -> list[Route]:
        domain = str(self._config.fence("router/domain"))
        routes = []
        for name in sorted(apps):
            app = apps[name]
            upstreams = sorted({Upstream(address=i.address, port=CONTAINER_PORT)
                                for i in self._instances.values()
                                if i.app == name and i.state is S.RUNNING and i.address},
                               key=lambda u: (u.address, u.port))
            routes.append(Route(app=name, hosts=(f"{name}.{domain}", *app.urls), upstreams=tuple(upstreams)))
        return routes

    def routes(self) -> list[Route]:
        """The routes the router last accepted."""
        return list(self._routes or [])

    def routed(self, app: str, release: int) -> int:
        """How many running instances of the app's ``release`` the router last accepted."""
        addresses = {u.address for route in self._routes or [] if route.app == app for u in route.upstreams}
        with self._lock:
            return sum(1 for i in self._instances.values() if i.app == app and i.release == release
                       and i.state is S.RUNNING and i.address in addresses)


def _slot_of(info: ContainerInfo) -> tuple[str, int, int]:
    found = info.labels
    try:
        return found.get(labels.APP, ""), int(found.get(labels.INSTANCE, "0")), int(found.get(RELEASE_LABEL, "0"))
    except ValueError:
        return found.get(labels.APP, ""), 0, 0
