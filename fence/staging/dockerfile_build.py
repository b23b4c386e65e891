"""Builds a Dockerfile app's image once, at staging: checks, the node's refusals, the build context, the build."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

from fence import labels
from fence.backend.base import ContainerBackend
from fence.builds import BuildSpec, ImageConfig
from fence.config import ConfigStore
from fence.errors import BuildRefused, StagingFailed
from fence.limits import container_limits
from fence.staging.dockerfile import DockerfileCheck, check_dockerfile
from fence.staging.ignores import IgnoreRules, read_ignore_file

LineCallback = Callable[[str], None]


@dataclass(frozen=True)
class DockerfileBuild:
    """A Dockerfile app's image, built and checked.

    Attributes:
        image: the built image (its id addresses the image droplet).
        check: what the static checks recorded (Dockerfile digest, base image and its id).
        cached_steps: steps reused from this app's earlier builds.
    """

    image: ImageConfig
    check: DockerfileCheck
    cached_steps: int


def allowed_bases(config: ConfigStore) -> tuple[str, ...]:
    """The images FROM may name: docker/build_bases, else the configured stack images."""
    listed = [str(ref) for ref in config.fence("docker/build_bases")]
    if not listed:
        listed = [str(config.fence("docker/image")), *(str(ref) for ref in config.fence("docker/images"))]
    return tuple(dict.fromkeys(listed))


def refuse_unremapped(*, backend: ContainerBackend, config: ConfigStore, app: str) -> bool:
    """Refuse to build when the engine does not remap user namespaces (RUN steps run as root),
    unless the admin set security/allow_unremapped_builds; returns whether remapping is on.

    Raises:
        BuildRefused: no remapping and no admin override.
    """
    remapped = backend.engine_info().userns_remap
    if not remapped and not bool(config.fence("security/allow_unremapped_builds")):
        raise BuildRefused(app=app, why="the Docker Engine runs without user-namespace remapping, so RUN "
                           "steps would run as root on the host; start dockerd with --userns-remap=default, "
                           "or accept that risk with `kato config set fence security/allow_unremapped_builds true`")
    return remapped


def build_app_image(*, backend: ContainerBackend, config: ConfigStore, node_id: str, app: str,
                    host_source: Path, host_workdir: Path, dockerfile: str, build_args: Mapping[str, str],
                    on_line: LineCallback, cancelled: Callable[[], bool] = lambda: False) -> DockerfileBuild:
    """Check and build an app's Dockerfile into an image on the node.

    The build context is the checked, re-packed source less what ``.dockerignore`` leaves out,
    with the checked Dockerfile (ignored instructions blanked) in place of the developer's. The
    build gets staging/memory, staging/network, staging/timeout and only ``build_args`` (never
    the app's env); its cache is this app's earlier images and nothing else.

    Args:
        backend, config, node_id: the engine, node config and this node's id.
        app: the app's name.
        host_source: the checked source tar (``PreparedSource.host_tar``).
        host_workdir: a private folder for the context tar.
        dockerfile: the Dockerfile's path in the app (``Dockerfile`` or the manifest's).
        build_args: the manifest's ``build_args:``.
        on_line: the staging log.
        cancelled: polled while the build runs.

    Raises:
        BuildRefused: the engine does not remap and the admin did not allow it.
        DockerfileRefused: a construct the checks refuse.
        StagingFailed: the Dockerfile is missing, or the image is past the layer or size caps.
        BuildFailed, StagingTimeout: the build failed or ran too long.
    """
    fence = config.fence
    remapped = refuse_unremapped(backend=backend, config=config, app=app)
    members = _source_members(host_source)
    name = str(PurePosixPath(dockerfile))
    if name not in members:
        raise StagingFailed(phase="the Dockerfile build", buildpack="", detail=f"the app has no {name}")
    allow_root = remapped and app in [str(a) for a in fence("security/root_apps")]

    def lookup(ref: str) -> str | None:
        found = backend.image_info(ref)
        return found.id if found else None

    check = check_dockerfile(data=members[name], path=name, allowed=allowed_bases(config), lookup=lookup,
                             allow_root=allow_root, max_layers=int(fence("staging/max_layers")))
    on_line(f"-----> Building {app} from {name} (FROM {check.base.ref}, {check.base.image_id[7:19]})")
    for warning in check.warnings:
        on_line(f"       warning: {warning}")
    host_context = _context_tar(host_source, host_workdir, name, check.text.encode(), members.get(".dockerignore"))
    earlier = backend.list_images({labels.NODE: node_id, labels.APP: app, labels.ROLE: labels.ROLE_BUILD})
    spec = BuildSpec(host_context=host_context, dockerfile=name, ref=f"fence/build:{node_id}-{app}"[:128],
                     labels=labels.owned(node_id, labels.ROLE_BUILD, app=app), build_args=dict(build_args),
                     limits=container_limits(config, int(fence("staging/memory"))),
                     network=str(fence("staging/network")), cache_from=tuple(i.id for i in earlier),
                     timeout=float(fence("staging/timeout")))
    try:
        result = backend.build_image(spec, on_line=lambda line: on_line(f"       {line}"), cancelled=cancelled)
    finally:
        host_context.unlink(missing_ok=True)
    image = result.image
    max_layers, max_mib = int(fence("staging/max_layers")), int(fence("staging/max_image"))
    too_big = (f"has {image.layers} layers, more than staging/max_layers ({max_layers})" if image.layers > max_layers
               else f"is {image.size / 2**20:.0f} MiB, more than staging/max_image ({max_mib} MiB)"
               if image.size > max_mib * 2**20 else "")
    if too_big:
        backend.remove_image(image.id)
        raise StagingFailed(phase="the Dockerfile build", buildpack="", detail=f"the image {too_big}: nothing was kept")
    on_line(f"-----> Image {image.id[7:19]} ({image.size / 1e6:.1f} MB, {image.layers} layers"
            f"{f', {result.cached_steps} steps from the cache' if result.cached_steps else ''})")
    return DockerfileBuild(image=image, check=check, cached_steps=result.cached_steps)


def has_source_file(host_source: Path, path: str) -> bool:
    """Whether the checked source tar has a Dockerfile-like file at ``path`` (``Dockerfile``)."""
    return str(PurePosixPath(path)) in _source_members(host_source)


def _source_members(host_source: Path) -> dict[str, bytes]:
    """The small top files of the source the build needs to read (Dockerfiles, .dockerignore)."""
    found: dict[str, bytes] = {}
    with tarfile.open(host_source, mode="r:*") as source:
        for member in source:
            path = _app_path(member.name)
            if member.isfile() and path and member.size <= 256 * 1024 and (
                    "dockerfile" in path.lower() or path == ".dockerignore"):
                handle = source.extractfile(member)
                found[path] = handle.read() if handle else b""
    return found


def _app_path(name: str) -> str:
    parts = PurePosixPath(name).parts
    if parts[:1] == ("app",):
        parts = parts[1:]
    return "/".join(p for p in parts if p not in (".", ""))


def _context_tar(host_source: Path, host_workdir: Path, dockerfile: str, text: bytes,
                 dockerignore: bytes | None) -> Path:
    """The build context: the source's entries under their app paths, less .dockerignore's."""
    rules = IgnoreRules(patterns=read_ignore_file(dockerignore, source=".dockerignore")) if dockerignore else None
    host_context = host_workdir / "build-context.tar"
    with tarfile.open(host_source, mode="r:*") as source, tarfile.open(host_context, mode="w") as out:
        for member in source:
            path = _app_path(member.name)
            if not path or path == dockerfile:
                continue
            if rules is not None and path != ".dockerignore" and rules.ignored(
                    tuple(path.split("/")), is_dir=member.isdir()):
                continue
            member.name = path
            if member.islnk():  # a hard link names its target by its path in the archive
                member.linkname = _app_path(member.linkname)
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
        entry = tarfile.TarInfo(dockerfile)
        entry.size, entry.mode = len(text), 0o644
        out.addfile(entry, io.BytesIO(text))
    return host_context
