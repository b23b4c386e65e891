"""The app user's layout in every container fence makes (staging, droplet image, instance, task)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Mapping

from fence.config import ConfigStore
from fence.tarstream import TarMember, tar_bytes

ADMIN_HOOKS = PurePosixPath("/etc/stackato/hooks")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Workspace:
    """The app user's folders in a container, all under its home.

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
        """The stack's admin hook of a phase (``pre-staging``, ``pre-running`` …)."""
        return ADMIN_HOOKS / phase

    def skeleton_tar(self) -> bytes:
        """A tar (to unpack at ``/``) creating the home and every folder above, owned by the app user."""
        names = [self.ctr_home, self.ctr_app, self.ctr_cache, self.ctr_env, self.ctr_deps,
                 self.ctr_buildpacks, self.ctr_tmp]
        return tar_bytes(TarMember(name=str(p).lstrip("/"), mode=0o755, uid=self.uid, kind="dir")
                         for p in names)

    def env_tar(self, env: Mapping[str, str]) -> bytes:
        """A tar (to unpack at ``ctr_home``) of ENV_DIR: ``env/NAME`` holding each value."""
        return tar_bytes([TarMember(name="env", mode=0o755, uid=self.uid, kind="dir"),
                          *(TarMember(name=f"env/{name}", mode=0o644, uid=self.uid, data=value.encode())
                            for name, value in env.items())])
