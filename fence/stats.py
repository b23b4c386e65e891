"""Instance usage for `fence stats` and `kato node top`: the backend's counters, and a small sampler that turns them into CPU %."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

from fence import labels
from fence.backend.base import ContainerBackend, UsageSample
from fence.errors import FenceError
from fence.models import AppView
from fence.usage_models import AppUsage, InstanceStats

log = logging.getLogger("fence.stats")

# CPU % is the CPU time used between two samples over the time between them. A baseline closer
# than MIN_GAP is too noisy; one older than MAX_AGE says little about "now".
MIN_GAP = 0.5
MAX_AGE = 30.0
# The sampler's tick: every running instance's CPU counter (one small file) is read this often,
# so that a request always finds a baseline and never waits (50 instances: about 1 ms of CPU a
# tick, well under 0.1 % of a core).
TICK = 5.0

Baseline = tuple[float, float]  # (CPU seconds, time.monotonic() when read)


class UsageSampler:
    """Keeps recent CPU baselines of every running instance of the node, for CPU rates.

    Its thread (``start``; a request starts it too) reads each running instance's CPU counter
    every ``tick`` seconds, so a request reads the full counters once and rates them against a
    baseline at most ``tick`` seconds old. Only an instance that started since the last tick has
    none: it is sampled twice, ``MIN_GAP`` apart.

    Args:
        backend: the engine.
        node_id: this node (its instances' label).
        tick: seconds between the background baselines.
        sleep: waits between two samples (tests: a fake clock).
        running: full ids of the node's running instances (the reconciler's records: no engine
            call); ``None`` lists them through the engine.
    """

    def __init__(self, *, backend: ContainerBackend, node_id: str, tick: float = TICK,
                 sleep: Callable[[float], None] = time.sleep,
                 running: Callable[[], Iterable[str]] | None = None) -> None:
        self._backend = backend
        self._node_id = node_id
        self._tick = tick
        self._sleep = sleep
        self._running = running
        self._lock = threading.Lock()
        self._history: dict[str, collections.deque[Baseline]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def running_ids(self) -> list[str]:
        """Full ids of the node's running instance containers."""
        if self._running is not None:
            return list(self._running())
        infos = self._backend.list_info({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE})
        return [i.id for i in infos if i.running]

    def rates(self, container_ids: Iterable[str]) -> dict[str, tuple[UsageSample, float]]:
        """Each running container's sample now and its CPU % (of one core) since a recent baseline."""
        self.start()
        ids = list(container_ids)
        fresh = self._backend.usage(ids)
        answers = {cid: (s, rate) for cid, s in fresh.items() if (rate := self._record(cid, s)) is not None}
        missing = [cid for cid in fresh if cid not in answers]
        if missing:
            self._sleep(MIN_GAP)
            for cid, sample in self._backend.usage(missing).items():
                rate = self._record(cid, sample)
                answers[cid] = (sample, rate if rate is not None else 0.0)
        return answers

    def _record(self, container_id: str, sample: UsageSample) -> float | None:
        """Keep ``sample`` as a baseline; the CPU % against the newest baseline at least MIN_GAP older, if any."""
        return self._note(container_id, (sample.cpu_seconds, sample.at))

    def _note(self, container_id: str, read: Baseline) -> float | None:
        cpu, at = read
        with self._lock:
            history = self._history.setdefault(container_id, collections.deque(maxlen=4))
            base = next((h for h in reversed(history) if MIN_GAP <= at - h[1] <= MAX_AGE), None)
            # Requests close together keep one baseline per MIN_GAP: four of them always reach
            # back far enough for the next request's rate.
            if not history or at - history[-1][1] >= MIN_GAP:
                history.append(read)
        if base is None:
            return None
        return round(100.0 * max(0.0, cpu - base[0]) / (at - base[1]), 2)

    def tick(self) -> None:
        """Read every running instance's CPU counter once (the thread's work; tests call it)."""
        running = self.running_ids()
        for cid, read in self._backend.cpu_seconds(running).items():
            self._note(cid, read)
        with self._lock:
            for gone in set(self._history) - set(running):
                del self._history[gone]

    def start(self) -> None:
        """Start the thread (once; ``close`` ends it)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="usage-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except FenceError as exc:  # the engine is away: the next tick tries again
                log.warning("could not sample usage", extra={"error": exc.message})
            except Exception:  # a bug must not end the baselines
                log.exception("usage sampling failed")
            if self._stop.wait(self._tick):
                return

    def close(self) -> None:
        """Stop the thread (it ends within a tick)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self._tick + 1)


def app_stats(*, view: AppView, sampler: UsageSampler) -> list[InstanceStats]:
    """Per-instance usage of one app: its instances (from ``view``) and their counters now.

    Instances that are not running have zero usage; web first, then by type and index.
    """
    by_short = {cid[:12]: cid for cid in sampler.running_ids()}
    rates = sampler.rates(by_short[i.container] for i in view.instance_list if i.container in by_short)
    found = []
    for instance in view.instance_list:
        full = by_short.get(instance.container)
        sample, cpu = rates.get(full, (None, 0.0)) if full is not None else (None, 0.0)
        found.append(InstanceStats(
            app=view.name, type=instance.process, index=instance.index, state=instance.state,
            container=instance.container, release=instance.release, cpu_percent=cpu if sample else 0.0,
            cpu_seconds=round(sample.cpu_seconds, 3) if sample else 0.0,
            memory_bytes=sample.memory_bytes if sample else 0,
            memory_limit_bytes=sample.memory_limit_bytes if sample else 0,
            net_rx_bytes=sample.net_rx_bytes if sample else 0, net_tx_bytes=sample.net_tx_bytes if sample else 0,
            restarts=instance.restarts, uptime=round(instance.uptime, 1)))
    return sorted(found, key=lambda s: (s.type != "web", s.type, s.index))


def node_top(*, backend: ContainerBackend, node_id: str, sampler: UsageSampler) -> list[AppUsage]:
    """Every app's usage summed over its running instances, the busiest CPU first."""
    infos = [i for i in backend.list_info({labels.NODE: node_id, labels.ROLE: labels.ROLE_INSTANCE}) if i.running]
    rates = sampler.rates(i.id for i in infos)
    totals: dict[str, list[float]] = {}
    for info in infos:
        if info.id not in rates:
            continue
        sample, cpu = rates[info.id]
        total = totals.setdefault(info.labels.get(labels.APP, "?"), [0, 0.0, 0, 0])
        total[0] += 1
        total[1] += cpu
        total[2] += sample.memory_bytes
        total[3] += sample.memory_limit_bytes
    usage = [AppUsage(app=app, instances=int(n), cpu_percent=round(cpu, 2), memory_bytes=int(mem),
                      memory_limit_bytes=int(limit)) for app, (n, cpu, mem, limit) in totals.items()]
    return sorted(usage, key=lambda u: (-u.cpu_percent, -u.memory_bytes, u.app))
