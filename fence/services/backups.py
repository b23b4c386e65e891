"""Service backups: consistent dumps made in the service container, streamed out through the engine
to FENCE_HOME/backups/NAME/ (atomic, checksummed, 0600), listed, pruned and restored."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import tarfile
import time
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from fence.backend.base import Container
from fence.atomic import atomic_file
from fence.config.store import ConfigStore
from fence.errors import BackupRefused, ContainerGone, FenceError, ServiceFailed
from fence.home import NodeHome
from fence.models import ProcessSpec
from fence.services.backup_ids import check_backup_id
from fence.services.kinds import CTR_DATA, CTR_WORK, SERVICE_UID, kind_of
from fence.services.lifecycle import ServiceManager
from fence.services.records import ServiceRecords
from fence.services.views import BackupRecord
from fence.tarstream import ChunkReader, StreamTooLarge, TarMember, tar_stream

_CHUNK = 1024 * 1024
_DUMP_TIMEOUT = 6 * 3600.0  # the engine cannot kill one exec: a timeout kills the server too


class ServiceBackups:
    """Backups of the node's services.

    Args:
        home: FENCE_HOME (``host_service_backups``).
        manager: the services.
        records: the services table (last backup, failures).
        config: ``services/backup_keep``, ``services/backup_interval``, ``services/max_backup``.
    """

    def __init__(self, *, home: NodeHome, manager: ServiceManager, records: ServiceRecords,
                 config: ConfigStore) -> None:
        self._home = home
        self._manager = manager
        self._records = records
        self._config = config

    def backup(self, name: str) -> BackupRecord:
        """Make a consistent backup of a running service, keep it, prune past ``services/backup_keep``.

        Raises:
            ServiceNotFound: no such service.
            ServiceFailed: the service is down, its dump failed, or it was too large.
        """
        record = self._manager.record(name)
        try:
            made = self._backup(record.name, record.type)
        except FenceError as exc:
            self._records.note_backup(name, backup=None, at=_now(), error=exc.message)
            raise
        self._records.note_backup(name, backup=made.id, at=made.created_at, error=None)
        self._prune(name)
        return made

    def list(self, name: str) -> list[BackupRecord]:
        """A service's kept backups, oldest first (a service deleted with its data keeps them).

        Raises:
            UsageError: a bad service name.
        """
        from fence.services.kinds import check_service_name
        host_dir = self._home.host_service_backups(check_service_name(name))
        found = []
        for host_meta in sorted(host_dir.glob("*.json")) if host_dir.is_dir() else ():
            try:
                data = json.loads(host_meta.read_text())
                found.append(BackupRecord(**{k: data[k] for k in BackupRecord.__dataclass_fields__}))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a record fence did not write is not a backup
        return found

    def restore(self, name: str, backup: str) -> None:
        """Load a backup into the service; a refused or failed restore leaves its data as it was.

        Raises:
            UsageError: a malformed backup id.
            ServiceNotFound: no such service.
            BackupRefused: no such backup, another type's, or its file is corrupt or truncated.
            ServiceFailed: the service is down or the load failed (rolled back).
        """
        check_backup_id(backup)
        record = self._manager.record(name)
        kept = {b.id: b for b in self.list(name)}
        if backup not in kept:
            raise BackupRefused(backup=backup, service=name, detail="there is no such backup "
                                "(`fence service backups NAME` lists them)")
        meta = kept[backup]
        kind = kind_of(record.type)
        if meta.type != record.type:
            raise BackupRefused(backup=backup, service=name,
                                detail=f"it is a {meta.type} backup and {name} is {record.type}")
        host_dump = self._dump_file(name, backup)
        self._verify(host_dump, meta, kind.dump_magic)
        container = self._manager.running_container(name)
        if kind.restore:
            container.stream_in(CTR_WORK, tar_stream([TarMember(
                name="restore", host_file=host_dump, mode=0o600, uid=SERVICE_UID)]))
            try:
                result = container.run(ProcessSpec(argv=kind.restore, timeout=_DUMP_TIMEOUT))
            finally:
                self._remove(container, CTR_WORK / "restore")
            if result.exit_code != 0:
                raise ServiceFailed(service=name, detail="the restore failed and was rolled back: "
                                    + " | ".join(result.output[-3:])[:300])
            return
        # Redis: the RDB file is swapped in while the server is down (the start script moves
        # restore.rdb over dump.rdb), then the server starts on it.
        container.stream_in(CTR_DATA, tar_stream([TarMember(
            name="restore.rdb", host_file=host_dump, mode=0o600, uid=SERVICE_UID)]))
        try:
            container.run(ProcessSpec(argv=("bash", "-c", '. /etc/fence-service/credentials && '
                                              'REDISCLI_AUTH="$SVC_PASSWORD" redis-cli -h 127.0.0.1 '
                                              'SHUTDOWN NOSAVE >/dev/null 2>&1; true'), timeout=60))
        except ContainerGone:
            pass  # the server stopped under its own shutdown command: what was asked
        deadline = time.monotonic() + 60
        while container.info().running and time.monotonic() < deadline:
            time.sleep(0.1)
        self._manager.restart(name)

    def due(self) -> list[str]:
        """Services whose periodic backup is due (``services/backup_interval``; 0: none)."""
        interval = int(self._config.fence("services/backup_interval"))
        if interval <= 0:
            return []
        now = dt.datetime.now(dt.timezone.utc)
        due = []
        for record in self._records.all():
            last = record.last_backup_at
            if last is None or (now - dt.datetime.fromisoformat(last)).total_seconds() >= interval:
                due.append(record.name)
        return due

    # --- inner work ----------------------------------------------------------------------------

    def _backup(self, name: str, type_: str) -> BackupRecord:
        kind = kind_of(type_)
        container = self._manager.running_container(name)
        backup = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        host_dir = self._home.host_service_backups(name)
        host_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        host_dir.mkdir(exist_ok=True, mode=0o700)
        os.chmod(host_dir, 0o700)
        max_bytes = int(self._config.fence("services/max_backup")) * 1024 * 1024
        if kind.dump_to_stdout:
            digest, size = self._stream_dump(container, kind.dump, self._dump_file(name, backup), max_bytes, name)
        else:
            result = container.run(ProcessSpec(argv=kind.dump, timeout=_DUMP_TIMEOUT))
            try:
                if result.exit_code != 0:
                    raise ServiceFailed(service=name, detail="the dump failed: "
                                        + " | ".join(result.output[-3:])[:300])
                digest, size = self._save(container.stream_out(CTR_WORK / "dump"),
                                          self._dump_file(name, backup), max_bytes, name)
            finally:
                self._remove(container, CTR_WORK / "dump")
        with self._dump_file(name, backup).open("rb") as handle:
            if handle.read(len(kind.dump_magic)) != kind.dump_magic:
                self._dump_file(name, backup).unlink(missing_ok=True)
                raise ServiceFailed(service=name, detail=f"the dump is not a {type_} dump")
        made = BackupRecord(id=backup, service=name, type=type_, size=size, sha256=digest,
                            created_at=_now())
        # The record is written last: a backup without one (a crash meanwhile) is not listed.
        with atomic_file(self._meta_file(name, backup), mode=0o600) as handle:
            handle.write(json.dumps(asdict(made)).encode())
        return made

    def _stream_dump(self, container: Container, argv: tuple[str, ...], host_dump: Path, max_bytes: int,
                     name: str) -> tuple[str, int]:
        """Run the dump with its stdout streamed into ``host_dump`` (atomic: a failed dump leaves
        no file); returns its sha256 and size."""
        digest, size = hashlib.sha256(), [0]

        def sink(chunk: bytes) -> None:
            size[0] += len(chunk)
            if size[0] > max_bytes:
                raise StreamTooLarge(max_bytes)
            digest.update(chunk)
            out.write(chunk)

        try:
            with atomic_file(host_dump, mode=0o600) as out:
                result = container.run_to(ProcessSpec(argv=argv, timeout=_DUMP_TIMEOUT), sink)
                if result.exit_code != 0:
                    raise ServiceFailed(service=name, detail="the dump failed: "
                                        + " | ".join(result.output[-3:])[:300])
        except StreamTooLarge:
            raise ServiceFailed(service=name, detail=f"the dump is larger than services/max_backup "
                                f"({max_bytes // (1024 * 1024)} MiB); nothing was kept") from None
        return digest.hexdigest(), size[0]

    def _save(self, chunks, host_dump: Path, max_bytes: int, name: str) -> tuple[str, int]:  # noqa: ANN001
        digest, size = hashlib.sha256(), 0
        try:
            with atomic_file(host_dump, mode=0o600) as out, \
                    tarfile.open(fileobj=ChunkReader(chunks, max_bytes=max_bytes + 1024 * 1024), mode="r|") as tar:
                member = tar.next()
                if member is None or not member.isfile():
                    raise ServiceFailed(service=name, detail="the engine sent no dump file")
                source = tar.extractfile(member)
                assert source is not None
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise StreamTooLarge(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
        except StreamTooLarge:
            raise ServiceFailed(service=name, detail=f"the dump is larger than services/max_backup "
                                f"({max_bytes // (1024 * 1024)} MiB); nothing was kept") from None
        return digest.hexdigest(), size

    def _verify(self, host_dump: Path, meta: BackupRecord, magic: bytes) -> None:
        digest, size = hashlib.sha256(), 0
        try:
            with host_dump.open("rb") as handle:
                head = handle.read(len(magic))
                handle.seek(0)
                while chunk := handle.read(_CHUNK):
                    size += len(chunk)
                    digest.update(chunk)
        except OSError as exc:
            raise BackupRefused(backup=meta.id, service=meta.service,
                                detail=f"its file cannot be read ({exc.strerror})") from exc
        if size != meta.size:
            raise BackupRefused(backup=meta.id, service=meta.service,
                                detail=f"its file is truncated or grew ({size} bytes, {meta.size} written)")
        if digest.hexdigest() != meta.sha256:
            raise BackupRefused(backup=meta.id, service=meta.service,
                                detail="its file is corrupt (sha256 differs from the one written)")
        if head != magic:
            raise BackupRefused(backup=meta.id, service=meta.service,
                                detail=f"its file is not a {meta.type} dump")

    def _prune(self, name: str) -> None:
        keep = int(self._config.fence("services/backup_keep"))
        kept = self.list(name)
        for old in kept[:max(0, len(kept) - keep)]:
            self._meta_file(name, old.id).unlink(missing_ok=True)
            self._dump_file(name, old.id).unlink(missing_ok=True)

    def _dump_file(self, name: str, backup: str) -> Path:
        return self._home.host_service_backups(name) / f"{backup}.dump"

    def _meta_file(self, name: str, backup: str) -> Path:
        return self._home.host_service_backups(name) / f"{backup}.json"

    @staticmethod
    def _remove(container, ctr_file: PurePosixPath) -> None:  # noqa: ANN001
        try:
            container.run(ProcessSpec(argv=("rm", "-f", str(ctr_file)), timeout=60))
        except FenceError:
            pass


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
