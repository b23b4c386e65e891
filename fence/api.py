"""The daemon's HTTP+JSON API (FastAPI), served on a Unix socket; every route calls NodeService or AppOps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from fence import __version__
from fence.api_drains import drains_router
from fence.api_schema import EnvChange, ErrorAnswer, RouteChange, TaskOrder, request_invalid, to_json_ready
from fence.apps import AppOps
from fence.errors import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_SECURITY,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    FenceError,
    InternalError,
    RequestInvalid,
    RequestTooLarge,
    SourceRefused,
    UsageError,
)
from fence.follow import LogFollow
from fence.image_apps import BUILDERS, check_image_ref
from fence.models import AppView, CronView, DropletRecord, GcReport, NodeInfo, NodeStatus, ReleaseRecord, StackImage
from fence.rules import env_from_pairs, parse_git_spec, parse_memory, parse_scale
from fence.relay import Backlog
from fence.service import NodeService, StageOrder

log = logging.getLogger("fence.api")

_STATUS_BY_EXIT = {
    EXIT_USAGE: 400,
    EXIT_NOT_FOUND: 404,
    EXIT_CONFLICT: 409,
    EXIT_SECURITY: 403,
    EXIT_TIMEOUT: 504,
    EXIT_UNAVAILABLE: 503,
}


def http_status(error: FenceError) -> int:
    """The HTTP status an error is sent with."""
    if isinstance(error, RequestInvalid):
        return 422
    if isinstance(error, RequestTooLarge):
        return 413
    return _STATUS_BY_EXIT.get(error.exit_code, 400 if error.user_error else 500)


_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MAX_JSON_BODY = 1024 * 1024  # bytes; the largest real body (an env of many variables) is far smaller
_UPLOADS = ("/v1/stagings",)  # bodies capped by staging/max_upload instead, while they are spooled


class _TooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail="the body is too large")


class BodyCap:
    """ASGI middleware: every request body but an upload's is at most ``limit`` bytes.

    A ``Content-Length`` over the cap is answered at once, before anything is read; a chunked
    body is counted as it arrives and refused when it passes the cap, so no endpoint ever holds
    more than ``limit`` bytes of one request. The answer is the one-line error, HTTP 413.
    (FastAPI's own ``max_body_size`` answers some of these cases in plain text instead.)
    """

    def __init__(self, app: Any, *, limit: int = MAX_JSON_BODY) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http" or scope.get("path", "") in _UPLOADS:
            await self._app(scope, receive, send)
            return
        where = f"{scope.get('method', '')} {scope.get('path', '')}"[:100]
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self._limit:
            await self._refuse(send, where)
            return
        received = 0
        started = False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._limit:
                    raise _TooLarge()
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._refuse(send, where)

    async def _refuse(self, send: Callable[[Any], Any], where: str) -> None:
        body = json.dumps({"error": RequestTooLarge(where=where, limit=self._limit).to_wire()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _receive_upload(request: Request, service: NodeService, staging_id: str, filename: str) -> Path:
    """Write the request body to the staging's scratch folder, refusing it past staging/max_upload."""
    suffix = next((s for s in _ARCHIVE_SUFFIXES if filename.lower().endswith(s)), None)
    if suffix is None:
        raise UsageError(detail=f"upload {filename[:80]!r}: send a {', '.join(_ARCHIVE_SUFFIXES)} archive")
    limit = service.source_limits().max_bytes
    host_dir = service.new_workdir(staging_id)
    host_upload = host_dir / f"upload{suffix}"
    received = 0
    try:
        with host_upload.open("wb") as handle:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise SourceRefused(entry=filename[:80], why=f"the upload is larger than "
                                        f"staging/max_upload ({limit // (1024 * 1024)} MiB)")
                handle.write(chunk)
    except BaseException:
        shutil.rmtree(host_dir, ignore_errors=True)
        raise
    return host_upload


async def _work_events(work: Callable[[Callable[[str], None]], dict[str, Any]], *, name: str,
                      on_gone: Callable[[], None] = lambda: None, lossless: bool = False) -> AsyncIterator[str]:
    """Run ``work`` in a thread and relay its log lines and result as NDJSON events.

    Events: ``log`` (``line``), then one ``result`` (what ``work`` returned, e.g. ``{"droplet": …}``)
    or ``error`` (a fence error on the wire). A client that goes away triggers ``on_gone``.
    Lines waiting for a slow client are bounded (``fence.relay``): ``lossless`` holds the work
    back, else lines past the bound are dropped and counted in a line of their own.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str | None, dict[str, Any] | None]] = asyncio.Queue()
    backlog = Backlog(lossless=lossless)

    def emit(event: dict[str, Any] | None, counted: str | None = None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (counted, event))

    def report_dropped() -> None:
        if dropped := backlog.dropped():
            emit({"event": "log", "line": f"[{dropped} lines not sent: the client read slower than they came]"})

    def emit_line(line: str) -> None:
        if backlog.admit(line):
            report_dropped()
            emit({"event": "log", "line": line}, counted=line)

    def run() -> None:
        try:
            result = work(emit_line)
            report_dropped()
            emit({"event": "result", **result})
        except FenceError as exc:
            report_dropped()
            emit({"event": "error", "error": exc.to_wire()})
        except Exception as exc:  # a bug: report it as one line, log the traceback
            log.exception("%s failed", name)
            emit({"event": "error", "error": InternalError(detail=f"{type(exc).__name__}: {exc}").to_wire()})
        finally:
            emit(None)

    threading.Thread(target=run, name=name, daemon=True).start()
    finished = False
    try:
        while True:
            counted, event = await queue.get()
            if event is None:
                break
            if counted is not None:
                backlog.taken(counted)
            yield json.dumps(event) + "\n"
        finished = True
    finally:
        backlog.close()
        if not finished:
            log.info("client went away", extra={"work": name})
            on_gone()


async def _followed(follower: LogFollow) -> AsyncIterator[str]:
    """A follower's lines as NDJSON ``log`` events; when the client leaves (the server cancels
    the stream) or every instance stopped, the follower is closed and its threads end."""
    try:
        while (line := await follower.next_line()) is not None:
            yield json.dumps({"event": "log", "line": line}) + "\n"
    finally:
        follower.close()


def _required(value: int | None, name: str) -> int:
    if value is None:
        raise UsageError(detail=f"{name} is required")
    return value


def _ndjson(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="application/x-ndjson")


def create_app(service: NodeService, app_ops: AppOps) -> FastAPI:
    """The API application for one node.

    Args:
        service: the node's facade (staging, pushes, node-wide operations).
        app_ops: the app facade (one app's view, lifecycle, routes, logs and tasks).

    Returns:
        A FastAPI app; errors leave it as ``{"error": {"type", "message", "fields"}}``, a request
        that does not fit its endpoint's parameters or body schema as a 422 ``RequestInvalid``.
    """
    answers = {"description": "a fence error, in one line (422: the request does not fit the endpoint)",
               "model": ErrorAnswer}
    app = FastAPI(title="fence", version=__version__, responses={"default": answers})
    app.add_middleware(BodyCap)

    @app.exception_handler(FenceError)
    async def _fence_error(_: Request, exc: FenceError) -> JSONResponse:
        return JSONResponse(status_code=http_status(exc), content={"error": exc.to_wire()})

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": request_invalid(exc.errors()).to_wire()})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # An unknown path or method, or a body that is not even text: the same one line.
        where = f"{request.method} {request.url.path}"[:100]
        error: FenceError = (RequestTooLarge(where=where, limit=MAX_JSON_BODY) if exc.status_code == 413
                             else RequestInvalid(where=where, why=exc.detail))
        return JSONResponse(status_code=exc.status_code, content={"error": error.to_wire()}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        error = InternalError(detail=f"{type(exc).__name__}: {exc}")
        return JSONResponse(status_code=500, content={"error": error.to_wire()})

    from fence.api_services import services_router  # backing services (issue 16)
    app.include_router(services_router(service))

    @app.get("/v1/info")
    def info() -> NodeStatus:
        """The node's status: engine, user namespaces, stack, counts, warnings."""
        return service.status()

    @app.post("/v1/stagings")
    async def stage(request: Request, name: str | None = None, fallback_name: str | None = None,
                    buildpack: list[str] = Query(default=[]), env: list[str] = Query(default=[]),
                    git: str | None = None, filename: str = "upload.tar.gz", deploy: bool = False,
                    instances: int | None = None, mem: str | None = None,
                    force: bool = False, packed_folder: bool = False, builder: str | None = None,
                    image: str | None = None) -> StreamingResponse:
        """Stage an app (and with ``deploy=true`` run it: push): the body is an archive (or empty
        with ``git=URL``); ``force=true`` stages even when the inputs are unchanged; the answer
        streams NDJSON ``log`` events, then ``result`` (``droplet``, or ``app`` for a push) or ``error``.

        A bare upload is an archive the user gave: when all its entries lie in one folder (a
        GitHub download) that folder's contents are staged. ``packed_folder=true`` says the body
        is a folder the client packed (``fence push DIR`` sends it): staged exactly as it is."""
        staging_id = uuid.uuid4().hex[:12]
        mem_mib = parse_memory(mem) if mem else None
        order = StageOrder(origin="", app=name, fallback_name=fallback_name,
                           buildpacks=tuple(buildpack), env=env_from_pairs(env), force=force,
                           packed_folder=packed_folder, builder=builder, image=image)
        if builder is not None and builder not in BUILDERS:  # refused before the upload is read
            raise UsageError(detail=f"--builder {builder[:40]!r} is not a builder (one of: {', '.join(BUILDERS)})")
        if image is not None:
            check_image_ref(image)
        if git:
            parse_git_spec(git, what="source")
            order = dataclasses.replace(order, origin=git)
        else:
            host_upload = await _receive_upload(request, service, staging_id, filename)
            order = dataclasses.replace(order, origin=str(host_upload))
        if deploy:
            def work(on_line: Callable[[str], None]) -> dict[str, Any]:
                view = service.push(order, instances=instances, memory_mib=mem_mib, staging_id=staging_id,
                                    on_line=on_line)
                return {"app": to_json_ready(view)}
        else:
            def work(on_line: Callable[[str], None]) -> dict[str, Any]:
                return {"droplet": to_json_ready(service.stage(order, staging_id=staging_id, on_line=on_line))}
        return _ndjson(_work_events(work, name=f"staging-{staging_id}",
                                    on_gone=lambda: service.cancel_staging(staging_id)))

    @app.get("/v1/droplets")
    def droplets(app_name: str | None = Query(default=None, alias="app")) -> list[DropletRecord]:
        """Droplets, newest first (one app's with ``app=NAME``)."""
        return service.droplets_of(app_name)

    @app.get("/v1/droplets/{droplet_id}")
    def droplet(droplet_id: str) -> DropletRecord:
        """One droplet's record and staging info."""
        return service.droplet(droplet_id)

    @app.get("/v1/apps")
    def apps() -> list[AppView]:
        """Every app with its instances."""
        return app_ops.views()

    @app.get("/v1/apps/{name}")
    def app_detail(name: str) -> AppView:
        """One app: url, instances (index, state, container, host_port, restarts), releases."""
        return app_ops.view(name)

    @app.delete("/v1/apps/{name}")
    def delete_app(name: str) -> dict[str, str]:
        """Remove the app: instances, releases, droplets, cache and logs."""
        app_ops.delete(name)
        return {"deleted": name}

    @app.post("/v1/apps/{name}/routes")
    def routes(name: str, change: RouteChange) -> AppView:
        """Add or remove an extra host name: ``{"add": HOST}`` or ``{"remove": HOST}``."""
        if change.add is not None:
            return app_ops.add_route(name, change.add)
        return app_ops.remove_route(name, change.remove or "")

    @app.post("/v1/apps/{name}/env")
    def env(name: str, change: EnvChange) -> StreamingResponse:
        """Set and unset env variables, then restart the app if it runs: streamed NDJSON ``log``
        events, then ``result`` (``app``) or ``error``."""
        apps = app_ops
        apps.app(name)  # an unknown app is a 404 before any streaming starts

        def work(out: Callable[[str], None]) -> dict[str, Any]:
            return {"app": to_json_ready(apps.set_env(name, change.set, tuple(change.unset), out))}
        return _ndjson(_work_events(work, name=f"env-{name}"))

    @app.post("/v1/apps/{name}/run")
    def run(name: str, order: TaskOrder) -> StreamingResponse:
        """Run a one-off command in a fresh container: streamed NDJSON ``log`` events, then
        ``result`` (``exit_code``) or ``error``."""
        task_id = uuid.uuid4().hex[:12]
        return _ndjson(_work_events(lambda out: {"exit_code": app_ops.run_task(name, tuple(order.argv), out, task_id)},
                                    name=f"run-{name}", on_gone=lambda: app_ops.cancel_task(task_id),
                                    lossless=True))

    @app.post("/v1/apps/{name}/{action}")
    async def act(name: str, action: str, instances: int | None = None,
                  release: int | None = None, force: bool = False,
                  count: list[str] | None = Query(None)) -> StreamingResponse:
        """start, stop, restart, restage (``force``), scale (``instances`` for web, or ``count``
        ``TYPE=N`` repeated), rollback (``release``): streamed NDJSON ``log`` events, then
        ``result`` (``app``) or ``error``."""
        counts = parse_scale(count) if action == "scale" and count else None  # a bad one: 400, one line
        works: dict[str, Callable[[Callable[[str], None]], Any]] = {
            "start": lambda out: app_ops.start(name, out),
            "stop": lambda out: app_ops.stop(name),
            "restart": lambda out: app_ops.restart(name, out),
            "scale": lambda out: app_ops.scale(name, counts if counts else _required(instances, "instances"), out),
            "rollback": lambda out: app_ops.rollback(name, release, out),
            "restage": lambda out: service.restage(name, out, force=force),
        }
        if action not in works:
            raise UsageError(detail=f"unknown action {action!r}")
        app_ops.app(name)  # an unknown app is a 404 before any streaming starts
        chosen = works[action]
        return _ndjson(_work_events(lambda out: {"app": to_json_ready(chosen(out))}, name=f"{action}-{name}"))

    @app.get("/v1/apps/{name}/releases")
    def releases(name: str) -> list[ReleaseRecord]:
        """The app's kept releases, newest first."""
        return list(app_ops.view(name).releases)

    @app.get("/v1/apps/{name}/logs")
    async def logs(name: str, follow: bool = False, staging: bool = False, tail: int = 100,
                   release: bool = False) -> StreamingResponse:
        """The app's instance logs (or its last staging log, or ``release=true``: its last
        release-phase output), one NDJSON ``log`` event a line; ``follow=true`` streams on until
        the instances stop or the client leaves."""
        if release:
            lines = await asyncio.to_thread(lambda: app_ops.release_log(name))
            return StreamingResponse((json.dumps({"event": "log", "line": line}) + "\n" for line in lines),
                                     media_type="application/x-ndjson")
        if staging or not follow:
            lines = await asyncio.to_thread(lambda: service.staging_log(name) if staging
                                            else app_ops.instance_logs(name, tail=tail))
            return StreamingResponse((json.dumps({"event": "log", "line": line}) + "\n" for line in lines),
                                     media_type="application/x-ndjson")
        loop = asyncio.get_running_loop()
        follower = await asyncio.to_thread(lambda: app_ops.follow_logs(name, tail=tail, loop=loop))
        return StreamingResponse(_followed(follower), media_type="application/x-ndjson")

    # --- cron (issue 14) ---------------------------------------------------------------------
    @app.get("/v1/apps/{name}/cron")
    def cron(name: str) -> list[CronView]:
        """The app's cron entries with their next run and last run (exit code, duration)."""
        return service.cron_entries(name)

    @app.get("/v1/apps/{name}/cron/logs")
    async def cron_logs(name: str, tail: int = Query(default=100, ge=0, le=100_000)) -> StreamingResponse:
        """The output of the app's cron jobs, one NDJSON ``log`` event a line (prefixed ``[cron]``)."""
        lines = await asyncio.to_thread(lambda: service.cron_log(name, tail=tail))
        return StreamingResponse((json.dumps({"event": "log", "line": line}) + "\n" for line in lines),
                                 media_type="application/x-ndjson")

    @app.get("/v1/images")
    def images() -> list[StackImage]:
        """Stack images fence knows, which one is configured and what runs on each."""
        return service.images()

    @app.post("/v1/stack/rollout")
    def rollout(restage: bool = False) -> StreamingResponse:
        """Move every app onto the configured stack (``restage=true``: restage each): streamed
        NDJSON ``log`` events, then ``result`` (``rollout``) or ``error``."""
        return _ndjson(_work_events(lambda out: {"rollout": to_json_ready(service.rollout(restage=restage, on_line=out))},
                                    name="rollout"))

    @app.post("/v1/gc")
    def gc(dry_run: bool = False) -> GcReport:
        """Garbage collection: what was removed (``dry_run=true``: what would be)."""
        return service.gc(dry_run=dry_run)

    @app.get("/v1/node")
    def node() -> NodeInfo:
        """CPU, memory, disks and containers of the node."""
        return service.node_info()

    __import__("fence.api_usage").api_usage.install(app, service)  # issue 18: logs filters, stats, /metrics
    app.include_router(drains_router(getattr(service, "drains", None)))  # issue 18: log drains
    return app
