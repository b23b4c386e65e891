"""The security refusals every backend applies to a container or process spec before the engine sees it."""

from __future__ import annotations

import re
from collections.abc import Mapping

from fence import labels as fence_labels
from fence.builds import BuildSpec
from fence.errors import UsageError
from fence.models import ContainerSpec, NetworkSpec, ProcessSpec, VolumeSpec

_ROOT_NAMES = frozenset({"", "0", "root"})
_NETWORKS = frozenset({"none", "bridge"})
# The networks fence makes; never "host" or "container:…", which would share a namespace.
NETWORK_PREFIX = "fence-"
_NETWORK_NAME = re.compile(r"fence-[a-z0-9][a-z0-9-]{0,126}")


def refuse_unsafe_spec(spec: ContainerSpec) -> None:
    """Refuse a container spec that would break fence's guarantees (every backend calls this).

    Args:
        spec: the container to check.

    Raises:
        UsageError: the user or group is root, the node label is missing, the network is not
            ``none``, ``bridge`` or a fence network (``fence-…``), or ports are published
            without a network.
    """
    refuse_root(spec.user, what="container")
    if not spec.labels.get(fence_labels.NODE):
        raise UsageError(detail=f"container spec lacks the {fence_labels.NODE} label: "
                                "fence creates only containers it can recognise as its own")
    if spec.network not in _NETWORKS and not _NETWORK_NAME.fullmatch(spec.network):
        raise UsageError(detail=f"network {spec.network!r} is not allowed "
                                f"(one of: {', '.join(sorted(_NETWORKS))}, or a {NETWORK_PREFIX}… network)")
    if spec.ports and spec.network == "none":
        raise UsageError(detail="ports cannot be published from a container without a network")
    for mount in spec.volumes:
        if not _NETWORK_NAME.fullmatch(mount.volume):
            raise UsageError(detail=f"volume {mount.volume[:140]!r} is not allowed: only fence's own "
                                    f"named volumes ({NETWORK_PREFIX}…) are mounted, never host paths")
        if not mount.ctr_path.is_absolute() or ".." in mount.ctr_path.parts:
            raise UsageError(detail=f"volume mount point {str(mount.ctr_path)[:140]!r} is not an absolute path")


def refuse_unsafe_volume(spec: VolumeSpec) -> None:
    """Refuse a volume spec fence could not recognise as its own (every backend calls this).

    Raises:
        UsageError: the name is not ``fence-`` and lower-case letters, digits and dashes, or the
            node label is missing.
    """
    _refuse_unowned("volume", spec.name, spec.labels)


def refuse_unsafe_network(spec: NetworkSpec) -> None:
    """Refuse a network spec fence could not recognise as its own (every backend calls this).

    Args:
        spec: the network to create.

    Raises:
        UsageError: the name is not ``fence-`` and lower-case letters, digits and dashes
            (at most 133 characters), or the node label is missing.
    """
    _refuse_unowned("network", spec.name, spec.labels)


def _refuse_unowned(kind: str, name: str, labels: Mapping[str, str]) -> None:
    if not _NETWORK_NAME.fullmatch(name):
        raise UsageError(detail=f"{kind} name {name[:140]!r} is not allowed: fence's {kind}s are "
                                f"named {NETWORK_PREFIX} and lower-case letters, digits and dashes")
    if not labels.get(fence_labels.NODE):
        raise UsageError(detail=f"{kind} spec lacks the {fence_labels.NODE} label: "
                                f"fence creates only {kind}s it can recognise as its own")


def refuse_unsafe_process(spec: ProcessSpec) -> None:
    """Refuse a process that has no program or would run as root.

    Args:
        spec: the process to check.

    Raises:
        UsageError: argv is empty, or the user or group is root.
    """
    if not spec.argv:
        raise UsageError(detail="a process needs a program to run (argv is empty)")
    if spec.user is not None:
        refuse_root(spec.user, what="process")


def refuse_root(user: str, *, what: str) -> None:
    """Refuse a ``uid[:gid]`` (or name) that is root, or empty (which means the image's default).

    Args:
        user: the user as given in a spec.
        what: ``"container"`` or ``"process"``, for the message.

    Raises:
        UsageError: the user or its group is root, or the user is empty.
    """
    uid, _, gid = user.strip().partition(":")
    if uid in _ROOT_NAMES or gid in ("0", "root"):
        raise UsageError(detail=f"refusing to run a {what} as user {user!r}: "
                                "fence never runs containers as root")


def refuse_unsafe_build(spec: BuildSpec) -> None:
    """Refuse a build fence could not own or that would escape staging's network rule.

    Args:
        spec: the build to check.

    Raises:
        UsageError: the node label is missing, the network is not ``none`` or ``bridge``, the
            reference is not ``repository:tag``, or the timeout is not positive.
    """
    if not spec.labels.get(fence_labels.NODE):
        raise UsageError(detail=f"build spec lacks the {fence_labels.NODE} label: "
                                "fence builds only images it can recognise as its own")
    if spec.network not in _NETWORKS:
        raise UsageError(detail=f"build network {spec.network!r} is not allowed (none or bridge)")
    if "@" in spec.ref or ":" not in spec.ref.rsplit("/", 1)[-1]:
        raise UsageError(detail=f"cannot build as {spec.ref!r}: give repository:tag")
    if spec.timeout <= 0:
        raise UsageError(detail=f"build timeout {spec.timeout} is not positive")
