"""The daemon's service routes (issue 16): /v1/services…, included from fence/api.py."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fence.api_schema import to_json_ready
from fence.errors import UsageError
from fence.rules import parse_memory


class ServiceOrder(BaseModel):
    """``POST /v1/services``: make a service."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(max_length=40)
    name: str = Field(max_length=64)
    mem: str | None = Field(default=None, max_length=20)


class BindOrder(BaseModel):
    """``POST /v1/services/NAME/bind`` and ``…/unbind``: the app."""

    model_config = ConfigDict(extra="forbid")
    app: str = Field(max_length=64)


class RestoreOrder(BaseModel):
    """``POST /v1/services/NAME/restore``: the backup id."""

    model_config = ConfigDict(extra="forbid")
    backup: str = Field(max_length=64)


def services_router(service: Any) -> APIRouter:
    """The routes over ``service.services`` (a ``fence.services.ops.ServiceOps``)."""
    from fence.api import _ndjson, _work_events  # the API's NDJSON relay, shared

    router = APIRouter()

    def ops() -> Any:
        if service.services is None:
            raise UsageError(detail="this node has no services support")
        return service.services

    @router.get("/v1/services")
    def list_services() -> list[dict[str, Any]]:
        """Every service with its state."""
        return [to_json_ready(v) for v in ops().list()]

    @router.post("/v1/services")
    def create(order: ServiceOrder) -> dict[str, Any]:
        """Create a service; answers once its server accepts connections."""
        memory = parse_memory(order.mem) if order.mem else None
        return to_json_ready(ops().create(order.type, order.name, memory))

    @router.get("/v1/services/{name}")
    def show(name: str) -> dict[str, Any]:
        """One service."""
        return to_json_ready(ops().show(name))

    @router.delete("/v1/services/{name}")
    def delete(name: str, delete_data: bool = False) -> dict[str, Any]:
        """Remove a service (refused while bound); its data only with ``delete_data``."""
        ops().delete(name, delete_data=delete_data)
        return {"deleted": name, "data_deleted": delete_data}

    @router.post("/v1/services/{name}/restart")
    def restart(name: str) -> dict[str, Any]:
        """Restart the server; its data stays."""
        return to_json_ready(ops().restart(name))

    def _binding(name: str, order: BindOrder, verb: str) -> StreamingResponse:
        act: Callable[..., Any] = ops().bind if verb == "bind" else ops().unbind

        def work(out: Callable[[str], None]) -> dict[str, Any]:
            return {"service": to_json_ready(act(name, order.app, out))}
        return _ndjson(_work_events(work, name=f"{verb}-{name}"))

    @router.post("/v1/services/{name}/bind")
    def bind(name: str, order: BindOrder) -> StreamingResponse:
        """Bind to an app (which restarts if it runs): NDJSON ``log`` events, then ``result``."""
        return _binding(name, order, "bind")

    @router.post("/v1/services/{name}/unbind")
    def unbind(name: str, order: BindOrder) -> StreamingResponse:
        """Unbind from an app (which restarts if it runs)."""
        return _binding(name, order, "unbind")

    @router.post("/v1/services/{name}/backups")
    def backup(name: str) -> dict[str, Any]:
        """Make a backup now."""
        return to_json_ready(ops().backup(name))

    @router.get("/v1/services/{name}/backups")
    def backups(name: str) -> list[dict[str, Any]]:
        """The kept backups, oldest first."""
        return [to_json_ready(b) for b in ops().list_backups(name)]

    @router.post("/v1/services/{name}/restore")
    def restore(name: str, order: RestoreOrder) -> dict[str, Any]:
        """Load a backup into the service (refused: another type, corrupt, truncated)."""
        return to_json_ready(ops().restore(name, order.backup))

    @router.get("/v1/service-images")
    def service_images() -> list[dict[str, Any]]:
        """The service images of each type: reference, id, size, services running it."""
        return ops().images()

    @router.get("/v1/apps/{app}/service-env")
    def app_service_env(app: str) -> dict[str, str]:
        """The env an app gets from its bound services (`fence env APP --show-secrets`)."""
        return ops().env_for(app)

    return router
