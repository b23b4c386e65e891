"""Where a fence node keeps its files: FENCE_HOME and the paths beneath it."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def default_home() -> Path:
    """``$FENCE_HOME``, else ``/var/lib/fence`` for root, else the user's XDG data dir."""
    if os.environ.get("FENCE_HOME"):
        return Path(os.environ["FENCE_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/fence")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "fence"


@dataclass(frozen=True)
class NodeHome:
    """The paths of one fence node: every file and folder under FENCE_HOME is named here, and
    components receive the NodeHome (or the one path they need) rather than joining names onto
    ``host_root`` themselves.

    Attributes:
        host_root: FENCE_HOME itself.
    """

    host_root: Path

    @classmethod
    def from_env(cls) -> "NodeHome":
        """The node home named by the environment (see ``default_home``)."""
        return cls(host_root=default_home())

    @property
    def host_config(self) -> Path:
        """The config file (all components)."""
        return self.host_root / "config.yml"

    @property
    def host_db(self) -> Path:
        """The SQLite state store."""
        return self.host_root / "fence.db"

    @property
    def host_socket(self) -> Path:
        """The daemon's Unix socket (``$FENCE_SOCKET`` overrides)."""
        if os.environ.get("FENCE_SOCKET"):
            return Path(os.environ["FENCE_SOCKET"])
        return self.host_root / "fence.sock"

    @property
    def host_droplets(self) -> Path:
        """The droplet store (``DropletStore``): one ``<sha256>.tgz`` per droplet."""
        return self.host_root / "droplets"

    @property
    def host_router(self) -> Path:
        """The nginx router's folder: its config, pid file and logs (``NginxRouter``)."""
        return self.host_root / "router"

    @property
    def host_registry(self) -> Path:
        """The cluster registry's folder: its config, pid file, log and ``storage/`` (``Registry``)."""
        return self.host_root / "registry"

    @property
    def host_registry_conf(self) -> Path:
        return self.host_registry / "config.yml"

    @property
    def host_registry_pid(self) -> Path:
        return self.host_registry / "registry.pid"

    @property
    def host_registry_log(self) -> Path:
        return self.host_registry / "registry.log"

    @property
    def host_registry_storage(self) -> Path:
        """The registry's blobs and manifests (the pushed droplet images)."""
        return self.host_registry / "storage"

    @property
    def host_sources(self) -> Path:
        """Kept sources, one folder per app (``KeptSources``)."""
        return self.host_root / "sources"

    def host_app_sources(self, app: str) -> Path:
        """The kept sources of one app."""
        return self.host_sources / app

    @property
    def host_caches(self) -> Path:
        """Saved build caches, one tar per app."""
        return self.host_root / "caches"

    def host_app_cache(self, app: str) -> Path:
        """The saved build cache of an app (a tar of ``cache/``)."""
        return self.host_caches / f"{app}.tar"

    @property
    def host_logs(self) -> Path:
        """Logs fence keeps on disk (the daemon itself logs to its stderr)."""
        return self.host_root / "logs"

    @property
    def host_staging_logs(self) -> Path:
        """Staging logs, one folder per app."""
        return self.host_logs / "staging"

    def host_app_staging_logs(self, app: str) -> Path:
        """The staging logs of one app, one file per staging."""
        return self.host_staging_logs / app

    def host_staging_log(self, app: str, staging_id: str) -> Path:
        """The log of one staging."""
        return self.host_app_staging_logs(app) / f"{staging_id}.log"

    # --- release phase (issue 14, P2) ---------------------------------------------------------

    @property
    def host_release_logs(self) -> Path:
        """Release-phase logs (the output of each app's ``release:`` command), one folder per app."""
        return self.host_logs / "release"

    def host_app_release_logs(self, app: str) -> Path:
        """The release-phase logs of one app, one file per run."""
        return self.host_release_logs / app

    def host_release_log(self, app: str, run_id: str) -> Path:
        """The log of one run of an app's release command."""
        return self.host_app_release_logs(app) / f"{run_id}.log"

    # --- end release phase ------------------------------------------------------------------

    # cron (issue 14): one log file per app of its cron jobs' output (`fence logs APP --cron`)
    @property
    def host_cron_logs(self) -> Path:
        """Cron job logs, one file per app."""
        return self.host_logs / "cron"

    def host_app_cron_log(self, app: str) -> Path:
        """The log of one app's cron jobs (the file before it is kept as ``APP.log.1``)."""
        return self.host_cron_logs / f"{app}.log"

    @property
    def host_work(self) -> Path:
        """Scratch space for uploads and repacked sources, one folder per staging (removed after it)."""
        return self.host_root / "work"

    def host_staging_work(self, staging_id: str) -> Path:
        """The scratch folder of one staging."""
        return self.host_work / staging_id

    @property
    def host_buildpack_cache(self) -> Path:
        """The folder ``BuildpackResolver`` owns for buildpacks fetched to the node."""
        return self.host_root / "buildpack-cache"

    @property
    def host_git_buildpacks(self) -> Path:
        """Git buildpack checkouts, ``<name>-<hash>/<commit>`` (the resolver clones into ``git/``
        of its folder; gc removes checkouts unused for a while)."""
        return self.host_buildpack_cache / "git"

    @property
    def host_services(self) -> Path:
        """Service credentials, one 0600 file per service (issue 16); the folder is 0700."""
        return self.host_root / "services"

    def host_service_credentials(self, service: str) -> Path:
        """A service's generated credentials (database, user, password), 0600."""
        return self.host_services / f"{service}.json"

    @property
    def host_backups(self) -> Path:
        """Service backups, one folder per service (0700)."""
        return self.host_root / "backups"

    def host_service_backups(self, service: str) -> Path:
        """The backups of one service: ``ID.dump`` and its ``ID.json`` record, 0600."""
        return self.host_backups / service

    @property
    def host_tmp(self) -> Path:
        """Scratch space of admin commands (``kato image build`` writes its tarball here)."""
        return self.host_root / "tmp"

    def ensure(self) -> None:
        """Create FENCE_HOME if missing, and keep it closed to other users (mode 0750): it holds
        droplets, build caches and logs of every app."""
        self.host_root.mkdir(parents=True, exist_ok=True, mode=0o750)
        stat = self.host_root.stat()
        if stat.st_uid == os.geteuid() and stat.st_mode & 0o027:
            os.chmod(self.host_root, stat.st_mode & ~0o027 & 0o7777)

    @property
    def host_app_uid(self) -> Path:
        """The uid app processes run as on an engine without userns-remap, picked once
        (``fence.layout.AppUser``)."""
        return self.host_root / "app-uid"

    @property
    def node_id(self) -> str:
        """This node's id, made once and kept in ``FENCE_HOME/node-id``.

        Two nodes with different homes on one engine get different ids, so neither sees the
        other's containers.
        """
        host_file = self.host_root / "node-id"
        if not host_file.exists():
            self.ensure()
        import secrets  # only the first call on a node makes an id; a CLI call reads it (or never asks)

        return keep_once(host_file, lambda: "n" + secrets.token_hex(6))


def keep_once(host_file: Path, make: Callable[[], str]) -> str:
    """The text kept in ``host_file``, written from ``make()`` by the first process to ask.

    Args:
        host_file: a file in an existing folder.
        make: makes the value when the file does not exist yet.

    Returns:
        The kept text, stripped (another process's, if it won the race).
    """
    try:
        return host_file.read_text().strip()
    except FileNotFoundError:
        pass
    host_tmp = host_file.with_name(f".{host_file.name}.{os.getpid()}.{threading.get_ident()}")
    host_tmp.write_text(make() + "\n")
    try:
        # link() fails if another process won the race; then its value stands.
        os.link(host_tmp, host_file)
    except FileExistsError:
        pass
    finally:
        host_tmp.unlink(missing_ok=True)
    return host_file.read_text().strip()
