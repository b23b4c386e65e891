"""The daemon API's log-drain routes (``fence drain add|list|delete``), as a FastAPI router."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from fence.drains.models import DrainHealth, DrainRecord
from fence.drains.ops import DrainOps
from fence.errors import UsageError


class DrainOrder(BaseModel):
    """The body of ``PUT /v1/apps/{name}/drains/{drain}``: where the drain sends the app's lines."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)  # as fence.api_schema's bodies

    url: str = Field(description="syslog://HOST:PORT, syslog+udp://HOST:PORT, syslog+tls://HOST:PORT or http(s)://…")


def drains_router(drains: DrainOps | None) -> APIRouter:
    """The drain routes over one node's drains (``None``: a node without drains refuses them)."""
    router = APIRouter()

    def ops() -> DrainOps:
        if drains is None:
            raise UsageError(detail="this node runs without log drains")
        return drains

    @router.get("/v1/apps/{name}/drains")
    def list_drains(name: str) -> list[DrainHealth]:
        """The app's drains with their state, counts and last error, then the node-wide drains."""
        return ops().list(name)

    @router.put("/v1/apps/{name}/drains/{drain}")
    def add_drain(name: str, drain: str, order: DrainOrder) -> DrainRecord:
        """Add the drain (or point it at a new URL)."""
        return ops().add(name, drain, order.url)

    @router.delete("/v1/apps/{name}/drains/{drain}")
    def delete_drain(name: str, drain: str) -> dict[str, str]:
        """Remove the drain."""
        ops().delete(name, drain)
        return {"deleted": drain}

    return router
