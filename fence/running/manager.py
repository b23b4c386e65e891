"""The instance reconciler: desired apps in the store against containers found by label."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Sequence
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import FenceError
from fence.models import AppRecord, ContainerInfo, InstanceView, Route, RolloutProgress
from fence.node import total_memory_mib
from fence.running.admission import admit, promised_mib
from fence.running.backoff import BackoffPolicy, Clock, SystemClock
from fence.running import containers
from fence.running.scheduler import Passes
from fence.running.containers import exit_reason, last_output
from fence.running.health import HealthCheck, HealthMonitor, NetworkHealth, Probe, gate
from fence.running.instance import Instance, PendingStart, SlotKey, SlotTable, slot_of
from fence.running.loop import STEADY_INTERVAL, PassLoop
from fence.running.plan import is_steady, plan_app
from fence.running.rollout import Rollouts, RolloutState
from fence.running.starter import CONTAINER_PORT, InstanceStarter
from fence.running.views import NoRouter, RouteSink, instance_views, routed_count, routed_ids, routes_for
from fence.states import InstanceState
from fence.store import StateStore

log = logging.getLogger("fence.instances")
S = InstanceState


class InstanceManager:
    """Keeps each started app's instances running its current release.

    Every ``tick`` lists this node's instance containers (one engine call), notes exits and
    health, restarts crashed instances with Cloud Foundry's backoff, starts missing ones, and
    stops what is no longer wanted: surplus indexes, stopped or deleted apps, and an old
    release's instance once the new release's instance at the same index is healthy (rolling,
    zero-downtime redeploys). An instance is stopped only once the router serves a config
    without it (while a refused config leaves the old one pointing at it, it keeps running).

    An app may have a *surge*: at most that many of its slots get a replacement started at once
    while their old instance still serves. A *rollout* (``roll``) replaces, ``surge`` at a time,
    every serving instance whose container runs on another image than the rollout's; a
    replacement that fails stops the rollout and leaves the old instance serving. A start that
    would promise instances more memory than ``node/memory_overcommit`` × RAM is refused.

    Args:
        backend: the engine.
        store: desired state.
        config: node config.
        starter: creates instance containers.
        node_id: this node's id.
        routes: receives the routes after every pass (``fence.router.feed.RouteFeed``); raises
            if the router refused them.
        clock: time source (a fake in tests).
        health: health check (a fake in tests).
        health_executor: runs the health checks (default: a pool of ``health_workers`` threads;
            tests pass one that runs them at once).
        policy: crash backoff.
        drain_seconds: pause between leaving the router and TERM.
        workers: containers started or stopped at once.
        memory_total: the node's RAM in MiB (a fake in tests).
    """

    def __init__(self, *, backend: ContainerBackend, store: StateStore, config: ConfigStore,
                 starter: InstanceStarter, node_id: str, routes: RouteSink | None = None,
                 clock: Clock | None = None, health: HealthCheck | None = None,
                 policy: BackoffPolicy | None = None, drain_seconds: float = 2.0, workers: int = 8,
                 memory_total: Callable[[], int] = total_memory_mib,
                 health_executor: concurrent.futures.Executor | None = None, health_workers: int = 8) -> None:
        self._backend = backend
        self._store = store
        self._config = config
        self._starter = starter
        self._node_id = node_id
        self._route_sink = routes or NoRouter()
        self._clock = clock or SystemClock()
        self._health_pool = health_executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=health_workers, thread_name_prefix="health")
        self._monitor = HealthMonitor(check=health or NetworkHealth(), executor=self._health_pool,
                                      failures=lambda: int(self._config.fence("health/failures")),
                                      on_ready=self.wake)
        self._policy = policy or BackoffPolicy()
        self._drain = drain_seconds
        self._lock = threading.RLock()
        self._instances: dict[str, Instance] = {}
        self._slots = SlotTable()
        self._rollouts = Rollouts()
        self._memory_total = memory_total
        self._seq = 0
        self._removed: collections.deque[str] = collections.deque(maxlen=4096)
        self._unstopped: set[str] = set()
        self._jobs = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="instance")
        self._passes = Passes()  # wait_pass
        self._routes: list[Route] | None = None
        self._leaving: dict[str, Instance] = {}  # stopping, not yet handed to a stop job
        self._steady = False  # the last pass found nothing to do and nothing in motion
        self._loop = PassLoop(tick=self.tick, steady=lambda: self._steady, on_error=self._unsteady,
                              events=lambda: backend.container_events({labels.NODE: node_id,
                                                                       labels.ROLE: labels.ROLE_INSTANCE}))

    # --- the loop --------------------------------------------------------------------------

    def run_in_background(self, interval: float = 0.5, steady_interval: float = STEADY_INTERVAL) -> None:
        """Reconcile every ``interval`` seconds (and at once after ``wake`` or an engine event of an
        instance) until ``shutdown``; every ``steady_interval`` seconds instead while the node is
        steady (``running.loop.PassLoop``). Readiness is looked at between passes: a check that
        passes wakes the reconciler (``on_ready``)."""
        self._loop.start(interval, steady_interval)
        threading.Thread(target=self._monitor.watch, args=(self._starting_web,),
                         kwargs={"stop": self._loop.stopping, "clock": self._clock.now}, name="health-probe",
                         daemon=True).start()

    def _starting_web(self) -> list[tuple[str, str, int, Probe]]:
        with self._lock:
            return [(i.container_id, i.address, CONTAINER_PORT, i.probe) for i in self._instances.values()
                    if i.state is S.STARTING and i.web and i.address]

    def _unsteady(self) -> None:
        self._steady = False

    def wake(self) -> None:
        """Reconcile now (desired state changed)."""
        self._loop.wake()

    def shutdown(self) -> None:
        """Stop reconciling; containers keep running (a restarted daemon re-adopts them)."""
        self._loop.stop()
        self._monitor.nudge()  # its watch ends with the loop's stop
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._health_pool.shutdown(wait=False, cancel_futures=True)

    def drain_jobs(self, timeout: float = 60.0) -> None:
        """Wait until started start/stop jobs are done (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                # An instance held until the router lets go of it waits for a pass, not for a job.
                busy = any(self._slots.pending()) or any(i.state is S.STOPPING and i.container_id not in self._leaving
                                                         for i in self._instances.values())
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
        to_stop: list[Instance] = []
        started: list[SlotKey] = []
        with self._lock:
            self._observe(infos, now, listed_at, apps)
            self._check_health(now)
            by_app: dict[str, list[Instance]] = collections.defaultdict(list)
            for instance in self._instances.values():
                by_app[instance.app].append(instance)
            for name in set(by_app) | set(apps):
                app = apps.get(name)
                to_stop += plan_app(app=app, instances=by_app.get(name, []), slots=self._slots,
                                    rollout=self._rollouts.get(name), surge=self._rollouts.surge(name), now=now,
                                    start=lambda key, app=app, **how: started.append(key) or self._start(app, key, now, **how))
            for instance in to_stop:
                instance.move(S.STOPPING)
                self._leaving[instance.container_id] = instance
            self._steady = is_steady(apps, self._instances.values(), moved=bool(to_stop or started or self._leaving),
                                     pending=bool(self._slots.pending()), rolling=self._rollouts.rolling(apps))
            domain = str(self._config.fence("router/domain"))
            routes = routes_for(apps, by_app, domain)
            booting = any(i.state is S.STARTING and i.web and i.address for i in self._instances.values())
            soon = routes_for(apps, by_app, domain, starting=True) if booting else None
        if soon is not None:  # the router checks their config while the instances boot
            self._route_sink.anticipate(soon)
        served: Sequence[Route] | None
        try:
            served = self._route_sink.publish(routes)  # the router reloads only when its config changes
            self._routes = list(served)
        except FenceError as exc:
            log.warning("router update failed: %s", exc.message)
            served = self._route_sink.served()
            self._steady = False  # tried again at the next 0.5 s pass
        except Exception:
            log.exception("router update failed")
            served = self._route_sink.served()
            self._steady = False
        with self._lock:
            # An instance is stopped only once the router serves a config without it: after a
            # refused config the old one still points at it, and its address, once free, may go
            # to another app's container.
            pointed = routed_ids(served, self._leaving.values())
            leaving = [i for cid, i in self._leaving.items() if cid not in pointed]
            for instance in leaving:
                del self._leaving[instance.container_id]
        for instance in leaving:
            self._jobs.submit(self._stop_job, instance)
        self._passes.ended()

    def wait_pass(self, timeout: float) -> None:
        """Wait until a reconcile pass has ended since this thread last returned from here (on
        its first call: the next pass), or ``timeout`` seconds. A pass that ended while the
        caller looked at what the last one left is not missed (it waited for the next then)."""
        self._passes.wait(timeout)

    # --- what the engine says ----------------------------------------------------------------

    def _observe(self, infos: list[ContainerInfo], now: float, listed_at: int,
                 apps: dict[str, AppRecord]) -> None:
        seen = set()
        for info in infos:
            seen.add(info.id)
            instance = self._instances.get(info.id)
            if instance is None:
                if info.id in self._removed:
                    continue  # this manager stopped it after the listing was taken
                key, release = slot_of(info)
                if release in self._slots[key].starting:
                    continue  # its start job registers it
                instance = self._adopt(info, now, apps.get(key.app))
            elif instance.seq > listed_at:
                continue  # registered after the listing: this info may predate its start
            if info.ports:
                instance.host_port = info.ports[0].host_port
            instance.address = info.ip_address or instance.address
            if not info.running and instance.state in (S.STARTING, S.RUNNING):
                self._crash(instance, exit_reason(self._backend, info.id), now)
        for container_id, instance in list(self._instances.items()):
            if container_id in seen or instance.seq > listed_at:
                continue  # still there, or registered after the engine was asked
            if instance.state in (S.STARTING, S.RUNNING):
                self._crash(instance, "the container vanished", now)
            if instance.state is not S.STOPPING:
                del self._instances[container_id]

    def _adopt(self, info: ContainerInfo, now: float, record: AppRecord | None) -> Instance:
        """A container found by label that this manager did not start (after a daemon restart)."""
        instance = containers.adopt(info, record, now=now, backend=self._backend, store=self._store,
                                    slots=self._slots, unstopped=self._unstopped, policy=self._policy)
        self._instances[info.id] = instance
        return instance

    def _crash(self, instance: Instance, reason: str, now: float) -> None:
        instance.move(S.CRASHED)
        instance.reason = reason
        instance.healthy_since = None
        if instance.rollout:  # the slot's crash count (the serving instance's) is left alone
            self._rollouts.crashed(instance, reason, output=lambda: last_output(self._backend, instance.container_id))
            return
        slot = self._slots[instance.slot]
        delay = slot.crashed(reason, now, self._policy)
        log.warning("instance crashed", extra={"app": instance.app, "instance": instance.name,
                                               "reason": reason, "crashes": slot.crashes.crashes,
                                               "restart_in": delay})

    def _check_health(self, now: float) -> None:
        self._monitor.forget(set(self._instances))
        gate(list(self._instances.values()), self._monitor, now=now, port=CONTAINER_PORT,
             running=lambda instance: self._slots[instance.slot].crashes.healthy_for(now, self._policy),
             failed=lambda instance, why: self._replace(instance, why, now))

    def _replace(self, instance: Instance, why: str, now: float) -> None:
        """A failed health check: a crash, and the container is killed (the next pass restarts it)."""
        self._crash(instance, why, now)
        self._jobs.submit(containers.kill, self._backend, instance.container_id)

    # --- starting and stopping---------------------------------------------------------------

    def _start(self, app: AppRecord, key: SlotKey, now: float, *, replacing: bool = False,
               rollout: RolloutState | None = None) -> bool:
        """Submit a start job, unless admission refuses it (then the refusal counts as a crash)."""
        release = app.release
        assert release is not None
        slot = self._slots[key]
        need = app.memory_for(key.process)
        refusal = admit(app=app.name, index=key.index, need_mib=need, promised=self._promised(),
                        total_mib=self._memory_total(), factor=float(self._config.fence("node/memory_overcommit")))
        if refusal is not None:
            log.warning("instance start refused", extra={"app": app.name, "instance": f"{key.process}.{key.index}",
                                                          "error": refusal.message})
            if rollout is not None:
                rollout.fail(key.index, f"could not start: {refusal.message}")
            else:
                slot.crashes.started(now)  # a start that failed at once, as a failed start job counts
                slot.start_failed(f"could not start: {refusal.message}", release, now, self._policy)
            return False
        slot.starting[release] = PendingStart(memory_mib=need, replacing=replacing,
                                              rollout=rollout is not None)
        if rollout is None:
            slot.crashes.started(now)
        self._jobs.submit(self._start_job, app, key, release)
        return True

    def _promised(self) -> int:
        return promised_mib(self._instances.values(), self._slots.pending())

    def _start_job(self, app: AppRecord, key: SlotKey, release: int) -> None:
        index = key.index
        with self._lock:
            start = self._slots[key].starting.get(
                release, PendingStart(memory_mib=app.memory_for(key.process), replacing=False, rollout=False))
        try:
            instance = containers.launch(store=self._store, starter=self._starter, config=self._config, app=app,
                                         key=key, release=release, start=start, clock=self._clock)
            with self._lock:
                self._seq += 1
                instance.seq = self._seq
                self._instances[instance.container_id] = instance
                if start.rollout:
                    self._rollouts.started(instance)
                else:
                    self._slots[key].refused = None
            self._monitor.nudge()  # its readiness is looked at every READY_INTERVAL from now
        except FenceError as exc:
            with self._lock:
                if start.rollout:
                    self._rollouts.fail(app.name, index, f"could not start: {exc.message}")
                else:
                    self._slots[key].start_failed(f"could not start: {exc.message}", release, self._clock.now(),
                                                 self._policy)
            log.warning("instance start failed", extra={"app": app.name, "instance": f"{key.process}.{index}", "error": exc.message})
        finally:
            with self._lock:
                self._slots[key].starting.pop(release, None)
            self.wake()

    def _stop_job(self, instance: Instance) -> None:
        removed = True
        try:
            removed = containers.stop(self._backend, instance, drain=self._drain)
        finally:
            with self._lock:
                instance.move(S.STOPPED)
                # A container whose stop failed is forgotten, not its id: a later pass finds it
                # again and stops it, without counting a crash.
                (self._removed.append if removed else self._unstopped.add)(instance.container_id)
                self._instances.pop(instance.container_id, None)
            self.wake()

    # --- views -----------------------------------------------------------------------------

    def instances(self, app: str) -> list[InstanceView]:
        """The app's instances now, by index."""
        return self.instances_by_app().get(app, [])

    def instances_by_app(self) -> dict[str, list[InstanceView]]:
        """Every app's instances now, by index, in one pass (the apps list of a busy node)."""
        with self._lock:
            return instance_views(self._instances.values(), self._slots.by_app(), self._clock.now())

    def forget(self, app: str) -> None:
        """Drop the slot records (crash counts, reasons), surge and rollout of a deleted app."""
        with self._lock:
            self._rollouts.forget(app)
            self._slots.forget(app)

    # --- surge, rollouts, memory ---------------------------------------------------------------

    def set_surge(self, app: str, surge: int | None) -> None:
        """Replace at most ``surge`` of the app's serving instances at once (``None``: no limit)."""
        with self._lock:
            self._rollouts.set_surge(app, surge)
        self.wake()

    def roll(self, app: str, *, image_id: str, surge: int = 1) -> None:
        """Move the app's serving instances onto containers from ``image_id``, ``surge`` at a time.

        The new containers start from the configured stack (``stack_image``), which must resolve
        to ``image_id``; follow with ``rollout_progress`` and finish with ``end_rollout``.
        """
        with self._lock:
            self._rollouts.begin(app, image_id=image_id, surge=surge)
        self.wake()

    def rollout_progress(self, app: str) -> RolloutProgress | None:
        """Where the app's rollout stands, ``None`` without one."""
        with self._lock:
            rollout = self._rollouts.get(app)
            if rollout is None:
                return None
            starting = any(start.rollout for start in self._slots.pending(app))
            return rollout.progress([i for i in self._instances.values() if i.app == app], starting=starting)

    def end_rollout(self, app: str) -> None:
        """Forget the app's rollout (a replacement still starting finishes as a normal instance)."""
        with self._lock:
            self._rollouts.end(app)
            for instance in self._instances.values():
                if instance.app == app:
                    instance.rollout = False

    def promised_mib(self) -> int:
        """The sum of the memory limits of this node's instances (starting, running, stopping)."""
        with self._lock:
            return self._promised()

    def running_ids(self) -> list[str]:
        """Full ids of the containers of this node's starting and running instances (as the
        last pass or start job found them: no engine call)."""
        with self._lock:
            return [cid for cid, i in self._instances.items() if i.state in (S.STARTING, S.RUNNING)]

    def tracked(self) -> set[str]:
        """Ids of the containers this manager keeps a record of (running or crashed)."""
        with self._lock:
            return set(self._instances) | set(self._removed)

    def routes(self) -> list[Route]:
        """The routes the router last accepted."""
        return list(self._routes or [])

    def routed(self, app: str, release: int) -> int:
        """How many running instances of the app's ``release`` the router last accepted."""
        with self._lock:
            return routed_count(self._routes or [], self._instances.values(), app, release)
