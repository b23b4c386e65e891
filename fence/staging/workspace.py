"""Every path a staging uses, on the host (host_…) and in the container (ctr_…), and the tars that lay them out."""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from fence.config import ConfigStore

ADMIN_HOOKS = PurePosixPath("/etc/stackato/hooks")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Workspace:
    """The layout of one staging container, all under the app user's home.

    Attributes:
        ctr_home: the app user's home, e.g. ``/home/stackato``.
        uid: the app user's uid (and gid).
    """

    ctr_home: PurePosixPath
    uid: int

    @classmethod
    def of(cls, config: ConfigStore) -> Workspace:
        """The app user's layout as the node is configured (``container/user``, ``container/uid``)."""
        return cls(ctr_home=PurePosixPath("/home") / str(config.fence("container/user")),
                   uid=int(config.fence("container/uid")))

    @property
    def base_env(self) -> dict[str, str]:
        """``HOME`` and ``PATH``: what every container of the app user starts with."""
        return {"HOME": str(self.ctr_home), "PATH": CONTAINER_PATH}

    @property
    def ctr_app(self) -> PurePosixPath:
        """BUILD_DIR: the app source, compiled in place; the droplet is made of it."""
        return self.ctr_home / "app"

    @property
    def ctr_cache(self) -> PurePosixPath:
        """CACHE_DIR: the per-app build cache, restored before compile and saved after."""
        return self.ctr_home / "cache"

    @property
    def ctr_env(self) -> PurePosixPath:
        """ENV_DIR: one file per app env variable (Heroku's convention)."""
        return self.ctr_home / "env"

    @property
    def ctr_deps(self) -> PurePosixPath:
        """DEPS_DIR of Cloud Foundry's supply/finalize chain."""
        return self.ctr_home / "deps"

    @property
    def ctr_buildpacks(self) -> PurePosixPath:
        """Where buildpacks are copied, one folder each: ``<index>-<name>``."""
        return self.ctr_home / "buildpacks"

    @property
    def ctr_tmp(self) -> PurePosixPath:
        """TMPDIR for buildpacks and hooks."""
        return self.ctr_home / "tmp"

    def ctr_buildpack(self, index: int, name: str) -> PurePosixPath:
        """The folder of the ``index``-th buildpack."""
        return self.ctr_buildpacks / f"{index}-{name}"

    def ctr_admin_hook(self, phase: str) -> PurePosixPath:
        """The stack's admin hook of a phase (``pre-staging`` …)."""
        return ADMIN_HOOKS / phase

    def skeleton_tar(self) -> bytes:
        """A tar (to unpack at ``/``) creating the home and every folder above, owned by the app user."""
        names = [self.ctr_home, self.ctr_app, self.ctr_cache, self.ctr_env, self.ctr_deps,
                 self.ctr_buildpacks, self.ctr_tmp]
        return tar_bytes(directories=[str(p).lstrip("/") for p in names], files={}, uid=self.uid)

    def env_tar(self, env: Mapping[str, str]) -> bytes:
        """A tar (to unpack at ``ctr_home``) of ENV_DIR: ``env/NAME`` holding each value."""
        return tar_bytes(directories=["env"], uid=self.uid,
                         files={f"env/{name}": value.encode() for name, value in env.items()})


def tar_bytes(*, directories: Iterable[str], files: Mapping[str, bytes], uid: int,
              mode: int = 0o644) -> bytes:
    """A small in-memory tar of folders (0755) and files, all owned by ``uid:uid``.

    Args:
        directories: relative folder names, parents first.
        files: relative file name → content.
        uid: owner and group of every entry.
        mode: permission bits of the files.

    Returns:
        The tar archive.
    """
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in directories:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o755, uid, uid, now
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, uid, now
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class HostPaths:
    """Where staging keeps things on the host, under FENCE_HOME.

    Attributes:
        host_root: FENCE_HOME.
    """

    host_root: Path

    @property
    def host_work(self) -> Path:
        """Scratch space for uploads and repacked sources (cleaned after each staging)."""
        return self.host_root / "work"

    @property
    def host_buildpack_cache(self) -> Path:
        """Git buildpacks cloned on the node."""
        return self.host_root / "buildpack-cache"

    def host_app_cache(self, app: str) -> Path:
        """The saved build cache of an app (a tar of ``cache/``)."""
        return self.host_root / "caches" / f"{app}.tar"

    def host_staging_log(self, app: str, staging_id: str) -> Path:
        """The log of one staging."""
        return self.host_root / "logs" / "staging" / app / f"{staging_id}.log"
