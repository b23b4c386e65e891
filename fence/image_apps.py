"""The rules of Dockerfile and image apps that staging and running share: which builder, which user, which command."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Mapping

from fence.builds import ImageConfig
from fence.errors import UsageError

BUILDERS = ("dockerfile", "buildpack")
# NAME[:TAG] or NAME@sha256:DIGEST, as the engine names local images (lower-case path parts).
_IMAGE_REF = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
                        r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})?")


def check_image_ref(ref: str) -> str:
    """``ref`` when it is an image reference ``NAME[:TAG|@DIGEST]``.

    Raises:
        UsageError: anything else, in one line.
    """
    if len(ref) > 255 or not _IMAGE_REF.fullmatch(ref):
        raise UsageError(detail=f"--image {ref[:80]!r} is not an image reference (NAME[:TAG] or NAME@sha256:DIGEST)")
    return ref


def is_image_droplet(builder: str) -> bool:
    """Whether a droplet with this ``builder`` is an image run as it is (not a buildpack droplet)."""
    return builder in ("dockerfile", "image")


def choose_builder(*, flag: str | None, manifest_builder: str | None, buildpacks_given: bool,
                   has_dockerfile: bool) -> str:
    """Which builder stages an app: ``--builder``, else ``builder:``, else ``dockerfile`` when the
    source has a Dockerfile at its root and no buildpack was named, else ``buildpack``.

    Raises:
        UsageError: an unknown builder, or ``dockerfile`` forced together with buildpacks.
    """
    for given, where in ((flag, "--builder"), (manifest_builder, "stackato.yml builder:")):
        if given is None:
            continue
        if given not in BUILDERS:
            raise UsageError(detail=f"{where} {given!r} is not a builder (one of: {', '.join(BUILDERS)})")
        if given == "dockerfile" and buildpacks_given:
            raise UsageError(detail=f"{where} dockerfile cannot be used with buildpacks: give one or the other")
        return given
    return "dockerfile" if has_dockerfile and not buildpacks_given else "buildpack"


@dataclass(frozen=True)
class RunAs:
    """Who an image app's processes run as.

    Attributes:
        user: ``uid[:gid]`` or a name, as the container spec takes it.
        home: ``HOME`` to set (``""``: the image's own).
        why: one line for the staging log.
    """

    user: str
    home: str
    why: str


def run_as(*, image_user: str, app_uid: int, app_home: str, root_allowed: bool, remapped: bool) -> RunAs:
    """Heroku's rule: a non-root image USER is kept; root or unset becomes the app user (uid
    ``app_uid``, HOME ``app_home``) unless the admin allows root for the app, which is never
    honoured without userns remapping.
    """
    user = image_user.strip()
    name = user.split(":", 1)[0]
    is_root = name in ("", "root") or (name.isdigit() and int(name) == 0)
    if not is_root:
        return RunAs(user=user, home="", why=f"runs as the image's USER {user}")
    if root_allowed and remapped:
        return RunAs(user="0:0", home="/root", why="runs as root (allowed for this app; remapped on the host)")
    return RunAs(user=f"{app_uid}:{app_uid}", home=app_home,
                 why=f"the image's USER is {user or 'unset'} (root): runs as uid {app_uid} instead")


def process_types(*, image: ImageConfig, procfile: Mapping[str, str] | None,
                  processes: Mapping[str, str]) -> dict[str, str]:
    """The app's process types: the image's ENTRYPOINT + CMD as ``web``, overridden by a Procfile,
    then by the manifest's ``processes:``.
    """
    found: dict[str, str] = {}
    argv = (*image.entrypoint, *image.cmd)
    if argv:
        found["web"] = shlex.join(argv)
    found.update(procfile or {})
    found.update(processes)
    return found
