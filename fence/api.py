"""The daemon's HTTP+JSON API (FastAPI), served on a Unix socket; every route calls NodeService."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
)
from fence.service import NodeService
from fence.wire import to_wire

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

    @app.get("/v1/images")
    def images() -> list[dict[str, Any]]:
        """Stack images fence knows, which one is configured and what runs on each."""
        return to_wire(service.images())

    return app
