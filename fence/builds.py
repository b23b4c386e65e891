"""What a Dockerfile build asks of the engine and what an image's config says (backend ↔ staging, running)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from fence.models import Limits


@dataclass(frozen=True)
class BuildSpec:
    """One image build with the engine's classic builder (the one that enforces limits).

    Attributes:
        host_context: the build context as a tar file (the checked, re-packed app source with
            the checked Dockerfile in it).
        dockerfile: the Dockerfile's path inside the context.
        ref: ``repository:tag`` the image gets.
        labels: labels the image gets (fence's node label required).
        build_args: ``--build-arg`` values (the app's env is never passed).
        limits: memory (= memory+swap), CPU share and nofile of every build container.
        network: ``none`` or ``bridge``: the network of RUN steps.
        cache_from: images whose layers the build may reuse (this app's earlier builds);
            empty: no cache at all, so nothing of another app's build is reused.
        timeout: seconds the whole build may take; past it the build is cancelled.
    """

    host_context: Path
    dockerfile: str
    ref: str
    labels: Mapping[str, str]
    build_args: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    network: str = "none"
    cache_from: tuple[str, ...] = ()
    timeout: float = 900.0


@dataclass(frozen=True)
class ImageConfig:
    """What an image runs and how big it is (``docker image inspect``).

    Attributes:
        id: the image id (``sha256:…``): what image droplets are addressed by.
        tags: its repository tags.
        user: its ``USER`` (``""``: unset, i.e. root).
        entrypoint, cmd: its ENTRYPOINT and CMD as argv (empty when unset).
        workdir: its WORKDIR (``""``: unset).
        env: its ENV as ``NAME=value`` strings.
        layers: how many file-system layers it has.
        size: its size in bytes.
        labels: its labels.
        parent: the image it was built on, when the engine knows it (``""`` otherwise).
    """

    id: str
    tags: tuple[str, ...]
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    workdir: str
    env: tuple[str, ...]
    layers: int
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    parent: str = ""


@dataclass(frozen=True)
class BuildResult:
    """A finished build.

    Attributes:
        image: the built image's config.
        cached_steps: steps reused from ``cache_from`` images.
        steps: steps the Dockerfile had.
    """

    image: ImageConfig
    cached_steps: int
    steps: int
