"""Health checks of instances: readiness before an instance is routed, liveness while it runs, off the reconciler's thread."""

from __future__ import annotations

import concurrent.futures
import http.client
import socket
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Protocol

from fence.models import HealthSettings
from fence.states import InstanceState

if TYPE_CHECKING:
    from fence.running.instance import Instance

DEFAULT_INTERVAL = 10
# Starting instances are checked this often (seconds): a refused connection costs well under a
# millisecond, and each interval is time an instance that came up waits before it is routed.
READY_INTERVAL = 0.02
# One readiness attempt: the watch tries again READY_INTERVAL after an attempt ends, so keep it short.
READY_TIMEOUT = 1.0
# With nothing starting the watch sleeps until the next liveness check is due or a start nudges it
# (``HealthMonitor.nudge``), but looks at least this often (seconds) in case a nudge was missed.
IDLE_LOOK = 1.0
# One liveness attempt: at least 1 s (a loaded node answers late), at most 5 s, never more than the interval.
LIVE_TIMEOUT_MIN, LIVE_TIMEOUT_MAX = 1.0, 5.0


@dataclass(frozen=True)
class Probe:
    """What is checked on one instance (fixed when it starts, so a redeploy that changes the
    check never applies it to the previous release's instances).

    Attributes:
        type: ``port``, ``http`` or ``process``.
        path: the ``http`` check's path.
        interval: seconds between liveness checks.
    """

    type: str = "port"
    path: str | None = None
    interval: float = DEFAULT_INTERVAL

    def describe(self) -> str:
        """The check in the words ``fence app`` uses (``http /healthz``, ``port``)."""
        return f"http {self.path}" if self.type == "http" else self.type

    @property
    def live_timeout(self) -> float:
        """The bound of one liveness attempt, in seconds."""
        return max(LIVE_TIMEOUT_MIN, min(LIVE_TIMEOUT_MAX, float(self.interval)))


def probe_for(health: HealthSettings | None, *, web: bool) -> Probe:
    """The check of an instance: the app's settings for ``web``; a ``process`` check for every
    other process type (it has no port).

    Args:
        health: the app's health settings (``None``: a ``port`` check every 10 s).
        web: whether the instance runs the ``web`` process.
    """
    if not web:
        return Probe(type="process", interval=(health.interval if health and health.interval else DEFAULT_INTERVAL))
    if health is None:
        return Probe()
    return Probe(type=health.type, path=health.path if health.type == "http" else None,
                 interval=health.interval or DEFAULT_INTERVAL)


class HealthCheck(Protocol):
    """One check of one instance, over the network."""

    def check(self, address: str, port: int, probe: Probe, timeout: float) -> str | None:
        """``None`` when the instance passes now; else what failed, in a few words (``500``,
        ``connection refused``), within ``timeout`` seconds."""


class NetworkHealth:
    """Checks the instance at its own address on its bridge network: not through the router,
    nor through the published port, whose userland proxy accepts connections even when nothing
    listens behind it."""

    def check(self, address: str, port: int, probe: Probe, timeout: float) -> str | None:
        """A TCP connection (``port``) or a GET with a 2xx/3xx answer (``http``); ``process``
        always passes here (the engine reports its exit)."""
        if probe.type == "process":
            return None
        if probe.type == "http":
            return _http(address, port, probe.path or "/", timeout)
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return None
        except OSError as exc:
            return _os_error(exc)


def _http(address: str, port: int, path: str, timeout: float) -> str | None:
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "fence-health-check", "Connection": "close"})
        response = connection.getresponse()
        response.read(64 * 1024)  # a bounded read: the answer's body does not matter
        return None if 200 <= response.status < 400 else str(response.status)
    except OSError as exc:
        return _os_error(exc)
    except http.client.HTTPException as exc:
        return f"no HTTP answer ({type(exc).__name__})"
    finally:
        connection.close()


def _os_error(exc: OSError) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or type(exc).__name__


