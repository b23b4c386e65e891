"""Where a fence node keeps its files: FENCE_HOME and the paths beneath it."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path


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
    """The paths of one fence node.

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
    def host_logs(self) -> Path:
        """Daemon and staging logs."""
        return self.host_root / "logs"

    def ensure(self) -> None:
        """Create FENCE_HOME if missing, and keep it closed to other users (mode 0750): it holds
        droplets, build caches and logs of every app."""
        self.host_root.mkdir(parents=True, exist_ok=True, mode=0o750)
        stat = self.host_root.stat()
        if stat.st_uid == os.geteuid() and stat.st_mode & 0o027:
            os.chmod(self.host_root, stat.st_mode & ~0o027 & 0o7777)

    @property
    def node_id(self) -> str:
        """This node's id, made once and kept in ``FENCE_HOME/node-id``.

        Two nodes with different homes on one engine get different ids, so neither sees the
        other's containers.
        """
        host_file = self.host_root / "node-id"
        try:
            return host_file.read_text().strip()
        except FileNotFoundError:
            pass
        self.ensure()
        candidate = "n" + secrets.token_hex(6)
        host_tmp = self.host_root / f".node-id.{os.getpid()}"
        host_tmp.write_text(candidate + "\n")
        try:
            # link() fails if another process won the race; then its id stands.
            os.link(host_tmp, host_file)
        except FileExistsError:
            pass
        finally:
            host_tmp.unlink(missing_ok=True)
        return host_file.read_text().strip()
