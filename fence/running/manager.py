"""The instance reconciler: desired apps in the store against containers found by label."""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import logging
import threading
import time
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import AdmissionRefused, ContainerNotFound, FenceError
from fence.models import AppRecord, ContainerInfo, InstanceView, Route, RolloutProgress, Upstream
from fence.node import total_memory_mib
from fence.running.admission import admit, promised_mib
from fence.running.backoff import BackoffPolicy, Clock, CrashCount, SystemClock
from fence.running.instance import HealthCheck, Instance, PendingStart, TcpHealth, slot_of
from fence.running.rollout import RolloutState, short_id
from fence.running.starter import CONTAINER_PORT, InstanceStarter, Launch
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
    zero-downtime redeploys). The router is updated before an instance is stopped.

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
        on_routes: receives the routes after every pass; raises if the router refused them.
        clock: time source (a fake in tests).
        health: health check (a fake in tests).
        policy: crash backoff.
        drain_seconds: pause between leaving the router and TERM.
        workers: containers started or stopped at once.
        memory_total: the node's RAM in MiB (a fake in tests).
    """

    def __init__(self, *, backend: ContainerBackend, store: StateStore, config: ConfigStore,
                 starter: InstanceStarter, node_id: str,
                 on_routes: Callable[[list[Route]], None] = lambda routes: None,
                 clock: Clock | None = None, health: HealthCheck | None = None,
                 policy: BackoffPolicy | None = None, drain_seconds: float = 2.0, workers: int = 8,
                 memory_total: Callable[[], int] = total_memory_mib) -> None:
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
        self._instances: dict[str, Instance] = {}
        self._crashes: dict[tuple[str, int], CrashCount] = {}
        self._slot_reasons: dict[tuple[str, int], tuple[str, int]] = {}  # why a start failed, release
        self._last_crash: dict[tuple[str, int], str] = {}
        self._pending: set[tuple[str, int, int]] = set()
        self._starting: dict[tuple[str, int, int], PendingStart] = {}
        self._surge: dict[str, int] = {}
        self._rollouts: dict[str, RolloutState] = {}
        self._memory_total = memory_total
        self._seq = 0
        self._removed: collections.deque[str] = collections.deque(maxlen=4096)
        self._unstopped: set[str] = set()
        self._jobs = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="instance")
        self._wake = threading.Event()
        self._passed = threading.Condition()  # notified after every pass
        self._ready: set[str] = set()  # starting instances the fast health probe found ready
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
        threading.Thread(target=self._probe_loop, name="health-probe", daemon=True).start()

    def _probe_loop(self, interval: float = 0.05) -> None:
        """Check starting instances every ``interval`` seconds, between passes, and wake the
        reconciler as soon as one accepts connections (a pass alone would find it up to a pass
        interval later)."""
        while not self._stop.wait(interval):
            with self._lock:
                starting = [(i.container_id, i.address) for i in self._instances.values()
                            if i.state is S.STARTING and i.address and i.container_id not in self._ready]
            ready = {cid for cid, address in starting if self._health.ready(address, CONTAINER_PORT)}
            if ready:
                with self._lock:
                    self._ready |= ready
                self.wake()

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
        to_stop: list[Instance] = []
        with self._lock:
            self._observe(infos, now, listed_at, apps)
            self._check_health(now)
            by_app: dict[str, list[Instance]] = collections.defaultdict(list)
            for instance in self._instances.values():
                by_app[instance.app].append(instance)
            for name in set(by_app) | set(apps):
                to_stop += self._plan(name, apps.get(name), now, by_app.get(name, []))
            for instance in to_stop:
                instance.move(S.STOPPING)
            routes = self._current_routes(apps, by_app)
        try:
            self._on_routes(routes)  # the router reloads only when its config changes
            self._routes = routes
        except FenceError as exc:
            log.warning("router update failed: %s", exc.message)
        except Exception:
            log.exception("router update failed")
        for instance in to_stop:
            self._jobs.submit(self._stop_job, instance)
        with self._passed:
            self._passed.notify_all()

    def wait_pass(self, timeout: float) -> None:
        """Wait until the next reconcile pass has ended (or ``timeout`` seconds)."""
        with self._passed:
            self._passed.wait(timeout)

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
                if slot_of(info) in self._pending:
                    continue  # its start job registers it
                instance = self._adopt(info, now, apps.get(slot_of(info)[0]))
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
        self._ready &= {cid for cid, i in self._instances.items() if i.state is S.STARTING}

    def _adopt(self, info: ContainerInfo, now: float, record: AppRecord | None) -> Instance:
        """A container found by label that this manager did not start (after a daemon restart)."""
        app, index, release = slot_of(info)
        state = S.RUNNING if info.running else S.CRASHED
        instance = Instance(container_id=info.id, app=app, index=index, release=release, state=state,
                             created=now, health_deadline=now, healthy_since=now if info.running else None,
                             reason=None if info.running else self._exit_reason(info),
                             image_id=info.stack_image_id, memory_mib=record.memory_mib if record else 0)
        self._instances[info.id] = instance
        self._store.note_stack(info.stack_image_id, _stack_ref(info), _wall_now())
        count = self._crashes.setdefault((app, index), CrashCount())
        if info.id in self._unstopped:
            # A stop that failed while the engine was away: stop it again, it is no new crash.
            self._unstopped.discard(info.id)
            instance.state = S.CRASHED
            instance.reason = "left over from an interrupted stop"
        elif info.running:
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

    def _crash(self, instance: Instance, reason: str, now: float) -> None:
        instance.move(S.CRASHED)
        instance.reason = reason
        if instance.rollout:
            # A replacement on the new stack: the rollout stops; the old instance keeps serving
            # and the slot's crash count (the serving instance's) is left alone.
            instance.healthy_since = None
            rollout = self._rollouts.get(instance.app)
            if rollout is not None:
                output = self._last_output(instance.container_id)
                rollout.fail(instance.index, f"{reason} (its last output: {output})" if output else reason)
            log.warning("rollout replacement failed", extra={"app": instance.app, "index": instance.index,
                                                             "reason": reason})
            return
        self._last_crash[(instance.app, instance.index)] = reason
        instance.healthy_since = None
        count = self._crashes.setdefault((instance.app, instance.index), CrashCount())
        delay = count.crashed(now, self._policy)
        log.warning("instance crashed", extra={"app": instance.app, "index": instance.index,
                                               "reason": reason, "crashes": count.crashes,
                                               "restart_in": delay})

    def _last_output(self, container_id: str) -> str:
        """The last line the container's main process wrote (why a new stack failed, often)."""
        try:
            lines = [line.strip() for line in self._backend.lookup(container_id).logs(tail=5) if line.strip()]
        except FenceError:
            return ""
        return lines[-1][:300] if lines else ""

    def _check_health(self, now: float) -> None:
        for instance in self._instances.values():
            count = self._crashes.setdefault((instance.app, instance.index), CrashCount())
            if instance.state is S.RUNNING:
                count.healthy_for(now, self._policy)
            if instance.state is not S.STARTING:
                continue
            if instance.address and (instance.container_id in self._ready
                                     or self._health.ready(instance.address, CONTAINER_PORT)):
                instance.move(S.RUNNING)
                instance.healthy_since = now
                instance.reason = None
            elif now >= instance.health_deadline:
                self._crash(instance, f"unhealthy: nothing accepted connections on $PORT within "
                                      f"{instance.health_deadline - instance.created:.0f} s", now)
                self._jobs.submit(self._kill_job, instance.container_id)

    # --- what should be --------------------------------------------------------------------

    def _plan(self, name: str, app: AppRecord | None, now: float, instances: list[Instance]) -> list[Instance]:
        """Start what the app lacks; return what must stop (everything, for a deleted app).

        ``instances`` are the app's instance records (the pass groups them by app once)."""
        mine = [i for i in instances if i.state is not S.STOPPING]
        if app is None or not app.started or app.release is None:
            return mine
        stop = [i for i in mine if i.index >= app.instances]
        rollout = self._rollouts.get(name)
        surge = rollout.surge if rollout is not None else self._surge.get(name)
        replacing = sum(1 for i in mine if i.replacing and i.state is S.STARTING) + \
            sum(1 for (a, _, _), start in self._starting.items() if a == name and start.replacing)
        for index in range(app.instances):
            slot = [i for i in mine if i.index == index]
            current = [i for i in slot if i.release == app.release and i.state in (S.STARTING, S.RUNNING)]
            running = [i for i in current if i.state is S.RUNNING]
            if running:
                # Keep the newest healthy instance (during a rollout: the newest on its image).
                keep = max(running, key=lambda i: (rollout is not None and i.image_id == rollout.image_id,
                                                   i.created))
                stop += [i for i in slot if i.release != app.release or i.state is S.CRASHED]
                stop += [i for i in running if i is not keep]
                if rollout is not None:
                    rollout.replaced_by(keep, [i for i in running if i is not keep])
                    if self._roll_slot(app, index, keep, current, rollout, surge - replacing, now):
                        replacing += 1
            elif not current and (app.name, index, app.release) not in self._pending:
                serving = any(i.state is S.RUNNING for i in slot)
                if serving and surge is not None and replacing >= surge:
                    continue  # the app's surge is used up: this slot's old instance serves on
                count = self._crashes.setdefault((app.name, index), CrashCount())
                if count.gave_up or (count.restart_at is not None and now < count.restart_at):
                    continue
                stop += [i for i in slot if i.state is S.CRASHED]
                if self._start(app, index, now, replacing=serving) and serving:
                    replacing += 1
        return stop

    def _roll_slot(self, app: AppRecord, index: int, keep: Instance, current: list[Instance],
                   rollout: RolloutState, room: int, now: float) -> bool:
        """Start a replacement for a slot whose serving instance runs on another image."""
        if rollout.failed is not None or keep.image_id == rollout.image_id or room <= 0:
            return False
        if any(i.state is S.STARTING for i in current) or (app.name, index, app.release) in self._pending:
            return False
        if not self._start(app, index, now, replacing=True, rollout=rollout):
            return False
        rollout.note(f"instance {index}: starting a replacement on the new stack (container "
                     f"{keep.container_id[:12]} on {short_id(keep.image_id)} keeps serving)")
        return True

    def _start(self, app: AppRecord, index: int, now: float, *, replacing: bool = False,
               rollout: RolloutState | None = None) -> bool:
        """Submit a start job, unless admission refuses it (then the refusal counts as a crash)."""
        release = app.release
        assert release is not None
        refusal = self._admission(app, index)
        if refusal is not None:
            log.warning("instance start refused", extra={"app": app.name, "index": index,
                                                          "error": refusal.message})
            if rollout is not None:
                rollout.fail(index, f"could not start: {refusal.message}")
            else:
                self._slot_reasons[(app.name, index)] = (f"could not start: {refusal.message}", release)
                count = self._crashes.setdefault((app.name, index), CrashCount())
                count.started(now)  # a start that failed at once, as a failed start job counts
                count.crashed(now, self._policy)
            return False
        self._pending.add((app.name, index, release))
        self._starting[(app.name, index, release)] = PendingStart(memory_mib=app.memory_mib, replacing=replacing,
                                                            rollout=rollout is not None)
        if rollout is None:
            self._crashes.setdefault((app.name, index), CrashCount()).started(now)
        self._jobs.submit(self._start_job, app, index, release)
        return True

    def _admission(self, app: AppRecord, index: int) -> AdmissionRefused | None:
        return admit(app=app.name, index=index, need_mib=app.memory_mib, promised=self._promised(),
                     total_mib=self._memory_total(), factor=float(self._config.fence("node/memory_overcommit")))

    def _promised(self) -> int:
        return promised_mib(self._instances.values(), self._starting.values())

    def _start_job(self, app: AppRecord, index: int, release: int) -> None:
        slot = (app.name, index, release)
        with self._lock:
            start = self._starting.get(slot, PendingStart(memory_mib=app.memory_mib, replacing=False, rollout=False))
        try:
            record = self._store.release(app.name, release)
            droplet = self._store.droplet(record.droplet) if record else None
            if droplet is None:
                raise ContainerNotFound(container=f"release {release} of {app.name} (droplet gone)")
            container = self._starter.launch(Launch(app=app, release=release, droplet=droplet, index=index))
            info = container.info()
            self._store.note_stack(info.stack_image_id, _stack_ref(info), _wall_now())
            now = self._clock.now()
            timeout = app.health_timeout or int(self._config.fence("health/timeout"))
            with self._lock:
                self._seq += 1
                self._instances[container.id] = Instance(
                    container_id=container.id, app=app.name, index=index, release=release,
                    state=S.STARTING, created=now, health_deadline=now + timeout,
                    host_port=info.ports[0].host_port if info.ports else None, address=info.ip_address,
                    seq=self._seq, image_id=info.stack_image_id, memory_mib=app.memory_mib,
                    replacing=start.replacing, rollout=start.rollout)
                rollout = self._rollouts.get(app.name) if start.rollout else None
                if rollout is not None and info.stack_image_id != rollout.image_id:
                    rollout.fail(index, f"the stack changed during the rollout (the new container runs on "
                                        f"{short_id(info.stack_image_id)}); run the rollout again")
                if not start.rollout:
                    self._slot_reasons.pop((app.name, index), None)
        except FenceError as exc:
            with self._lock:
                rollout = self._rollouts.get(app.name) if start.rollout else None
                if rollout is not None:
                    rollout.fail(index, f"could not start: {exc.message}")
                elif not start.rollout:
                    self._slot_reasons[(app.name, index)] = (f"could not start: {exc.message}", release)
                    self._crashes.setdefault((app.name, index), CrashCount()).crashed(self._clock.now(), self._policy)
            log.warning("instance start failed", extra={"app": app.name, "index": index, "error": exc.message})
        finally:
            with self._lock:
                self._pending.discard(slot)
                self._starting.pop(slot, None)
            self.wake()

    def _stop_job(self, instance: Instance) -> None:
        removed = True
        try:
            if self._drain and instance.healthy_since is not None:
                time.sleep(self._drain)  # the router has already dropped it; let requests finish
            container = self._backend.lookup(instance.container_id)
            container.stop(grace=10)
            container.destroy()
        except ContainerNotFound:
            pass
        except FenceError as exc:
            # The container may still exist (the engine was away): forget the record but not the
            # container, so a later pass finds it again and stops it, without counting a crash.
            removed = False
            log.warning("instance stop failed", extra={"container": instance.container_id[:12], "error": exc.message})
        finally:
            with self._lock:
                instance.move(S.STOPPED)
                if removed:
                    self._removed.append(instance.container_id)
                else:
                    self._unstopped.add(instance.container_id)
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
        return self.instances_by_app().get(app, [])

    def instances_by_app(self) -> dict[str, list[InstanceView]]:
        """Every app's instances now, by index, in one pass (the apps list of a busy node)."""
        now = self._clock.now()
        views: dict[str, list[InstanceView]] = collections.defaultdict(list)
        with self._lock:
            for i in self._instances.values():
                views[i.app].append(InstanceView(
                    index=i.index, state=i.state.value, container=i.container_id[:12], host_port=i.host_port,
                    restarts=self._crashes.get((i.app, i.index), CrashCount()).crashes, release=i.release,
                    uptime=round(now - i.healthy_since, 1) if i.healthy_since is not None else 0.0,
                    reason=i.reason, last_crash=self._last_crash.get((i.app, i.index)), image_id=i.image_id))
            for (name, index), (reason, release) in self._slot_reasons.items():
                # A refused start of a new release shows beside the old release's instance.
                if not any(v.index == index and v.release >= release for v in views[name]):
                    views[name].append(InstanceView(
                        index=index, state=S.CRASHED.value, container="", host_port=None,
                        restarts=self._crashes.get((name, index), CrashCount()).crashes, release=release,
                        reason=reason))
        return {app: sorted(found, key=lambda v: (v.index, v.release)) for app, found in views.items()}

    def forget(self, app: str) -> None:
        """Drop the crash counts, surge and rollout of a deleted app."""
        with self._lock:
            self._surge.pop(app, None)
            self._rollouts.pop(app, None)
            for key in [k for k in self._crashes if k[0] == app]:
                del self._crashes[key]
            for table in (self._slot_reasons, self._last_crash):
                for key in [k for k in table if k[0] == app]:
                    del table[key]

    # --- surge, rollouts, memory ---------------------------------------------------------------

    def set_surge(self, app: str, surge: int | None) -> None:
        """Replace at most ``surge`` of the app's serving instances at once (``None``: no limit)."""
        with self._lock:
            if surge is None:
                self._surge.pop(app, None)
            else:
                self._surge[app] = max(1, surge)
        self.wake()

    def roll(self, app: str, *, image_id: str, surge: int = 1) -> None:
        """Move the app's serving instances onto containers from ``image_id``, ``surge`` at a time.

        The new containers start from the configured stack (``stack_image``), which must resolve
        to ``image_id``; follow with ``rollout_progress`` and finish with ``end_rollout``.
        """
        with self._lock:
            self._rollouts[app] = RolloutState(app=app, image_id=image_id, surge=max(1, surge))
        self.wake()

    def rollout_progress(self, app: str) -> RolloutProgress | None:
        """Where the app's rollout stands, ``None`` without one."""
        with self._lock:
            rollout = self._rollouts.get(app)
            if rollout is None:
                return None
            starting = any(a == app and start.rollout for (a, _, _), start in self._starting.items())
            return rollout.progress([i for i in self._instances.values() if i.app == app], starting=starting)

    def end_rollout(self, app: str) -> None:
        """Forget the app's rollout (a replacement still starting finishes as a normal instance)."""
        with self._lock:
            self._rollouts.pop(app, None)
            for instance in self._instances.values():
                if instance.app == app:
                    instance.rollout = False

    def promised_mib(self) -> int:
        """The sum of the memory limits of this node's instances (starting, running, stopping)."""
        with self._lock:
            return self._promised()

    def tracked(self) -> set[str]:
        """Ids of the containers this manager keeps a record of (running or crashed)."""
        with self._lock:
            return set(self._instances) | set(self._removed)

    def _current_routes(self, apps: dict[str, AppRecord], by_app: dict[str, list[Instance]]) -> list[Route]:
        domain = str(self._config.fence("router/domain"))
        routes = []
        for name in sorted(apps):
            app = apps[name]
            upstreams = sorted({Upstream(address=i.address, port=CONTAINER_PORT)
                                for i in by_app.get(name, ())
                                if i.state is S.RUNNING and i.address},
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


def _stack_ref(info: ContainerInfo) -> str:
    """The stack image reference a container was started on (its label, else its image)."""
    return str(info.labels.get(labels.STACK_REF) or info.image)


def _wall_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
