"""The node's desired state (apps, and later releases and instances) in SQLite, with a versioned schema."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from fence.errors import StoreError
from fence.models import DropletRecord
from fence.wire import from_wire, to_wire

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE apps (
        name        TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL,
        instances   INTEGER NOT NULL DEFAULT 1 CHECK (instances >= 0),
        memory_mib  INTEGER,
        env_json    TEXT NOT NULL DEFAULT '{}'
    );
    """,
    """
    CREATE TABLE droplets (
        id          TEXT PRIMARY KEY,
        app         TEXT NOT NULL,
        size        INTEGER NOT NULL,
        staged_at   TEXT NOT NULL,
        record_json TEXT NOT NULL
    );
    CREATE INDEX droplets_by_app ON droplets (app, staged_at);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)


class StateStore:
    """The SQLite file holding what the node should run.

    One connection, shared by the daemon's threads under a lock; WAL mode so a reader never
    waits for a writer's fsync.
    """

    def __init__(self, *, host_db: Path) -> None:
        self._host_db = host_db
        self._lock = threading.RLock()
        try:
            host_db.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(host_db, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(path=host_db, detail=str(exc)) from exc
        self._migrate()

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            current = self.schema_version
            if current > SCHEMA_VERSION:
                raise StoreError(path=self._host_db,
                                 detail=f"schema version {current} is newer than this fence "
                                        f"understands ({SCHEMA_VERSION}); upgrade fence")
            for version in range(current, SCHEMA_VERSION):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(_MIGRATIONS[version]):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {version + 1}")
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._conn.execute("ROLLBACK")
                    raise StoreError(path=self._host_db,
                                     detail=f"migration to schema {version + 1} failed: {exc}") from exc

    def count_apps(self) -> int:
        """How many apps the node knows."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM apps").fetchone()[0])

    def add_droplet(self, record: DropletRecord) -> None:
        """Record a droplet (a droplet with the same digest is replaced)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO droplets (id, app, size, staged_at, record_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (record.id, record.app, record.size, record.staged_at, json.dumps(to_wire(record))))

    def droplet(self, droplet_id: str) -> DropletRecord | None:
        """A droplet's record, or ``None``."""
        with self._lock:
            row = self._conn.execute("SELECT record_json FROM droplets WHERE id = ?",
                                     (droplet_id,)).fetchone()
        return from_wire(DropletRecord, json.loads(row[0])) if row else None

    def droplets(self, app: str | None = None) -> list[DropletRecord]:
        """Droplets, newest first; only one app's when ``app`` is given."""
        query = "SELECT record_json FROM droplets"
        args: tuple[str, ...] = ()
        if app is not None:
            query += " WHERE app = ?"
            args = (app,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY staged_at DESC, rowid DESC", args).fetchall()
        return [from_wire(DropletRecord, json.loads(row[0])) for row in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
