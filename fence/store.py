"""The node's desired state (apps, releases, droplets, stacks it ran on) in SQLite, with a versioned schema."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

from fence.drains.models import DrainRecord
from fence.errors import AppNotFound, HostTaken, StoreError
from fence.models import AppRecord, CronRun, DropletRecord, HealthSettings, ReleaseRecord
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
    """
    ALTER TABLE apps ADD COLUMN started INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE apps ADD COLUMN release INTEGER;
    ALTER TABLE apps ADD COLUMN health_timeout INTEGER;
    ALTER TABLE apps ADD COLUMN urls_json TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE releases (
        app         TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
        number      INTEGER NOT NULL,
        droplet     TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        note        TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (app, number)
    );
    """,
    """
    CREATE TABLE stacks_used (
        image_id    TEXT PRIMARY KEY,
        ref         TEXT NOT NULL,
        first_used  TEXT NOT NULL,
        last_used   TEXT NOT NULL
    );
    """,
    # The staging-input key of each droplet (fence.staging.inputs): an unchanged staging reuses it.
    """
    ALTER TABLE droplets ADD COLUMN inputs_key TEXT NOT NULL DEFAULT '';
    CREATE INDEX droplets_by_inputs ON droplets (inputs_key);
    """,
    # Health checks (issue 14 item 4): the app's health settings as JSON, NULL for the default.
    """
    ALTER TABLE apps ADD COLUMN health_json TEXT;
    """,
    # cron (issue 14): the last run of each app's cron entry, so a restarted daemon neither runs
    # an entry twice in one minute nor catches up on minutes it missed.
    """
    CREATE TABLE cron_runs (
        app         TEXT NOT NULL,
        entry       TEXT NOT NULL,
        minute      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        exit_code   INTEGER,
        duration    REAL,
        outcome     TEXT NOT NULL DEFAULT 'running',
        PRIMARY KEY (app, entry)
    );
    """,
    # Which app answers at which host name (see ``StateStore.put_app``): a URL is claimed as its
    # full host name, an app's default host ``APP.<router/domain>`` as ``APP.@`` (``@``: whatever
    # the router domain is, so a change of ``router/domain`` moves no claim). The primary key is
    # what keeps two apps off one claim, however many pushes write at once. Filled from the apps
    # there are: of a URL two apps list (possible before this table), the older app keeps it.
    """
    CREATE TABLE hosts (
        host        TEXT PRIMARY KEY,
        app         TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE
    );
    CREATE INDEX hosts_by_app ON hosts (app);
    INSERT OR IGNORE INTO hosts (host, app) SELECT name || '.@', name FROM apps;
    INSERT OR IGNORE INTO hosts (host, app)
        SELECT lower(url.value), apps.name FROM apps, json_each(apps.urls_json) AS url
        ORDER BY apps.created_at, apps.name;
    """,
    # --- process types (issue 14, P1): each app's count and memory per process type other
    # than web (web's count stays apps.instances; a memory_mib NULL means the app's) ---
    """
    CREATE TABLE app_processes (
        app         TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
        process     TEXT NOT NULL,
        instances   INTEGER NOT NULL DEFAULT 0 CHECK (instances >= 0),
        memory_mib  INTEGER,
        PRIMARY KEY (app, process)
    );
    """,
    # --- migration 10: backing services (issue 16): each service, which apps it is bound to
    # (in binding order: the first of a kind gives DATABASE_URL/REDIS_URL), its last backup. A
    # binding names an app that may not be recorded yet: a push binds before its release phase ---
    """
    CREATE TABLE services (
        name            TEXT PRIMARY KEY,
        type            TEXT NOT NULL,
        memory_mib      INTEGER NOT NULL,
        created_at      TEXT NOT NULL,
        image           TEXT NOT NULL,
        last_backup     TEXT,
        last_backup_at  TEXT,
        backup_error    TEXT
    );
    CREATE TABLE service_bindings (
        service     TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
        app         TEXT NOT NULL,
        bound_at    TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        PRIMARY KEY (service, app)
    );
    CREATE INDEX service_bindings_by_app ON service_bindings (app, seq);
    """,
    # --- migration 11 (issue 18: log drains): each app's named drains ---
    """
    CREATE TABLE drains (
        app         TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        url         TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        origin      TEXT NOT NULL DEFAULT 'cli',
        PRIMARY KEY (app, name)
    );
    """,
)

# How the hosts table writes an app's default host: ``APP.<router/domain>`` for any domain.
DEFAULT_HOST = "{app}.@"

KEEP_RELEASES = 5

# Ids per ``IN (…)`` query: old SQLite builds allow only 999 parameters in one statement.
_IN_CHUNK = 500

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
                "INSERT OR REPLACE INTO droplets (id, app, size, staged_at, record_json, inputs_key) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, record.app, record.size, record.staged_at, json.dumps(to_wire(record)),
                 record.inputs_key))

    def droplet_staged_from(self, inputs_key: str) -> DropletRecord | None:
        """The newest droplet recorded with a staging-input key, or ``None`` (never for ``""``)."""
        if not inputs_key:
            return None
        with self._lock:
            row = self._conn.execute("SELECT record_json FROM droplets WHERE inputs_key = ? "
                                     "ORDER BY staged_at DESC, rowid DESC LIMIT 1", (inputs_key,)).fetchone()
        return from_wire(DropletRecord, json.loads(row[0])) if row else None

    def droplet(self, droplet_id: str) -> DropletRecord | None:
        """A droplet's record, or ``None``."""
        with self._lock:
            row = self._conn.execute("SELECT record_json FROM droplets WHERE id = ?",
                                     (droplet_id,)).fetchone()
        return from_wire(DropletRecord, json.loads(row[0])) if row else None

    def delete_droplet(self, droplet_id: str) -> None:
        """Forget a droplet's record."""
        with self._lock:
            self._conn.execute("DELETE FROM droplets WHERE id = ?", (droplet_id,))

    def droplets_by_id(self, droplet_ids: Iterable[str]) -> dict[str, DropletRecord]:
        """The records of these droplets by id, each read and decoded once; unknown ids are left out."""
        wanted = sorted(set(droplet_ids))
        rows: list[tuple[str, str]] = []
        with self._lock:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start:start + _IN_CHUNK]
                rows += self._conn.execute(
                    f"SELECT id, record_json FROM droplets WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk).fetchall()
        return {row[0]: from_wire(DropletRecord, json.loads(row[1])) for row in rows}

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

    # --- apps --------------------------------------------------------------------------------

    def put_app(self, app: AppRecord, *, domain: str | None = None) -> None:
        """Create or replace an app's desired state, claiming its host names in the same transaction.

        A new app claims its default host ``APP.<router/domain>``; each URL the record adds
        claims that host name, and each it drops is released. A claim another app holds is
        refused and nothing is written: the hosts table's primary key decides, so of two pushes
        claiming one host at once exactly one wins. URLs the app already had are not claimed
        again (``fence scale`` of an app never fails on its routes).

        Args:
            app: the app's desired state.
            domain: ``router/domain`` now. With it, a new URL ``OTHER.<domain>`` of an existing
                app ``OTHER`` is refused, and so is a new app ``NAME`` while another app has the
                URL ``NAME.<domain>``: the checks run inside the write transaction, which SQLite
                runs one at a time. ``None`` (records written by hand) leaves those two out.

        Raises:
            HostTaken: another app holds one of the host names.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT urls_json FROM apps WHERE name = ?", (app.name,)).fetchone()
                had = set(json.loads(row[0])) if row else set()
                self._conn.execute(
                    "INSERT INTO apps (name, created_at, instances, memory_mib, env_json, started, release, "
                    "health_timeout, urls_json, health_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET instances = excluded.instances, "
                    "memory_mib = excluded.memory_mib, env_json = excluded.env_json, "
                    "started = excluded.started, release = excluded.release, "
                    "health_timeout = excluded.health_timeout, urls_json = excluded.urls_json, "
                    "health_json = excluded.health_json",
                    (app.name, app.created_at, app.instances, app.memory_mib, json.dumps(dict(app.env)),
                     int(app.started), app.release, app.health_timeout, json.dumps(list(app.urls)),
                     json.dumps(to_wire(app.health)) if app.health is not None else None))
                self._put_processes(app)
                if row is None:
                    self._claim(DEFAULT_HOST.format(app=app.name), app.name, domain)
                for host in had - set(app.urls):
                    self._conn.execute("DELETE FROM hosts WHERE host = ? AND app = ?", (host, app.name))
                for host in dict.fromkeys(app.urls):
                    if host not in had:
                        self._claim(host, app.name, domain)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def check_hosts(self, name: str, urls: Iterable[str], *, domain: str) -> None:
        """Refuse early what ``put_app`` would refuse for these host names (nothing is written).

        Args:
            name: the app that would claim them (its default host too, if it does not exist).
            urls: its URLs.
            domain: ``router/domain`` now.

        Raises:
            HostTaken: another app holds one of them.
        """
        with self._lock:
            wanted = [] if self._holder(DEFAULT_HOST.format(app=name)) else [DEFAULT_HOST.format(app=name)]
            for host in (*wanted, *urls):
                taken = self._taken(host, name, domain)
                if taken is not None:
                    raise HostTaken(host=taken[0], holder=taken[1])

    def host_claims(self) -> dict[str, str]:
        """Every claimed host name with the app holding it (``APP.@``: an app's default host)."""
        with self._lock:
            return dict(self._conn.execute("SELECT host, app FROM hosts ORDER BY host").fetchall())

    def _claim(self, host: str, app: str, domain: str | None) -> None:
        """Claim a host name for ``app`` inside the caller's write transaction."""
        taken = self._taken(host, app, domain)
        if taken is not None:
            raise HostTaken(host=taken[0], holder=taken[1])
        try:
            self._conn.execute("INSERT INTO hosts (host, app) VALUES (?, ?)", (host, app))
        except sqlite3.IntegrityError:
            holder = self._holder(host)
            if holder != app:
                raise HostTaken(host=_shown(host, domain), holder=holder or "?") from None

    def _taken(self, host: str, app: str, domain: str | None) -> tuple[str, str] | None:
        """The host name (as users write it) and the other app holding it, or ``None``."""
        holder = self._holder(host)
        if holder is not None and holder != app:
            return _shown(host, domain), holder
        if domain is None:
            return None
        if host.endswith(".@"):  # a default host, against another app's URL of the same name
            full = f"{host[:-2]}.{domain}"
            holder = self._holder(full)
            return (full, holder) if holder is not None and holder != app else None
        label, dot, rest = host.partition(".")
        if dot and rest == domain:  # a URL in the router's domain, against that app's default host
            holder = self._holder(DEFAULT_HOST.format(app=label))
            return (host, holder) if holder is not None and holder != app else None
        return None

    def _holder(self, host: str) -> str | None:
        row = self._conn.execute("SELECT app FROM hosts WHERE host = ?", (host,)).fetchone()
        return str(row[0]) if row else None

    def app(self, name: str) -> AppRecord | None:
        """An app's desired state, or ``None``."""
        with self._lock:
            row = self._conn.execute(_APP_SELECT + " WHERE name = ?", (name,)).fetchone()
            processes = self._processes(name)
        return _app(row, processes.get(name, [])) if row else None

    def apps(self) -> list[AppRecord]:
        """Every app, by name."""
        with self._lock:
            rows = self._conn.execute(_APP_SELECT + " ORDER BY name").fetchall()
            processes = self._processes()
        return [_app(row, processes.get(row[0], [])) for row in rows]

    # --- process types (issue 14, P1) ---
    def _put_processes(self, app: AppRecord) -> None:
        """Replace the app's rows of ``app_processes`` (under the caller's lock)."""
        kinds = sorted((set(app.processes) | set(app.process_memory)) - {"web"})
        self._conn.execute("DELETE FROM app_processes WHERE app = ?", (app.name,))
        self._conn.executemany(
            "INSERT INTO app_processes (app, process, instances, memory_mib) VALUES (?, ?, ?, ?)",
            [(app.name, kind, int(app.processes.get(kind, 0)), app.process_memory.get(kind)) for kind in kinds])

    def _processes(self, app: str | None = None) -> dict[str, list[tuple[str, int, int | None]]]:
        """Every app's (or one app's) process rows: type, count, memory."""
        query, args = "SELECT app, process, instances, memory_mib FROM app_processes", ()
        if app is not None:
            query, args = query + " WHERE app = ?", (app,)
        found: dict[str, list[tuple[str, int, int | None]]] = {}
        for row in self._conn.execute(query + " ORDER BY app, process", args):
            found.setdefault(row[0], []).append((row[1], row[2], row[3]))
        return found
    # --- end process types ---

    def delete_app(self, name: str) -> list[str]:
        """Forget an app, its releases and its droplet records; returns the droplet ids it had."""
        with self._lock:
            droplets = [r[0] for r in self._conn.execute("SELECT id FROM droplets WHERE app = ?", (name,))]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM releases WHERE app = ?", (name,))
                self._conn.execute("DELETE FROM app_processes WHERE app = ?", (name,))
                self._conn.execute("DELETE FROM droplets WHERE app = ?", (name,))
                self._conn.execute("DELETE FROM hosts WHERE app = ?", (name,))
                self._conn.execute("DELETE FROM apps WHERE name = ?", (name,))
                self._conn.execute("DELETE FROM cron_runs WHERE app = ?", (name,))
                self._conn.execute("DELETE FROM drains WHERE app = ?", (name,))  # issue 18
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise
        return droplets

    def add_release(self, app: str, droplet: str, created_at: str, note: str) -> tuple[ReleaseRecord, list[str]]:
        """Record a new release and make it current; keep only the last ``KEEP_RELEASES``.

        Returns:
            The release, and the droplets of pruned releases that no kept release refers to.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                number = 1 + int(self._conn.execute(
                    "SELECT COALESCE(MAX(number), 0) FROM releases WHERE app = ?", (app,)).fetchone()[0])
                self._conn.execute("INSERT INTO releases (app, number, droplet, created_at, note) "
                                   "VALUES (?, ?, ?, ?, ?)", (app, number, droplet, created_at, note))
                self._conn.execute("UPDATE apps SET release = ? WHERE name = ?", (number, app))
                pruned = {r[0] for r in self._conn.execute(
                    "SELECT droplet FROM releases WHERE app = ? AND number <= ?", (app, number - KEEP_RELEASES))}
                self._conn.execute("DELETE FROM releases WHERE app = ? AND number <= ?",
                                   (app, number - KEEP_RELEASES))
                kept = {r[0] for r in self._conn.execute("SELECT droplet FROM releases WHERE app = ?", (app,))}
                dropped = sorted(pruned - kept)
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise
        return ReleaseRecord(app=app, number=number, droplet=droplet, created_at=created_at, note=note), dropped

    def releases(self, app: str) -> list[ReleaseRecord]:
        """An app's kept releases, newest first."""
        with self._lock:
            rows = self._conn.execute("SELECT app, number, droplet, created_at, note FROM releases "
                                      "WHERE app = ? ORDER BY number DESC", (app,)).fetchall()
        return [ReleaseRecord(app=r[0], number=r[1], droplet=r[2], created_at=r[3], note=r[4]) for r in rows]

    def release(self, app: str, number: int | None) -> ReleaseRecord | None:
        """One kept release of an app (``None`` when it is not kept, or ``number`` is ``None``)."""
        if number is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT app, number, droplet, created_at, note FROM releases "
                                     "WHERE app = ? AND number = ?", (app, number)).fetchone()
        return ReleaseRecord(app=row[0], number=row[1], droplet=row[2], created_at=row[3], note=row[4]) if row else None

    def releases_by_app(self) -> dict[str, list[ReleaseRecord]]:
        """Every app's kept releases, newest first, in one query (apps without any are left out)."""
        with self._lock:
            rows = self._conn.execute("SELECT app, number, droplet, created_at, note FROM releases "
                                      "ORDER BY app, number DESC").fetchall()
        releases: dict[str, list[ReleaseRecord]] = {}
        for r in rows:
            releases.setdefault(r[0], []).append(
                ReleaseRecord(app=r[0], number=r[1], droplet=r[2], created_at=r[3], note=r[4]))
        return releases

    # --- stacks ------------------------------------------------------------------------------

    def note_stack(self, image_id: str, ref: str, at: str) -> None:
        """Remember that this node ran a container on a stack image (garbage collection only
        ever removes stack images the node once used)."""
        if not image_id:
            return
        with self._lock:
            self._conn.execute(
                "INSERT INTO stacks_used (image_id, ref, first_used, last_used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (image_id) DO UPDATE SET ref = excluded.ref, last_used = excluded.last_used",
                (image_id, ref, at, at))

    def stacks_used(self) -> dict[str, str]:
        """Stack image ids this node has run containers on, with the reference last used."""
        with self._lock:
            rows = self._conn.execute("SELECT image_id, ref FROM stacks_used ORDER BY image_id").fetchall()
        return {row[0]: row[1] for row in rows}

    def forget_stack(self, image_id: str) -> None:
        """Forget a stack image (it was removed from the engine)."""
        with self._lock:
            self._conn.execute("DELETE FROM stacks_used WHERE image_id = ?", (image_id,))

    # --- cron runs (issue 14) -------------------------------------------------------------------

    def put_cron_run(self, app: str, entry: str, run: CronRun) -> None:
        """Record the last run of one cron entry (``CronEntry.key``), replacing the one before."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO cron_runs (app, entry, minute, started_at, finished_at, exit_code, "
                "duration, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (app, entry, run.minute, run.started_at, run.finished_at, run.exit_code, run.duration,
                 run.outcome))

    def cron_runs(self, app: str | None = None) -> dict[tuple[str, str], CronRun]:
        """The last run of each cron entry, keyed by (app, entry); only one app's when given."""
        query = ("SELECT app, entry, minute, started_at, finished_at, exit_code, duration, outcome "
                 "FROM cron_runs")
        args: tuple[str, ...] = ()
        if app is not None:
            query += " WHERE app = ?"
            args = (app,)
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        return {(r[0], r[1]): CronRun(minute=r[2], started_at=r[3], finished_at=r[4], exit_code=r[5],
                                      duration=r[6], outcome=r[7]) for r in rows}

    def interrupt_cron_runs(self) -> int:
        """Mark runs a dead daemon left ``running`` as ``interrupted``; returns how many."""
        with self._lock:
            return self._conn.execute("UPDATE cron_runs SET outcome = 'interrupted' "
                                      "WHERE outcome = 'running'").rowcount

    # --- log drains (issue 18) ---------------------------------------------------------------

    def put_drain(self, drain: DrainRecord) -> bool:
        """Add an app's drain, or replace the URL of its drain of that name.

        Returns:
            Whether the drain is new.

        Raises:
            AppNotFound: no such app.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._conn.execute("SELECT 1 FROM apps WHERE name = ?", (drain.app,)).fetchone() is None:
                    raise AppNotFound(app=drain.app)
                new = self._conn.execute("SELECT 1 FROM drains WHERE app = ? AND name = ?",
                                         (drain.app, drain.name)).fetchone() is None
                self._conn.execute(
                    "INSERT INTO drains (app, name, url, created_at, origin) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (app, name) DO UPDATE SET url = excluded.url, origin = excluded.origin",
                    (drain.app, drain.name, drain.url, drain.created_at, drain.origin))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return new

    def drains(self, app: str | None = None) -> list[DrainRecord]:
        """Drains by app and name (only one app's when given)."""
        query, args = "SELECT app, name, url, created_at, origin FROM drains", ()
        if app is not None:
            query, args = query + " WHERE app = ?", (app,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY app, name", args).fetchall()
        return [DrainRecord(app=r[0], name=r[1], url=r[2], created_at=r[3], origin=r[4]) for r in rows]

    def delete_drain(self, app: str, name: str) -> bool:
        """Remove an app's drain; returns whether it existed."""
        with self._lock:
            return self._conn.execute("DELETE FROM drains WHERE app = ? AND name = ?", (app, name)).rowcount > 0

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()


_APP_SELECT = ("SELECT name, instances, memory_mib, env_json, started, release, health_timeout, "
               "urls_json, created_at, health_json FROM apps")


def _app(row: tuple, processes: list[tuple[str, int, int | None]]) -> AppRecord:
    return AppRecord(name=row[0], instances=row[1], memory_mib=row[2], env=json.loads(row[3]),
                     started=bool(row[4]), release=row[5], health_timeout=row[6],
                     urls=tuple(json.loads(row[7])), created_at=row[8],
                     health=from_wire(HealthSettings, json.loads(row[9])) if row[9] else None,
                     processes={kind: count for kind, count, _ in processes},
                     process_memory={kind: mem for kind, _, mem in processes if mem is not None})


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _shown(host: str, domain: str | None) -> str:
    """A claim as users write it: ``APP.@`` is ``APP.<router/domain>``."""
    return f"{host[:-2]}.{domain or '<router/domain>'}" if host.endswith(".@") else host
