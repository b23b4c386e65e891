"""The daemon's Prometheus metrics: instances, apps, stagings, router requests, drain drops and API latency."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fence.errors import FenceError

log = logging.getLogger("fence.metrics")

# Dropped lines by drain name; a log drain (issue 18) registers one with ``add_drain_drops``.
DrainDrops = Callable[[], Mapping[str, int]]

_STAGING_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, float("inf"))
_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


class NodeMetrics:
    """The registry the daemon serves on ``/metrics``, and the hooks that feed it.

    Instance, app, router and drain figures are read when scraped (nothing runs between
    scrapes); stagings and API requests are observed as they finish.

    Args:
        service: the node (``fence.service.NodeService``: backend, apps, router).
        router_requests: counts by (app, status) so far (``AccessLogCounter.counts``), if routed.
    """

    def __init__(self, *, service: Any, router_requests: Callable[[], Mapping[tuple[str, str], int]] | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._drains: list[DrainDrops] = []
        self._lock = threading.Lock()
        self.staging = Histogram("fence_staging_duration_seconds", "Stagings by outcome (ok, failed), in seconds",
                                 ["outcome"], buckets=_STAGING_BUCKETS, registry=self.registry)
        self.api = Histogram("fence_api_request_duration_seconds", "Daemon API requests by method and route, in "
                             "seconds (streamed answers: until the stream ends)", ["method", "route"],
                             buckets=_API_BUCKETS, registry=self.registry)
        self.registry.register(_NodeCollector(service=service, router_requests=router_requests,
                                              drains=self._drain_figures))

    def add_drain_drops(self, source: DrainDrops) -> None:
        """Register a source of drain drop counts: a callable answering ``{drain name: lines dropped}``
        (cumulative). Every registered source is asked at each scrape; one that raises is skipped."""
        with self._lock:
            self._drains.append(source)

    def _drain_figures(self) -> dict[str, int]:
        with self._lock:
            sources = list(self._drains)
        figures: dict[str, int] = {}
        for source in sources:
            try:
                figures.update({str(k): int(v) for k, v in source().items()})
            except Exception as exc:  # noqa: BLE001 - a drain's bug must not take /metrics down
                log.warning("a drain's drop counts could not be read", extra={"error": str(exc)})
        return figures

    def time_stagings(self, session: Any) -> None:
        """Observe every staging's duration and outcome: wraps the session's ``stage`` and
        ``restage`` on this instance (the staging package, shared by many, stays untouched)."""
        for name in ("stage", "restage"):
            setattr(session, name, self._timed(getattr(session, name)))

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, outcome = time.monotonic(), "failed"
            try:
                result = call(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                self.staging.labels(outcome=outcome).observe(time.monotonic() - started)
        return timed


class _NodeCollector(Collector):
    """Figures read at scrape time from the engine, the cgroups, the manager and the router log."""

    def __init__(self, *, service: Any, router_requests: Callable[[], Mapping[tuple[str, str], int]] | None,
                 drains: Callable[[], Mapping[str, int]]) -> None:
        self._service = service
        self._router_requests = router_requests
        self._drains = drains

    def collect(self) -> Iterator[Any]:
        yield from self._instances()
        requests = CounterMetricFamily("fence_router_requests", "Requests the router answered, by app ('' for "
                                       "unknown host names) and HTTP status", labels=["app", "status"])
        for (app, status), count in sorted((self._router_requests() if self._router_requests else {}).items()):
            requests.add_metric([app, status], count)
        yield requests
        drops = CounterMetricFamily("fence_drain_dropped_lines", "Log lines a drain dropped (its buffer was "
                                    "full or the receiver was away)", labels=["drain"])
        for drain, count in sorted(self._drains().items()):
            drops.add_metric([drain], count)
        yield drops

    def _instances(self) -> Iterator[Any]:
        per = ["app", "type", "instance", "release"]
        cpu = CounterMetricFamily("fence_instance_cpu_seconds", "CPU time an instance's container used", labels=per)
        memory = GaugeMetricFamily("fence_instance_memory_bytes", "Memory an instance uses (as docker stats "
                                   "counts it)", labels=per)
        limit = GaugeMetricFamily("fence_instance_memory_limit_bytes", "An instance's memory limit", labels=per)
        restarts = CounterMetricFamily("fence_instance_restarts", "Crashes of an instance's slot that the "
                                       "restart policy counted", labels=per)
        healthy = GaugeMetricFamily("fence_instance_healthy", "1 if the instance is running and passes its "
                                    "health check, else 0", labels=per)
        desired = GaugeMetricFamily("fence_app_instances_desired", "Instances an app should run, by process "
                                    "type", labels=["app", "type"])
        running = GaugeMetricFamily("fence_app_instances_running", "Instances of an app's current release "
                                    "running now, by process type", labels=["app", "type"])
        try:
            views = self._service.apps.views()
            # The reconciler's records name the running containers: no engine call per scrape.
            live = self._service.manager.running_ids()
            samples = self._service.backend.usage(live)
        except FenceError as exc:  # the engine is away: the other figures are still served
            log.warning("instance metrics could not be read", extra={"error": exc.message})
            views, live, samples = [], [], {}
        by_short = {cid[:12]: cid for cid in live}
        for view in views:
            for process, count in view.processes.items():
                desired.add_metric([view.name, process], count)
                running.add_metric([view.name, process], view.running_by_process.get(process, 0))
            for instance in view.instance_list:
                key = [view.name, instance.process, str(instance.index), str(instance.release)]
                restarts.add_metric(key, instance.restarts)
                healthy.add_metric(key, 1 if instance.state == "running" else 0)
                sample = samples.get(by_short.get(instance.container, ""))
                if sample is not None:
                    cpu.add_metric(key, sample.cpu_seconds)
                    memory.add_metric(key, sample.memory_bytes)
                    limit.add_metric(key, sample.memory_limit_bytes)
        yield from (cpu, memory, limit, restarts, healthy, desired, running)
