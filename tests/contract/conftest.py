"""Fixtures that run the backend contract suite against FakeBackend and DockerBackend alike."""

from __future__ import annotations

import functools
import os
import uuid
from typing import Callable, Iterator

import pytest

from fence import labels
from fence.backend.base import ContainerBackend
from fence.backend.fake import FakeBackend
from fence.errors import FenceError
from fence.models import ContainerSpec, Limits

IMAGE = os.environ.get("FENCE_TEST_IMAGE", "fence/stack:bookworm")
# Small limits keep the suite light; they are still what every container gets.
LIMITS = Limits(memory_bytes=128 * 1024 * 1024, pids=128)


@functools.cache
def docker_problem() -> str | None:
    """Why DockerBackend cannot be tested here, or ``None`` when it can."""
    from fence.backend.docker import DockerBackend

    backend = DockerBackend()
    try:
        backend.engine_info()
        if backend.image_info(IMAGE) is None:
            return (f"image {IMAGE} is not on the Docker Engine "
                    "(`kato image build` makes it; FENCE_TEST_IMAGE picks another)")
    except FenceError as exc:
        return f"no Docker Engine for the contract suite: {exc.message}"
    finally:
        backend.close()
    return None


def new_backend(kind: str, *, userns_remap: bool = True,
                require_userns: Callable[[], bool] = lambda: False) -> ContainerBackend:
    """A fresh backend of ``kind``; ``userns_remap`` only shapes the fake (the engine is as it is)."""
    if kind == "fake":
        return FakeBackend(userns_remap=userns_remap, require_userns=require_userns,
                           images=(IMAGE,))
    from fence.backend.docker import DockerBackend

    return DockerBackend(require_userns=require_userns)


@pytest.fixture
def node_id() -> str:
    """A node id of this test alone: its label tells this test's containers from all others."""
    return f"contract-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["fake", "docker"])
def backend(request: pytest.FixtureRequest, node_id: str) -> Iterator[ContainerBackend]:
    """Each backend in turn; afterwards every container with this test's node label is gone."""
    if request.param == "docker" and (problem := docker_problem()):
        pytest.skip(problem)
    chosen = new_backend(request.param)
    yield chosen
    for leftover in chosen.list({labels.NODE: node_id}):
        leftover.destroy()
    if request.param == "docker":
        chosen.close()  # type: ignore[attr-defined]


@pytest.fixture
def kind(backend: ContainerBackend) -> str:
    """``"fake"`` or ``"docker"``: which backend this run of the test uses."""
    return "fake" if isinstance(backend, FakeBackend) else "docker"


@pytest.fixture
def make_spec(node_id: str) -> Callable[..., ContainerSpec]:
    """Builds a valid spec owned by this test's node; keyword arguments override fields."""
    def make(**overrides: object) -> ContainerSpec:
        fields: dict[str, object] = {
            "image": IMAGE, "labels": labels.owned(node_id, labels.ROLE_TASK), "user": "1000",
            "limits": LIMITS}
        fields.update(overrides)
        return ContainerSpec(**fields)  # type: ignore[arg-type]
    return make
