"""The daemon's HTTP+JSON API (FastAPI), served on a Unix socket; every route calls NodeService."""

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
from fastapi.responses import JSONResponse, StreamingResponse

from fence import __version__
from fence.errors import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_SECURITY,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    FenceError,
    InternalError,
    SourceRefused,
    UsageError,
)
from fence.relay import Backlog
from fence.service import NodeService, StageOrder
from fence.staging.gitfetch import parse_git_spec
from fence.staging.stager import env_from_pairs, parse_memory
from fence.wire import to_wire

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
    return _STATUS_BY_EXIT.get(error.exit_code, 400 if error.user_error else 500)


_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


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


def _required(value: int | None, name: str) -> int:
    if value is None:
        raise UsageError(detail=f"{name} is required")
    return value


def _str_map(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise UsageError(detail="set must map names to string values")
    return dict(value)


def _str_list(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(detail="expected a list of strings")
    return list(value)


def _ndjson(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="application/x-ndjson")


def create_app(service: NodeService) -> FastAPI:
    """The API application for one node.

    Args:
        service: the facade the routes call.

    Returns:
        A FastAPI app; errors leave it as ``{"error": {"type", "message", "fields"}}``.
    """
    app = FastAPI(title="fence", version=__version__)

    @app.exception_handler(FenceError)
    async def _fence_error(_: Request, exc: FenceError) -> JSONResponse:
        return JSONResponse(status_code=http_status(exc), content={"error": exc.to_wire()})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        error = InternalError(detail=f"{type(exc).__name__}: {exc}")
        return JSONResponse(status_code=500, content={"error": error.to_wire()})

    @app.get("/v1/info")
    def info() -> dict[str, Any]:
        """The node's status: engine, user namespaces, stack, counts, warnings."""
        return to_wire(service.status())

    @app.post("/v1/stagings")
    async def stage(request: Request, name: str | None = None, fallback_name: str | None = None,
                    buildpack: list[str] = Query(default=[]), env: list[str] = Query(default=[]),
                    git: str | None = None, filename: str = "upload.tar.gz", deploy: bool = False,
                    instances: int | None = None, mem: str | None = None,
                    force: bool = False) -> StreamingResponse:
        """Stage an app (and with ``deploy=true`` run it: push): the body is an archive (or empty
        with ``git=URL``); ``force=true`` stages even when the inputs are unchanged; the answer
        streams NDJSON ``log`` events, then ``result`` (``droplet``, or ``app`` for a push) or ``error``."""
        staging_id = uuid.uuid4().hex[:12]
        mem_mib = parse_memory(mem) if mem else None
        order = StageOrder(origin="", app=name, fallback_name=fallback_name,
                           buildpacks=tuple(buildpack), env=env_from_pairs(env), force=force)
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
                return {"app": to_wire(view)}
        else:
            def work(on_line: Callable[[str], None]) -> dict[str, Any]:
                return {"droplet": to_wire(service.stage(order, staging_id=staging_id, on_line=on_line))}
        return _ndjson(_work_events(work, name=f"staging-{staging_id}",
                                    on_gone=lambda: service.cancel_staging(staging_id)))

    @app.get("/v1/droplets")
    def droplets(app_name: str | None = Query(default=None, alias="app")) -> list[dict[str, Any]]:
        """Droplets, newest first (one app's with ``app=NAME``)."""
        return to_wire(service.droplets_of(app_name))

    @app.get("/v1/droplets/{droplet_id}")
    def droplet(droplet_id: str) -> dict[str, Any]:
        """One droplet's record and staging info."""
        return to_wire(service.droplet(droplet_id))

    @app.get("/v1/apps")
    def apps() -> list[dict[str, Any]]:
        """Every app with its instances."""
        return to_wire(service.apps.views())

    @app.get("/v1/apps/{name}")
    def app_detail(name: str) -> dict[str, Any]:
        """One app: url, instances (index, state, container, host_port, restarts), releases."""
        return to_wire(service.apps.view(name))

    @app.delete("/v1/apps/{name}")
    def delete_app(name: str) -> dict[str, Any]:
        """Remove the app: instances, releases, droplets, cache and logs."""
        service.apps.delete(name)
        return {"deleted": name}

    @app.post("/v1/apps/{name}/routes")
    def routes(name: str, change: dict[str, str]) -> dict[str, Any]:
        """Add or remove an extra host name: ``{"add": HOST}`` or ``{"remove": HOST}``."""
        if set(change) == {"add"}:
            return to_wire(service.apps.add_route(name, change["add"]))
        if set(change) == {"remove"}:
            return to_wire(service.apps.remove_route(name, change["remove"]))
        raise UsageError(detail='send {"add": HOST} or {"remove": HOST}')

    @app.post("/v1/apps/{name}/{action}")
    async def act(name: str, action: str, request: Request, instances: int | None = None,
                  release: int | None = None, force: bool = False) -> StreamingResponse:
        """start, stop, restart, restage (``force``), scale (``instances``), rollback (``release``), env (JSON body
        ``{"set": {…}, "unset": […]}``), run (JSON body ``{"argv": […]}``): streamed NDJSON."""
        apps = service.apps
        body = await request.json() if action in ("env", "run") else {}
        works: dict[str, Callable[[Callable[[str], None]], Any]] = {
            "start": lambda out: apps.start(name, out),
            "stop": lambda out: apps.stop(name),
            "restart": lambda out: apps.restart(name, out),
            "scale": lambda out: apps.scale(name, _required(instances, "instances"), out),
            "rollback": lambda out: apps.rollback(name, release, out),
            "restage": lambda out: service.restage(name, out, force=force),
            "env": lambda out: apps.set_env(name, _str_map(body.get("set")), tuple(_str_list(body.get("unset"))), out),
        }
        if action == "run":
            argv = tuple(_str_list(body.get("argv")))
            task_id = uuid.uuid4().hex[:12]
            return _ndjson(_work_events(lambda out: {"exit_code": apps.run_task(name, argv, out, task_id)},
                                        name=f"run-{name}", on_gone=lambda: apps.cancel_task(task_id),
                                        lossless=True))
        if action not in works:
            raise UsageError(detail=f"unknown action {action!r}")
        apps.app(name)  # an unknown app is a 404 before any streaming starts
        chosen = works[action]
        return _ndjson(_work_events(lambda out: {"app": to_wire(chosen(out))}, name=f"{action}-{name}"))

    @app.get("/v1/apps/{name}/releases")
    def releases(name: str) -> list[dict[str, Any]]:
        """The app's kept releases, newest first."""
        return to_wire(list(service.apps.view(name).releases))

    @app.get("/v1/apps/{name}/logs")
    def logs(name: str, follow: bool = False, staging: bool = False, tail: int = 100) -> StreamingResponse:
        """The app's instance logs (or its last staging log), one NDJSON ``log`` event a line."""
        lines = service.apps.staging_log(name) if staging else service.apps.instance_logs(name, follow=follow, tail=tail)
        return StreamingResponse((json.dumps({"event": "log", "line": line}) + "\n" for line in lines),
                                 media_type="application/x-ndjson")

    @app.get("/v1/images")
    def images() -> list[dict[str, Any]]:
        """Stack images fence knows, which one is configured and what runs on each."""
        return to_wire(service.images())

    @app.post("/v1/stack/rollout")
    def rollout(restage: bool = False) -> StreamingResponse:
        """Move every app onto the configured stack (``restage=true``: restage each): streamed
        NDJSON ``log`` events, then ``result`` (``rollout``) or ``error``."""
        return _ndjson(_work_events(lambda out: {"rollout": to_wire(service.rollout(restage=restage, on_line=out))},
                                    name="rollout"))

    @app.post("/v1/gc")
    def gc(dry_run: bool = False) -> dict[str, Any]:
        """Garbage collection: what was removed (``dry_run=true``: what would be)."""
        return to_wire(service.gc(dry_run=dry_run))

    @app.get("/v1/node")
    def node() -> dict[str, Any]:
        """CPU, memory, disks and containers of the node."""
        return to_wire(service.node_info())

    return app
