"""The staging-input key: one digest of everything that determines a droplet, so that a staging
whose inputs are unchanged can hand back the droplet staged from them (as ``docker build`` skips
a step whose inputs its cache has seen)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from fence.models import Manifest, ResolvedBuildpack
from fence.wire import to_wire

# Bump whenever the stager changes what a droplet holds or how it is made from the same inputs
# (phases, their order, staging_info.yml, packaging): droplets keyed by an older version are then
# staged again instead of reused.
STAGING_LOGIC_VERSION = 1

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StagingInputs:
    """What a staging is made of, as far as its droplet can tell.

    The build cache is left out on purpose: a buildpack must produce the same droplet from a warm
    cache as from a cold one (the cache only saves work). So is the stack image's name: its id says
    what it holds.

    Attributes:
        app: the app's name (hooks and buildpacks see it as ``STACKATO_APP_NAME``).
        source: the content digest of the checked source tar (``source_digest``).
        commit: the source's git commit, when from git (it is written into the droplet).
        manifest: the sha256 of the parsed manifest as staging uses it (hooks, processes, env,
            buildpacks).
        buildpack_specs: the buildpacks asked for: given, else the configured detection order.
        explicit: whether they were given (a chain) or are candidates for detection.
        buildpacks: each resolved buildpack as ``name version digest``: the content sha256 of a
            built-in or path buildpack, the commit of a git one.
        stack_image_id: the id of the stack image the staging container would start from.
        env: the environment every hook and buildpack step runs with (the app's env plus the
            staging variables: ``MEMORY_LIMIT``, ``STAGING_TIMEOUT``, network, user, home).
        container: the staging container's settings as ``name=value`` (user, network, memory,
            processes, CPU shares, open files).
        logic_version: ``STAGING_LOGIC_VERSION``.
    """

    app: str
    source: str
    commit: str | None
    manifest: str
    buildpack_specs: tuple[str, ...]
    explicit: bool
    buildpacks: tuple[str, ...]
    stack_image_id: str
    env: Mapping[str, str]
    container: tuple[str, ...]
    logic_version: int = STAGING_LOGIC_VERSION

    def key(self) -> str:
        """The sha256 (hex) of these inputs in a canonical JSON form."""
        text = json.dumps(to_wire(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def source_digest(host_tar: Path) -> str:
    """The sha256 of a checked source tar's content: every entry's name, kind, mode, link target
    and bytes, in order — not its modification times (a fresh git clone or a touched file with the
    same bytes stages the same app).

    Args:
        host_tar: the tar ``prepare_source`` wrote (or a kept source's copy of it).

    Returns:
        The hex digest.

    Raises:
        tarfile.TarError, OSError: the tar cannot be read.
    """
    digest = hashlib.sha256()
    with tarfile.open(host_tar, mode="r|") as tar:
        for member in tar:
            digest.update(json.dumps([member.name, member.type.decode("latin-1"), member.mode,
                                      member.linkname, member.size]).encode() + b"\n")
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    for chunk in iter(lambda: handle.read(_CHUNK), b""):
                        digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: Manifest) -> str:
    """The sha256 of a parsed manifest (hooks, processes, env, buildpacks, …) in canonical JSON."""
    text = json.dumps(to_wire(manifest), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def buildpack_identity(pack: ResolvedBuildpack) -> str:
    """A resolved buildpack as the key sees it: name, version and full content digest (or commit)."""
    return f"{pack.name} {pack.version} {pack.digest or pack.version}"
