"""What the service verbs answer with (light: the CLI's client imports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceView:
    """A service as ``fence services`` shows it.

    Attributes:
        name: its name.
        type: its type.
        state: ``running``, ``starting``, ``crashed``, ``stopped`` or ``missing``.
        healthy: whether its server answered its probe just now.
        memory_mib: its memory limit.
        bound: the apps bound to it.
        host: its host name on the bound apps' networks.
        port: its TCP port there (never published on the host).
        restarts: crash restarts since the daemon started.
        last_backup: id of the last good backup, if any.
        last_backup_at: when it was made.
        backup_error: why the last backup failed, if it did.
        image: the image it runs.
        created_at: when it was created.
        size_bytes: bytes its data takes on disk (``fence service NAME`` only; ``None`` unknown).
    """

    name: str
    type: str
    state: str
    healthy: bool
    memory_mib: int
    bound: tuple[str, ...]
    host: str
    port: int
    restarts: int = 0
    last_backup: str | None = None
    last_backup_at: str | None = None
    backup_error: str | None = None
    image: str = ""
    created_at: str = ""
    size_bytes: int | None = None


@dataclass(frozen=True)
class BackupRecord:
    """One kept backup.

    Attributes:
        id: its id (``YYYYMMDDTHHMMSSZ-xxxxxx``, sorting by age).
        service: the service it was made of.
        type: that service's type (a restore into another type is refused).
        size: bytes of the dump.
        sha256: checksum of the dump.
        created_at: when it was made (ISO 8601).
    """

    id: str
    service: str
    type: str
    size: int
    sha256: str
    created_at: str
