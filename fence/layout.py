"""The app user's layout and uid in every container fence makes (staging, droplet image, instance, task)."""

from __future__ import annotations

import grp
import pwd
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import HomeFileInvalid
from fence.home import keep_once
from fence.models import AppUid
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
    def of(cls, config: ConfigStore, app_user: AppUser) -> Workspace:
        """The app user's layout as the node is configured (``container/user``), with the uid
        ``app_user`` decides (``container/uid``, or a free one on an engine without remapping)."""
        return cls(ctr_home=PurePosixPath("/home") / str(config.fence("container/user")),
                   uid=app_user.uid())

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


# --- the app user's uid --------------------------------------------------------------------------

UNMAPPED_UID_BASE = 100_000   # above every ordinary account (Debian's UID_MAX is 60000)
_MAX_UID = 2**31 - 2
_REMAP_TTL = 5.0              # seconds; remapping only changes when dockerd is restarted
_SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


@dataclass(frozen=True)
class HostAccounts:
    """The host's accounts, as far as a uid is concerned: users and groups (through NSS, so
    LDAP accounts count) and the subordinate id ranges of ``/etc/subuid`` and ``/etc/subgid``
    (the uids other users' rootless containers and remapped engines run as).

    Attributes:
        user_name: the user with a uid, or ``None``.
        group_name: the group with a gid, or ``None``.
        host_subid_files: the subordinate id files (``NAME:START:COUNT`` lines).
    """

    user_name: Callable[[int], str | None] = _user_name
    group_name: Callable[[int], str | None] = _group_name
    host_subid_files: tuple[Path, ...] = field(default=_SUBID_FILES)

    def subordinate_ranges(self) -> list[tuple[str, int, int]]:
        """``(owner, first, end)`` of every subordinate range (``end`` excluded); unreadable
        files and malformed lines are skipped."""
        found = []
        for host_file in self.host_subid_files:
            try:
                lines = host_file.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    found.append((parts[0], int(parts[1]), int(parts[1]) + int(parts[2])))
        return found

    def owner(self, uid: int) -> str | None:
        """Who on the host has ``uid`` (as a user, a group's gid, or in a subordinate range)."""
        if (name := self.user_name(uid)) is not None:
            return f"user {name}"
        if (name := self.group_name(uid)) is not None:
            return f"group {name}"
        for owner, first, end in self.subordinate_ranges():
            if first <= uid < end:
                return f"subordinate ids of {owner}"
        return None

    def free_uid(self, base: int = UNMAPPED_UID_BASE) -> int:
        """The lowest uid from ``base`` up that no host user, group or subordinate range has.

        Deterministic: the same accounts give the same uid.
        """
        ranges = self.subordinate_ranges()
        uid = base
        while uid <= _MAX_UID:
            end = next((e for _, first, e in ranges if first <= uid < e), None)
            if end is not None:
                uid = end  # past the whole range in one step
            elif self.user_name(uid) is None and self.group_name(uid) is None:
                return uid
            else:
                uid += 1
        raise HomeFileInvalid(path="(host accounts)", why=f"no free uid from {base} up")


class AppUser:
    """Decides the uid app processes run as; staging, droplet images, instances and tasks all
    ask it (through ``Workspace.of``) and nothing else reads ``container/uid`` for that.

    Under userns-remap the uid is ``container/uid`` (default 1000): a container uid, which the
    engine maps to an unprivileged subordinate uid on the host. Without remapping a container
    uid *is* a host uid, and 1000 is usually the first login user, who could then read every
    app's ``/proc/PID/environ`` and signal or ptrace its processes. So unless the admin set
    ``container/uid`` explicitly, fence then uses a uid no host account has
    (``HostAccounts.free_uid``), picked once and kept in ``host_file`` so that droplets, caches
    and kept sources keep their owner when accounts are added later.

    Args:
        config: node config (``container/uid``).
        backend: the engine (whether it remaps user namespaces).
        host_file: where the picked uid is kept (``NodeHome.host_app_uid``).
        accounts: the host's accounts.
        clock: monotonic seconds (tests).
    """

    def __init__(self, *, config: ConfigStore, backend: ContainerBackend, host_file: Path,
                 accounts: HostAccounts | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._backend = backend
        self._host_file = host_file
        self._accounts = accounts or HostAccounts()
        self._clock = clock
        self._lock = threading.Lock()
        self._remapped: tuple[float, int | None, bool] | None = None  # (when, engine epoch, answer)

    def uid(self) -> int:
        """The uid (and gid) app processes run as now.

        Raises:
            EngineUnavailable: the engine does not answer (it is asked at most every 5 s).
            HomeFileInvalid: the kept uid file is not a uid.
        """
        remapped = self._engine_remaps()
        if remapped or self._config.is_set("fence", "container/uid"):
            return int(self._config.fence("container/uid"))
        return self._picked()

    def describe(self) -> AppUid:
        """The uid with its reason, and the host account that has it too (for ``kato status``).

        Raises:
            EngineUnavailable: the engine does not answer.
            HomeFileInvalid: the kept uid file is not a uid.
        """
        uid = self.uid()
        remapped = self._engine_remaps()
        source = "container/uid" if remapped or self._config.is_set("fence", "container/uid") else "picked"
        return AppUid(uid=uid, remapped=remapped, source=source,
                      host_owner=None if remapped else self._accounts.owner(uid))

    def _engine_remaps(self) -> bool:
        # Remapping changes only with an engine restart. While the backend has followed the
        # engine's events since the last answer (the same epoch), that answer holds and no
        # instance start asks the engine again; otherwise it is asked at most every _REMAP_TTL.
        now, epoch = self._clock(), self._backend.engine_epoch()
        with self._lock:
            if self._remapped is not None:
                at, seen_epoch, remapped = self._remapped
                if (epoch is not None and epoch == seen_epoch) or now - at < _REMAP_TTL:
                    return remapped
        remapped = self._backend.engine_info().userns_remap
        with self._lock:
            self._remapped = (now, epoch, remapped)
        return remapped

    def _picked(self) -> int:
        text = keep_once(self._host_file, lambda: str(self._accounts.free_uid()))
        if not text.isdigit() or not 0 < int(text) <= _MAX_UID:
            raise HomeFileInvalid(path=str(self._host_file),
                                  why=f"it holds {text[:20]!r}, not a uid; remove it and fence picks one again")
        return int(text)
