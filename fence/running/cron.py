"""The cron scheduler: runs each app's stackato.yml ``cron:`` entries on schedule as one-off task containers."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from croniter import croniter

from fence import labels
from fence.backend.base import Container
from fence.config import ConfigStore
from fence.errors import FenceError, ProcessTimeout
from fence.home import NodeHome
from fence.logfile import LogTap
from fence.models import AppRecord, CronEntry, CronRun, CronView, DropletRecord
from fence.running.starter import InstanceStarter, Launch
from fence.store import StateStore

log = logging.getLogger("fence.cron")

# A job's container is started this long before its minute, so that its command is exec'd on
# the minute itself: a container start on a busy engine takes seconds, the bound is 2 s.
PREPARE_AHEAD = 10.0
TICK = 0.25
# The pass interval while no started app has a cron entry and no job runs: each pass reads the
# store, 4 times a second would cost a node without cron entries about 0.25 % of a core. An
# entry pushed meanwhile is first looked at up to this late.
IDLE_TICK = 1.0
MAX_LOG_BYTES = 1024 * 1024  # per app; the file before is kept once as .1
MAX_LOG_LINE = 4096

Key = tuple[str, str]  # (app, CronEntry.key)

FIRE, PREPARE, SKIP = "fire", "prepare", "skip"


def minute_start(now: float) -> dt.datetime:
    """The UTC minute ``now`` (epoch seconds) falls in."""
    return dt.datetime.fromtimestamp(now - now % 60, tz=dt.timezone.utc)


def is_due(entry: CronEntry, minute: dt.datetime) -> bool:
    """Whether the entry's schedule names this minute (UTC)."""
    return bool(croniter.match(entry.schedule, minute))


def next_run(entry: CronEntry, now: float) -> dt.datetime:
    """The first minute after ``now`` the entry runs at (UTC)."""
    start = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc)
    return croniter(entry.schedule, start).get_next(dt.datetime)


@dataclass(frozen=True)
class Decision:
    """What the scheduler does about one entry on one pass.

    Attributes:
        app: the app's name.
        entry: the cron entry.
        minute: the minute it is for.
        action: ``prepare`` (start its container for the coming minute), ``fire`` (run it now,
            its minute has begun and it was not prepared) or ``skip`` (its run before still runs).
    """

    app: str
    entry: CronEntry
    minute: dt.datetime
    action: str


def decide(*, entries: Mapping[str, tuple[CronEntry, ...]], now: float, last: Mapping[Key, CronRun],
           active: Mapping[Key, dt.datetime], skipped: Mapping[Key, dt.datetime]) -> list[Decision]:
    """The scheduler's decisions for one pass (no I/O: the unit tests drive it with a fake clock).

    Only the current minute and the coming one are ever looked at: minutes missed while the
    daemon was down are skipped, not caught up. An entry whose last run (kept in the store) is
    for the current minute is not run again, so a restarted daemon never runs a minute twice.

    Args:
        entries: the cron entries of every started app.
        now: epoch seconds.
        last: the last run of each entry, from the store.
        active: the minute of each entry's job that is being prepared or runs.
        skipped: the last minute each entry was skipped for (logged once per minute).
    """
    current = minute_start(now)
    coming = current + dt.timedelta(minutes=1)
    iso = current.isoformat()
    found = []
    for app, app_entries in entries.items():
        for entry in app_entries:
            key = (app, entry.key)
            job = active.get(key)
            ran = last.get(key)
            due_now = is_due(entry, current) and (ran is None or ran.minute != iso)
            if due_now and job is None and skipped.get(key) != current:
                # Not prepared: the daemon just started, or the run before ended just before this
                # minute. A minute already skipped (its run before still ran then) stays skipped
                # when that run ends within it: a long job never starts late behind itself.
                found.append(Decision(app=app, entry=entry, minute=current, action=FIRE))
            elif due_now and job is not None and job < current:
                if skipped.get(key) != current:
                    found.append(Decision(app=app, entry=entry, minute=current, action=SKIP))
            elif job is None and now >= coming.timestamp() - PREPARE_AHEAD and is_due(entry, coming):
                found.append(Decision(app=app, entry=entry, minute=coming, action=PREPARE))
    return found


@dataclass
class _Job:
    """One run of an entry, from its container's start to its end."""

    app: AppRecord
    release: int
    droplet: DropletRecord
    entry: CronEntry
    minute: dt.datetime
    cancelled: threading.Event = field(default_factory=threading.Event)
    container: Container | None = None
    thread: threading.Thread | None = None


