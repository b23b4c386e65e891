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
from typing import Any, AsyncIterator

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
from fence.service import NodeService, StageOrder
from fence.staging.gitfetch import parse_git_spec
from fence.staging.stager import env_from_pairs
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


async def _staging_events(service: NodeService, order: StageOrder, staging_id: str) -> AsyncIterator[str]:
    """Run a staging in a thread and relay its events; a client that goes away cancels it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def emit(event: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def work() -> None:
        try:
            record = service.stage(order, staging_id=staging_id,
                                   on_line=lambda line: emit({"event": "log", "line": line}))
            emit({"event": "droplet", "droplet": to_wire(record)})
        except FenceError as exc:
            emit({"event": "error", "error": exc.to_wire()})
        except Exception as exc:  # a bug: report it as one line, log the traceback
            log.exception("staging %s failed", staging_id)
            emit({"event": "error", "error": InternalError(detail=f"{type(exc).__name__}: {exc}").to_wire()})
        finally:
            emit(None)

    threading.Thread(target=work, name=f"staging-{staging_id}", daemon=True).start()
    finished = False
    try:
        yield json.dumps({"event": "staging", "id": staging_id}) + "\n"
        while (event := await queue.get()) is not None:
            yield json.dumps(event) + "\n"
        finished = True
    finally:
        if not finished:
            log.info("staging client went away; cancelling", extra={"staging": staging_id})
            service.cancel_staging(staging_id)


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
                    git: str | None = None, filename: str = "upload.tar.gz") -> StreamingResponse:
        """Stage an app: the body is an archive (or empty with ``git=URL``); the answer streams
        NDJSON events: ``staging`` (its id), ``log`` lines, then ``droplet`` or ``error``."""
        staging_id = uuid.uuid4().hex[:12]
        order = StageOrder(origin="", app=name, fallback_name=fallback_name,
                           buildpacks=tuple(buildpack), env=env_from_pairs(env))
        if git:
            parse_git_spec(git, what="source")
            order = dataclasses.replace(order, origin=git)
        else:
            host_upload = await _receive_upload(request, service, staging_id, filename)
            order = dataclasses.replace(order, origin=str(host_upload))
        return StreamingResponse(_staging_events(service, order, staging_id),
                                 media_type="application/x-ndjson")

    @app.get("/v1/droplets")
    def droplets(app_name: str | None = Query(default=None, alias="app")) -> list[dict[str, Any]]:
        """Droplets, newest first (one app's with ``app=NAME``)."""
        return to_wire(service.droplets_of(app_name))

    @app.get("/v1/droplets/{droplet_id}")
    def droplet(droplet_id: str) -> dict[str, Any]:
        """One droplet's record and staging info."""
        return to_wire(service.droplet(droplet_id))

    @app.get("/v1/images")
    def images() -> list[dict[str, Any]]:
        """Stack images fence knows, which one is configured and what runs on each."""
        return to_wire(service.images())

    return app
