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
# The sampler's tick: every running instance is read this often, so a request finds a baseline
# (one tick of 50 instances reads about 300 small files: well under 1 % of a core).
TICK = 5.0
# The thread ends when nobody asked for this long (an idle daemon pays nothing for it); the next
# request starts it again, sampling twice once.
IDLE_AFTER = 60.0


class UsageSampler:
    """Keeps the last few usage samples of every instance of the node, for CPU rates.

    Its thread starts at a request (a daemon that is never asked reads nothing), samples every
    ``tick`` seconds and ends after ``IDLE_AFTER`` seconds without one; a request for an instance
    with no recent baseline samples it twice, ``MIN_GAP`` apart.

    Args:
        backend: the engine.
        node_id: this node (its instances' label).
        tick: seconds between the background samples.
        sleep: waits between two samples (tests: a fake clock).
    """

    def __init__(self, *, backend: ContainerBackend, node_id: str, tick: float = TICK,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._backend = backend
        self._node_id = node_id
        self._tick = tick
        self._sleep = sleep
        self._lock = threading.Lock()
        self._history: dict[str, collections.deque[UsageSample]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._asked = time.monotonic()

    def rates(self, container_ids: Iterable[str]) -> dict[str, tuple[UsageSample, float]]:
        """Each running container's sample now and its CPU % (of one core) since a recent baseline."""
        self._asked = time.monotonic()
        self._ensure_thread()
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
        """Keep ``sample``; the CPU % against the newest baseline at least MIN_GAP older, if any."""
        with self._lock:
            history = self._history.setdefault(container_id, collections.deque(maxlen=4))
            base = next((h for h in reversed(history) if MIN_GAP <= sample.at - h.at <= MAX_AGE), None)
            history.append(sample)
        if base is None:
            return None
        used = max(0.0, sample.cpu_seconds - base.cpu_seconds)
        return round(100.0 * used / (sample.at - base.at), 2)

    def tick(self) -> None:
        """Sample every running instance of the node once (the thread's work; tests call it)."""
        infos = self._backend.list_info({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE})
        running = [i.id for i in infos if i.running]
        for cid, sample in self._backend.usage(running).items():
            self._record(cid, sample)
        with self._lock:
            for gone in set(self._history) - set(running):
                del self._history[gone]

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="usage-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                if time.monotonic() - self._asked > IDLE_AFTER:
                    self._thread = None  # the next request starts another
                    return
            try:
                self.tick()
            except FenceError as exc:  # the engine is away: the next tick tries again
                log.warning("could not sample usage", extra={"error": exc.message})

    def close(self) -> None:
        """Stop the thread (it ends within a tick)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self._tick + 1)


def app_stats(*, view: AppView, backend: ContainerBackend, node_id: str,
              sampler: UsageSampler) -> list[InstanceStats]:
    """Per-instance usage of one app: its instances (from ``view``) and their counters now.

    Instances that are not running have zero usage; web first, then by type and index.
    """
    infos = backend.list_info({labels.NODE: node_id, labels.ROLE: labels.ROLE_INSTANCE, labels.APP: view.name})
    by_short = {i.id[:12]: i for i in infos}
    rates = sampler.rates(i.id for i in infos if i.running)
    found = []
    for instance in view.instance_list:
        info = by_short.get(instance.container)
        sample, cpu = rates.get(info.id, (None, 0.0)) if info is not None else (None, 0.0)
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
