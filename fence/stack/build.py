"""Builds the default stack image from Debian packages (mmdebstrap to a tarball, imported by the engine)."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config.types import BadValue, image_ref_type
from fence.errors import StackBuildFailed, ToolMissing, UsageError
from fence.models import ImageInfo

# What every stack has: a shell and the tools buildpacks and hooks rely on, Python and Node.js
# for the built-in buildpacks, and passwd for creating the app user.
STACK_PACKAGES = (
    "bash", "coreutils", "tar", "gzip", "ca-certificates", "python3", "python3-venv",
    "python3-pip", "nodejs", "npm", "git", "curl", "procps", "passwd",
)

_SUITE = r"[a-z][a-z0-9-]{1,31}"
_ROLLING = ("sid", "unstable", "experimental", "rc-buggy")

LineCallback = Callable[[str], None]


def project_hooks_dir() -> Path:
    """The top-level ``hooks/`` folder of the fence source tree (default admin hooks)."""
    return Path(__file__).resolve().parents[2] / "hooks"


@dataclass(frozen=True)
class StackRecipe:
    """What goes into a stack image.

    Attributes:
        suite: the Debian suite, e.g. ``bookworm``.
        mirror: the Debian mirror URL.
        security_mirror: the Debian security mirror URL (skipped for rolling suites).
        user: the app user's name.
        uid: the app user's uid (also its gid).
        host_hooks: folder of admin hooks installed at ``/etc/stackato/hooks``.
        packages: Debian packages to install.
    """

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    user: str = "stackato"
    uid: int = 1000
    host_hooks: Path = project_hooks_dir()
    packages: tuple[str, ...] = STACK_PACKAGES

    def sources(self) -> list[str]:
        """The apt source lines the image is built from (and keeps for later updates)."""
        lines = [f"deb {self.mirror} {self.suite} main"]
        if self.suite not in _ROLLING:
            lines.append(f"deb {self.mirror} {self.suite}-updates main")
            lines.append(f"deb {self.security_mirror} {self.suite}-security main")
        return lines


def check_recipe(recipe: StackRecipe, ref: str) -> None:
    """Refuse a recipe or tag that is malformed, before any work starts.

    Raises:
        UsageError: a bad tag, suite, mirror or hooks folder.
    """
    try:
        image_ref_type().check(ref)
    except BadValue:
        raise UsageError(detail=f"--tag {ref!r} is not an image reference like fence/stack:bookworm") from None
    if not re.fullmatch(_SUITE, recipe.suite):
        raise UsageError(detail=f"--suite {recipe.suite!r} is not a Debian suite name like bookworm")
    for url in (recipe.mirror, recipe.security_mirror):
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[A-Za-z0-9._~/-]*)?", url):
            raise UsageError(detail=f"mirror {url!r} is not an http(s) URL")
    if not recipe.host_hooks.is_dir():
        raise UsageError(detail=f"hooks folder {recipe.host_hooks} does not exist")


def mmdebstrap_argv(recipe: StackRecipe, host_out: Path) -> list[str]:
    """The mmdebstrap command that writes the stack's root filesystem to ``host_out`` (a tar)."""
    user, uid = shlex.quote(recipe.user), int(recipe.uid)
    customize = [
        f'chroot "$1" groupadd --gid {uid} {user}',
        f'chroot "$1" useradd --create-home --uid {uid} --gid {uid} --shell /bin/bash {user}',
        'mkdir -p "$1/etc/stackato/hooks"',
        f"sync-in {shlex.quote(str(recipe.host_hooks))} /etc/stackato/hooks",
        'chown -R 0:0 "$1/etc/stackato" && chmod -R u=rwX,go=rX "$1/etc/stackato"',
        'rm -rf "$1/var/cache/apt/"*.bin "$1/var/lib/apt/lists/"*',
    ]
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=auto",
        "--format=tar",
        "--include=" + ",".join(recipe.packages),
        "--aptopt=Acquire::Retries \"3\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    ]
    argv += [f"--customize-hook={hook}" for hook in customize]
    argv += [recipe.suite, str(host_out)]
    argv += recipe.sources()
    return argv


def image_changes(recipe: StackRecipe) -> tuple[str, ...]:
    """The Dockerfile instructions applied when the tarball is imported."""
    built = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return (
        "ENV LANG=C.UTF-8",
        f"LABEL {labels.STACK}={recipe.suite} {labels.STACK}.built={built} "
        f"{labels.STACK}.user={recipe.user} {labels.STACK}.uid={recipe.uid}",
        'CMD ["/bin/bash"]',
    )


def build_stack(*, recipe: StackRecipe, ref: str, backend: ContainerBackend, host_workdir: Path,
                on_line: LineCallback,
                run: Callable[..., subprocess.Popen[str]] = subprocess.Popen) -> ImageInfo:
    """Build the stack image and import it into the engine as ``ref``.

    Args:
        recipe: suite, mirrors, user and hooks.
        ref: the image reference to give it.
        backend: the engine to import into.
        host_workdir: where the temporary tarball is written (removed afterwards).
        on_line: receives progress lines.
        run: starts the mmdebstrap process (replaced in tests).

    Returns:
        The imported image.

    Raises:
        UsageError: a malformed tag or recipe.
        ToolMissing: mmdebstrap is not installed.
        StackBuildFailed: mmdebstrap failed (its last lines are in the message).
        EngineUnavailable: the engine does not answer.
    """
    check_recipe(recipe, ref)
    if run is subprocess.Popen and shutil.which("mmdebstrap") is None:
        raise ToolMissing(tool="mmdebstrap", hint="apt-get install mmdebstrap; `make test` installs it")
    host_workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stack-", dir=host_workdir) as tmp:
        host_tar = Path(tmp) / "rootfs.tar"
        on_line(f"-----> Building the {recipe.suite} root filesystem with mmdebstrap "
                f"({len(recipe.packages)} packages)")
        _run_mmdebstrap(mmdebstrap_argv(recipe, host_tar), on_line, run)
        size_mb = host_tar.stat().st_size / 1e6
        on_line(f"-----> Importing {size_mb:.0f} MB into the Docker Engine as {ref}")
        image = backend.import_image(host_tar, ref, image_changes(recipe),
                                     progress=_import_progress(on_line))
    on_line(f"-----> Stack {ref} is {image.id[:19]} ({image.size / 1e6:.0f} MB), "
            f"built in {time.monotonic() - started:.0f} s")
    return image


def _run_mmdebstrap(argv: list[str], on_line: LineCallback,
                    run: Callable[..., subprocess.Popen[str]]) -> None:
    tail: list[str] = []
    process = run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                  errors="replace", stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-5:]
        if line.startswith(("I: ", "E: ", "W: ")):
            on_line(f"       {line}")
    if process.wait() != 0:
        raise StackBuildFailed(step="mmdebstrap", detail=" | ".join(tail) or f"exit {process.returncode}")


def _import_progress(on_line: LineCallback) -> Callable[[int, int], None]:
    shown = {"tenth": -1}

    def report(done: int, total: int) -> None:
        if total <= 0:
            return
        tenth = min(10, done * 10 // total)
        if tenth > shown["tenth"]:
            shown["tenth"] = tenth
            on_line(f"       imported {tenth * 10}%")
    return report
