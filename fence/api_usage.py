"""The daemon's usage routes: filtered instance logs, `fence stats`, `kato node top`, and Prometheus `/metrics`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fence.app_logs import LogEntry, LogQuery, app_log_entries, check_query
from fence.errors import UsageError
from fence.metrics import NodeMetrics
from fence.stats import UsageSampler, app_stats, node_top
from fence.usage_models import AppUsage, InstanceStats

log = logging.getLogger("fence.api")


@dataclass
class Usage:
    """What the usage routes share for one node: the CPU sampler and the metrics registry."""

    sampler: UsageSampler
    metrics: NodeMetrics
    listener: Any = None  # the TCP metrics server, while metrics/listen is set


# One per service: create_app may be called more than once for a node (tests), the stagings are
# timed once.
_USAGE: weakref.WeakKeyDictionary[Any, Usage] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def usage_of(service: Any) -> Usage:
    """The node's sampler and metrics, made at the first ask (stagings are timed from then on)."""
    with _LOCK:
        found = _USAGE.get(service)
        if found is None:
            counter = None
            host_log = getattr(service.router, "host_access_log", None)
            if host_log is not None:
                from fence.router.access_log import AccessLogCounter

                counter = AccessLogCounter(host_log=host_log).counts
            found = Usage(sampler=UsageSampler(backend=service.backend, node_id=service.node_id,
                                               running=service.manager.running_ids),
                          metrics=NodeMetrics(service=service, router_requests=counter))
            found.metrics.time_stagings(service.session)
            drains = getattr(service, "drains", None)  # log drains (issue 18): their drop counts
            if drains is not None:
                found.metrics.add_drain_drops(drains.hub.drops)
            _USAGE[service] = found
        return found


def install(app: FastAPI, service: Any) -> None:
    """Add the usage routes and the API latency measurement to the daemon's app.

    Args:
        app: the daemon's FastAPI app.
        service: the node (``fence.service.NodeService``).
    """
    usage = usage_of(service)
    app.add_middleware(_Latency, histogram=usage.metrics.api)
    app.include_router(_router(service, usage))
    app.router.on_startup.append(lambda: _listen(service, usage))
    app.router.on_startup.append(usage.sampler.start)  # baselines from the start: no request waits
    app.router.on_shutdown.append(lambda: _close(usage))


def _router(service: Any, usage: Usage) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/apps/{name}/log-entries")
    async def log_entries(name: str, since: float | None = None, tail: int | None = None,
                          type: str | None = None, instance: int | None = None) -> list[LogEntry]:
        """The app's instance log lines with time, type, instance, release and stream, oldest first,
        filtered (``since`` epoch seconds, the last ``tail``, process ``type``, ``instance`` index)."""
        try:
            query = check_query(LogQuery(since=since, tail=tail, process=type, instance=instance))
        except ValueError as exc:
            raise UsageError(detail=str(exc)) from None
        service.apps.app(name)  # AppNotFound before any engine work
        return await asyncio.to_thread(lambda: app_log_entries(backend=service.backend, node_id=service.node_id,
                                                               app=name, query=query))

    @router.get("/v1/apps/{name}/stats")
    async def stats(name: str) -> list[InstanceStats]:
        """Per-instance usage: CPU %, memory used and limit, network in/out, restarts, uptime."""
        view = await asyncio.to_thread(lambda: service.apps.view(name))
        return await asyncio.to_thread(lambda: app_stats(view=view, sampler=usage.sampler))

    @router.get("/v1/node/top")
    async def top() -> list[AppUsage]:
        """Every app's CPU and memory summed over its running instances, the busiest first."""
        return await asyncio.to_thread(lambda: node_top(backend=service.backend, node_id=service.node_id,
                                                        sampler=usage.sampler))

    @router.get("/metrics")
    async def metrics() -> Response:
        """The node's metrics in the Prometheus text format."""
        body = await asyncio.to_thread(lambda: generate_latest(usage.metrics.registry))
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)

    return router


def _listen(service: Any, usage: Usage) -> None:
    """Serve /metrics on TCP too when ``metrics/listen`` is set (off by default)."""
    address = str(service.config.fence("metrics/listen") or "")
    if not address or usage.listener is not None:
        return
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    try:
        usage.listener = start_http_server(int(port), addr=host.strip("[]"), registry=usage.metrics.registry)
    except OSError as exc:  # said, not fatal: the socket still serves /metrics
        log.error("metrics/listen: cannot listen", extra={"address": address, "error": str(exc)})
        return
    log.info("metrics served on TCP", extra={"address": address})


def _close(usage: Usage) -> None:
    usage.sampler.close()
    if usage.listener is not None:
        server, thread = usage.listener
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        usage.listener = None


class _Latency:
    """ASGI middleware: every API request's duration by method and route template (never the raw
    path, so an app name is not a label of its own)."""

    def __init__(self, app: Any, *, histogram: Any) -> None:
        self._app = app
        self._histogram = histogram

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.monotonic()
        try:
            await self._app(scope, receive, send)
        finally:
            route = scope.get("route")
            self._histogram.labels(method=scope.get("method", ""),
                                   route=getattr(route, "path", "unmatched")).observe(time.monotonic() - started)