def gate(instances: Iterable[Instance], monitor: HealthMonitor, *, now: float, port: int,
         running: Callable[[Instance], None], failed: Callable[[Instance, str], None]) -> None:
    """What the checks' outcomes do to instances, once per reconcile pass (the checks run in the
    monitor's pool: nothing here waits for an instance to answer).

    A starting web instance whose readiness check passed runs (and is routed); one that has not
    passed by its health deadline fails. Any other process type runs once still up at its
    deadline (``health/grace``; an exit before is seen as a crash). A running instance whose
    liveness checks failed ``health/failures`` times in a row fails.

    Args:
        instances: the instances the manager keeps.
        monitor: runs the checks and keeps their outcomes.
        now: the pass's time.
        port: the port checked in each container.
        running: called for each running instance (its slot's crash count heals with time).
        failed: called with an instance to be replaced and why (a crash; its container is killed).
    """
    for instance in instances:
        if instance.state is InstanceState.RUNNING:
            running(instance)
            why = monitor.live(instance.container_id, instance.address, port, instance.probe, now=now,
                               since=instance.healthy_since or now)
            if why is not None:
                failed(instance, why)
        elif instance.state is not InstanceState.STARTING:
            continue
        elif not instance.web:
            if now >= instance.health_deadline:
                _runs(instance, now)
        elif instance.address and monitor.ready(instance.container_id, instance.address, port, instance.probe):
            _runs(instance, now)
        elif now >= instance.health_deadline:
            failed(instance, startup_failure(instance.probe, instance.health_deadline - instance.created,
                                             monitor.last_failure(instance.container_id)))


def _runs(instance: Instance, now: float) -> None:
    instance.move(InstanceState.RUNNING)
    instance.healthy_since = now
    instance.reason = None


def times(count: int) -> str:
    """``once``, ``twice``, ``three times``, … ``12 times``."""
    words = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times"}
    return words.get(count, f"{count} times")


def startup_failure(probe: Probe, seconds: float, last: str | None) -> str:
    """Why a starting instance that never passed its check is given up (``fence app``'s words)."""
    if probe.type == "port":
        return f"unhealthy: nothing accepted connections on $PORT within {seconds:.0f} s"
    return (f"unhealthy: health check {probe.describe()} did not pass within {seconds:.0f} s"
            + (f" (last: {last})" if last else ""))


@dataclass
class _Liveness:
    due: float
    failures: int = 0
    verdict: str | None = None
    target: tuple[str, int, Probe] | None = None  # (address, port, probe): the watch starts due checks


@dataclass
class _Records:
    ready: set[str] = field(default_factory=set)
    last: dict[str, str] = field(default_factory=dict)
    live: dict[str, _Liveness] = field(default_factory=dict)
    inflight: set[str] = field(default_factory=set)