class CronScheduler:
    """Runs every started app's cron entries (from its current droplet) in task containers.

    Args:
        store: desired state and the last run of each entry.
        config: node config (``cron/timeout``).
        starter: builds the task containers (the same machinery as ``fence run``).
        home: FENCE_HOME (each app's cron log).
        clock: epoch seconds (a fake in tests).
    """

    def __init__(self, *, store: StateStore, config: ConfigStore, starter: InstanceStarter, home: NodeHome,
                 clock: Callable[[], float] = time.time, drains: LogTap | None = None) -> None:
        self._store = store
        self._drains = drains  # issue 18: cron output goes to the app's drains too
        self._config = config
        self._starter = starter
        self._home = home
        self._clock = clock
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._jobs: dict[Key, _Job] = {}
        self._skipped: dict[Key, dt.datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = False  # the last pass found no entry and no job

    # --- running ---------------------------------------------------------------------------

    def run_in_background(self) -> None:
        """Start the scheduler thread (runs a dead daemon left ``running`` are marked ``interrupted``)."""
        interrupted = self._store.interrupt_cron_runs()
        if interrupted:
            log.info("%d cron run(s) were interrupted by the daemon's end", interrupted)
        self._thread = threading.Thread(target=self._loop, name="cron", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop scheduling and end the running jobs (their containers are destroyed)."""
        self._stop.set()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self._cancel(job)
        if self._thread is not None:
            self._thread.join(timeout=5)
        for job in jobs:  # each records how its run ended before the store closes
            if job.thread is not None:
                job.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(IDLE_TICK if self._idle else TICK):
            try:
                self.tick()
            except Exception:  # a bug (or a store hiccup) must not end the schedule
                log.exception("cron pass failed")

    def tick(self) -> list[Decision]:
        """One pass: end jobs of apps that stopped, then act on ``decide``'s decisions."""
        now = self._clock()
        apps = {app.name: app for app in self._store.apps() if app.started and app.release is not None}
        runnable: dict[str, tuple[AppRecord, int, DropletRecord]] = {}
        for app in apps.values():
            release = self._store.release(app.name, app.release)
            droplet = self._store.droplet(release.droplet) if release else None
            if release is not None and droplet is not None and droplet.cron:
                runnable[app.name] = (app, release.number, droplet)
        with self._lock:
            for key, job in list(self._jobs.items()):
                if key[0] not in runnable or job.entry not in runnable[key[0]][2].cron:
                    self._cancel(job)  # the app stopped, went away, or its new release has no such entry
            active = {key: job.minute for key, job in self._jobs.items()}
            self._idle = not runnable and not active
        decisions = decide(entries={name: r[2].cron for name, r in runnable.items()}, now=now,
                           last=self._store.cron_runs(), active=active, skipped=self._skipped)
        for decision in decisions:
            key = (decision.app, decision.entry.key)
            if decision.action == SKIP:
                self._skipped[key] = decision.minute
                line = (f"cron `{decision.entry.command}` of {decision.app} skipped at "
                        f"{decision.minute:%H:%M}: its run before still runs")
                log.info("%s", line)
                self._log(decision.app, f"----- {line}")
                continue
            app, release, droplet = runnable[decision.app]
            job = _Job(app=app, release=release, droplet=droplet, entry=decision.entry, minute=decision.minute)
            job.thread = threading.Thread(target=self._run, args=(key, job), name=f"cron-{decision.app}", daemon=True)
            with self._lock:
                self._jobs[key] = job
            job.thread.start()
        return decisions

    def _run(self, key: Key, job: _Job) -> None:
        launch = Launch(app=job.app, release=job.release, droplet=job.droplet, index=0, role=labels.ROLE_TASK,
                        command_argv=("/bin/bash", "-c", job.entry.command))
        name, command = job.app.name, job.entry.command
        try:
            try:
                job.container = self._starter.launch(launch)
            except FenceError as exc:
                self._finish(job, started=self._clock(), exit_code=None, outcome="failed")
                self._log(name, f"----- `{command}` could not start: {exc.message}")
                log.warning("cron `%s` of %s could not start: %s", command, name, exc.message)
                return
            # Wait for the minute in short steps, reading the clock each time (tests drive a fake one).
            while not job.cancelled.is_set() and (left := job.minute.timestamp() - self._clock()) > 0:
                if self._stop.wait(min(left, 0.05)):
                    return
            if job.cancelled.is_set():
                return
            started = self._clock()
            self._store.put_cron_run(name, job.entry.key, CronRun(minute=job.minute.isoformat(),
                                                                  started_at=_iso(started)))
            self._log(name, f"----- {job.minute:%Y-%m-%d %H:%M} `{command}` started (release {job.release})")
            timeout = int(self._config.fence("cron/timeout"))
            spec = self._starter.task_process(launch, timeout=timeout)
            try:
                result = job.container.run(spec, on_output=lambda line: self._log(name, line))
            except ProcessTimeout:
                self._finish(job, started=started, exit_code=None, outcome="timed out")
                self._log(name, f"----- `{command}` timed out after {timeout} s (cron/timeout) and was killed")
                return
            except FenceError as exc:
                outcome = "stopped" if job.cancelled.is_set() else "failed"
                self._finish(job, started=started, exit_code=None, outcome=outcome)
                self._log(name, f"----- `{command}` {outcome}: {exc.message}")
                return
            self._finish(job, started=started, exit_code=result.exit_code, outcome="exited")
            self._log(name, f"----- `{command}` exited {result.exit_code} after {self._clock() - started:.1f} s")
        except Exception:
            log.exception("cron job `%s` of %s failed", command, name)
        finally:
            with self._lock:
                if self._jobs.get(key) is job:
                    del self._jobs[key]
            if job.container is not None:
                _destroy(job.container)

    def _finish(self, job: _Job, *, started: float, exit_code: int | None, outcome: str) -> None:
        if self._store.app(job.app.name) is None:
            return  # deleted meanwhile: its runs went with it
        end = self._clock()
        self._store.put_cron_run(job.app.name, job.entry.key, CronRun(
            minute=job.minute.isoformat(), started_at=_iso(started), finished_at=_iso(end), exit_code=exit_code,
            duration=round(end - started, 3), outcome=outcome))

    def _cancel(self, job: _Job) -> None:
        job.cancelled.set()
        if job.container is not None:
            _destroy(job.container)

    # --- seeing it -------------------------------------------------------------------------

    def views(self, app: AppRecord) -> list[CronView]:
        """The app's cron entries (of its current droplet) with next and last runs."""
        release = self._store.release(app.name, app.release)
        droplet = self._store.droplet(release.droplet) if release else None
        if droplet is None:
            return []
        now = self._clock()
        runs = self._store.cron_runs(app.name)
        with self._lock:
            running = {key for key, job in self._jobs.items() if job.container is not None
                       and job.minute.timestamp() <= now}
        return [CronView(schedule=e.schedule, command=e.command,
                         next_run=next_run(e, now).isoformat() if app.started else None,
                         last_run=runs.get((app.name, e.key)), running=(app.name, e.key) in running)
                for e in droplet.cron]

    def log_lines(self, app: str, *, tail: int) -> list[str]:
        """The last ``tail`` lines of the app's cron log, each prefixed ``[cron]``."""
        host_log = self._home.host_app_cron_log(app)
        lines: list[str] = []
        for host_file in (host_log.with_name(host_log.name + ".1"), host_log):
            lines.extend(_read_lines(host_file))
        return [f"[cron] {line}" for line in lines[-tail:]] if tail > 0 else []

    def _log(self, app: str, line: str) -> None:
        host_log = self._home.host_app_cron_log(app)
        text = line if len(line) <= MAX_LOG_LINE else line[:MAX_LOG_LINE] + " [line cut]"
        if self._drains is not None:
            self._drains.tap(app=app, process="cron")(text)
        with self._log_lock:
            try:
                host_log.parent.mkdir(parents=True, exist_ok=True)
                if host_log.exists() and host_log.stat().st_size > MAX_LOG_BYTES:
                    host_log.replace(host_log.with_name(host_log.name + ".1"))
                with host_log.open("a", encoding="utf-8", errors="replace") as handle:
                    handle.write(text.replace("\n", " ") + "\n")
            except OSError as exc:  # a full disk must not end the job
                log.warning("cannot write the cron log of %s: %s", app, exc)


def _read_lines(host_file: Path) -> Iterator[str]:
    try:
        with host_file.open(encoding="utf-8", errors="replace") as handle:
            yield from (line.rstrip("\n") for line in handle)
    except FileNotFoundError:
        return


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def _destroy(container: Container) -> None:
    try:
        container.destroy()
    except FenceError:  # already gone
        pass
