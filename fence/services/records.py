"""The services table of the node's SQLite state (schema migration 10): services and bindings."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from fence.errors import StoreError


@dataclass(frozen=True)
class ServiceRecord:
    """One service as the node keeps it.

    Attributes:
        name: the service's name.
        type: its type (``postgresql``, ``mysql``, ``redis``).
        memory_mib: its memory limit.
        created_at: when it was created (ISO 8601).
        image: the image it runs (a reference).
        bound: the apps bound to it, in binding order.
        last_backup: id of its last good backup, if any.
        last_backup_at: when that was (ISO 8601).
        backup_error: why its last backup failed, ``None`` when it did not.
    """

    name: str
    type: str
    memory_mib: int
    created_at: str
    image: str
    bound: tuple[str, ...] = ()
    last_backup: str | None = None
    last_backup_at: str | None = None
    backup_error: str | None = None


class ServiceRecords:
    """Services and their bindings in the node's database (a connection of its own; WAL lets it
    share the file with ``StateStore``, which made the tables).

    Args:
        host_db: the node's SQLite file, migrated by ``StateStore`` first.
    """

    def __init__(self, *, host_db: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(host_db, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(path=host_db, detail=str(exc)) from exc
        self._host_db = host_db

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(path=self._host_db, detail=str(exc)) from exc

    def add(self, record: ServiceRecord) -> bool:
        """Record a new service; ``False`` when one of that name exists (nothing changed)."""
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO services (name, type, memory_mib, created_at, image) VALUES (?,?,?,?,?)",
                    (record.name, record.type, record.memory_mib, record.created_at, record.image))
            except sqlite3.IntegrityError:
                return False
            except sqlite3.Error as exc:
                raise StoreError(path=self._host_db, detail=str(exc)) from exc
        return True

    def get(self, name: str) -> ServiceRecord | None:
        """One service, or ``None``."""
        found = [r for r in self.all() if r.name == name]
        return found[0] if found else None

    def all(self) -> list[ServiceRecord]:
        """Every service, by name."""
        bound: dict[str, list[str]] = {}
        for service, app in self._run("SELECT service, app FROM service_bindings ORDER BY seq"):
            bound.setdefault(service, []).append(app)
        return [ServiceRecord(name=r[0], type=r[1], memory_mib=int(r[2]), created_at=r[3], image=r[4],
                              last_backup=r[5], last_backup_at=r[6], backup_error=r[7],
                              bound=tuple(bound.get(r[0], ())))
                for r in self._run("SELECT name, type, memory_mib, created_at, image, last_backup, "
                                   "last_backup_at, backup_error FROM services ORDER BY name")]

    def delete(self, name: str) -> None:
        """Forget a service (and its bindings)."""
        self._run("DELETE FROM services WHERE name = ?", (name,))

    def bind(self, service: str, app: str, at: str) -> bool:
        """Bind; ``False`` when it was bound already."""
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO service_bindings (service, app, bound_at, seq) VALUES "
                    "(?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM service_bindings))",
                    (service, app, at))
            except sqlite3.IntegrityError:
                return False
            except sqlite3.Error as exc:
                raise StoreError(path=self._host_db, detail=str(exc)) from exc
        return True

    def unbind(self, service: str, app: str) -> bool:
        """Unbind; ``False`` when it was not bound."""
        with self._lock:
            cursor = self._conn.execute("DELETE FROM service_bindings WHERE service = ? AND app = ?",
                                        (service, app))
            return cursor.rowcount > 0

    def bound_to(self, app: str) -> list[ServiceRecord]:
        """The services bound to an app, in binding order."""
        order = [r[0] for r in self._run("SELECT service FROM service_bindings WHERE app = ? ORDER BY seq",
                                         (app,))]
        by_name = {r.name: r for r in self.all()}
        return [by_name[n] for n in order if n in by_name]

    def note_backup(self, name: str, *, backup: str | None, at: str, error: str | None) -> None:
        """Record the outcome of a backup (a failure keeps the last good one)."""
        if error is None:
            self._run("UPDATE services SET last_backup = ?, last_backup_at = ?, backup_error = NULL "
                      "WHERE name = ?", (backup, at, name))
        else:
            self._run("UPDATE services SET backup_error = ? WHERE name = ?", (error[:300], name))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