class HealthMonitor:
    """Runs the checks in a small thread pool and keeps their outcomes, so that neither the
    reconciler's pass nor the fast readiness watch ever waits for an instance to answer.

    Args:
        check: the network check (a fake in tests).
        executor: runs the checks (a pool; tests pass one that runs them at once).
        failures: ``health/failures``, read at each failure (the node's config may change).
        on_ready: called (on the check's thread) as soon as a readiness check passes or a
            liveness verdict is reached: the reconciler's wake, so that the instance is routed
            (or replaced) now rather than at the reconciler's next pass.
    """

    def __init__(self, *, check: HealthCheck, executor: concurrent.futures.Executor,
                 failures: Callable[[], int], on_ready: Callable[[], None] = lambda: None) -> None:
        self._check = check
        self._executor = executor
        self._failures = failures
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._records = _Records()
        self._nudged = threading.Event()

    def nudge(self) -> None:
        """Make the watch look now (an instance began starting, or the watch is to stop)."""
        self._nudged.set()

    def watch(self, starting: Callable[[], list[tuple[str, str, int, Probe]]], *, stop: threading.Event,
              interval: float = READY_INTERVAL, idle: float = IDLE_LOOK,
              clock: Callable[[], float] = time.monotonic) -> None:
        """Until ``stop``: while instances start, every ``interval`` seconds, start a readiness
        check of each one that has none in flight and has not passed (the reconciler's pass alone
        would look only every pass interval); a pass calls ``on_ready``. It also starts the
        liveness checks of running instances as they fall due (so they keep their interval
        however seldom the reconciler passes). With nothing starting it sleeps until the next
        liveness check is due, a ``nudge``, or ``idle`` seconds.

        Args:
            starting: ``(container id, address, port, probe)`` of each starting instance now.
            stop: ends the watch (``nudge`` after setting it, or it ends within ``idle``).
            interval: seconds between looks while an instance starts.
            idle: the longest sleep with nothing starting.
            clock: the time liveness checks are due by (the ``now`` the manager passes to ``live``).
        """
        while not stop.is_set():
            self._nudged.clear()
            found = starting()
            for container_id, address, port, probe in found:
                self.ready(container_id, address, port, probe)
            due = self._start_due(clock())
            if found:
                stop.wait(interval)
            else:
                self._nudged.wait(max(0.0, min(idle, due - clock())))

    def _start_due(self, now: float) -> float:
        """Start every liveness check that is due; when the next one falls due (``inf``: none)."""
        submit: list[tuple[str, str, int, Probe]] = []
        later = float("inf")
        with self._lock:
            records = self._records
            for container_id, state in records.live.items():
                if state.target is None or state.verdict is not None or container_id in records.inflight:
                    continue
                if now >= state.due:
                    state.due = now + state.target[2].interval
                    records.inflight.add(container_id)
                    submit.append((container_id, *state.target))
                later = min(later, state.due)
        for container_id, address, port, probe in submit:
            self._submit(self._live_job, container_id, address, port, probe)
        return later

    def ready(self, container_id: str, address: str, port: int, probe: Probe) -> bool:
        """Whether a readiness check of the starting instance has passed; starts one when none
        is in flight (never waits for it)."""
        if probe.type == "process":
            return True  # its process runs: the engine says so before the instance is STARTING here
        records = self._records
        with self._lock:
            if container_id in records.ready:
                return True
            self._nudged.set()  # a pass found it starting: the watch looks at it every READY_INTERVAL
            if container_id in records.inflight:
                return False
            records.inflight.add(container_id)
        self._submit(self._ready_job, container_id, address, port, probe)
        with self._lock:
            return container_id in records.ready

    def last_failure(self, container_id: str) -> str | None:
        """What the instance's last failed readiness check said."""
        with self._lock:
            return self._records.last.get(container_id)

    def live(self, container_id: str, address: str | None, port: int, probe: Probe, *, now: float,
             since: float) -> str | None:
        """Start a liveness check of the running instance when one is due (``interval`` seconds
        after the last, the first one ``interval`` after ``since``).

        Returns:
            Why it is to be replaced, once, after ``health/failures`` failed checks in a row
            (``health check http /healthz: 500 three times``); else ``None``.
        """
        if probe.type == "process" or not address:
            return None
        records = self._records
        with self._lock:
            state = records.live.get(container_id)
            if state is None:
                state = records.live[container_id] = _Liveness(due=since + probe.interval)
                self._nudged.set()  # the watch sleeps until this one's first check is due
            state.target = (address, port, probe)
            if state.verdict is None and container_id not in records.inflight and now >= state.due:
                state.due = now + probe.interval
                records.inflight.add(container_id)
                submit = True
            else:
                submit = False
        if submit:
            self._submit(self._live_job, container_id, address, port, probe)
        with self._lock:
            verdict, state.verdict = state.verdict, None
            if verdict is not None:
                state.failures = 0
            return verdict

    def forget(self, keep: set[str]) -> None:
        """Drop the outcomes of every container not in ``keep`` (stopped, removed)."""
        records = self._records
        with self._lock:
            records.ready &= keep
            for table in (records.last, records.live):
                for container_id in [c for c in table if c not in keep]:
                    del table[container_id]

    def _submit(self, job: Callable[..., None], container_id: str, *args: object) -> None:
        try:
            self._executor.submit(job, container_id, *args)
        except RuntimeError:  # the pool is shut down: the daemon is stopping
            with self._lock:
                self._records.inflight.discard(container_id)

    def _ready_job(self, container_id: str, address: str, port: int, probe: Probe) -> None:
        try:
            failed = self._check.check(address, port, probe, READY_TIMEOUT)
        except Exception as exc:  # a bug in a check must not leave the instance in flight forever
            failed = f"check failed ({type(exc).__name__})"
        with self._lock:
            self._records.inflight.discard(container_id)
            if failed is None:
                self._records.ready.add(container_id)
            else:
                self._records.last[container_id] = failed
        if failed is None:
            self._on_ready()

    def _live_job(self, container_id: str, address: str, port: int, probe: Probe) -> None:
        try:
            failed = self._check.check(address, port, probe, probe.live_timeout)
        except Exception as exc:
            failed = f"check failed ({type(exc).__name__})"
        threshold = max(1, int(self._failures()))
        with self._lock:
            self._records.inflight.discard(container_id)
            state = self._records.live.get(container_id)
            if state is None:
                return  # forgotten while the check ran
            if failed is None:
                state.failures = 0
                return
            state.failures += 1
            if state.failures < threshold:
                return
            state.verdict = f"health check {probe.describe()}: {failed} {times(state.failures)}"
        self._on_ready()  # the reconciler replaces it at once, not at its next pass
