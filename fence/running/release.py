"""The release phase: a droplet's ``release:`` command, run once in a one-off container before its release starts."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from pathlib import Path
from typing import Callable, Iterator

from fence.config import ConfigStore
from fence.errors import AppNotFound, ProcessTimeout, ReleaseFailed
from fence.home import NodeHome
from fence.logfile import LogFile, LogTap
from fence.models import AppRecord, DropletRecord
from fence.rules import check_app_name
from fence.running.tasks import TaskRunner
from fence.store import StateStore

log = logging.getLogger("fence.release")

LineCallback = Callable[[str], None]
RELEASE_TYPE = "release"  # the process type Heroku names its release phase by
LOG_PREFIX = "[release]"
KEEP_LOGS = 10  # runs whose output is kept per app (failed runs included)
MAX_LOG_BYTES = 16 * 1024 * 1024  # a chatty release command must not fill the node's disk
_CUT = "fence: release log cut here (over 16 MiB); the push still shows every line"


class ReleasePhase:
    """Runs an app's release command from a new droplet before that release exists.

    The command runs through the same machinery as ``fence run`` (a hardened container from
    the droplet's image, the app's env, the app's network, destroyed on every path); its output
    goes to the push and to a kept log (``NodeHome.host_release_log``).

    Args:
        tasks: runs the one-off container.
        config: node config (``release/timeout``).
        store: desired state (the number the new release will get).
        home: FENCE_HOME (the kept logs).
    """

    def __init__(self, *, tasks: TaskRunner, config: ConfigStore, store: StateStore, home: NodeHome,
                 drains: LogTap | None = None) -> None:
        self._tasks = tasks
        self._drains = drains  # issue 18: release-phase output goes to the app's drains too
        self._config = config
        self._store = store
        self._home = home

    def run(self, app: AppRecord, droplet: DropletRecord, *, on_line: LineCallback) -> None:
        """Run the droplet's release command, if it has one; return only when it exited 0.

        Args:
            app: the app's desired state as the new release will have it (env, memory); its
                ``release`` is the one serving now (named in the error).
            droplet: the new release's droplet.
            on_line: receives the heading and the command's output (indented).

        Raises:
            ReleaseFailed: the command exited non-zero or ran past ``release/timeout``.
            FenceError: the container could not start (the deploy is aborted all the same).
        """
        command = (droplet.process_types.get(RELEASE_TYPE) or "").strip()
        if not command:
            return
        timeout = int(self._config.fence("release/timeout"))
        number = self._upcoming(app.name)
        on_line(f"-----> Running release command: {command}")
        began = time.monotonic()
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        host_log = self._home.host_release_log(app.name, f"{stamp}-r{number}-{secrets.token_hex(3)}")
        tap = self._drains.tap(app=app.name, process=RELEASE_TYPE, release=number, fresh=True) if self._drains else None
        with LogFile(host_log, max_bytes=MAX_LOG_BYTES, cut_line=_CUT, tap=tap) as keep:
            keep(f"fence: release command of release {number}: {command}")

            def passed(line: str) -> None:
                keep(line)
                on_line(f"       {line}")
            try:
                code = self._tasks.run(app, number, droplet, ("bash", "-c", command), on_line=passed,
                                       task_id=f"release-{app.name}-{number}", timeout=timeout)
            except ProcessTimeout:
                keep(f"fence: killed after {timeout} s (release/timeout)")
                code = None
            else:
                keep(f"fence: exited {code}")
        self._prune(app.name)
        seconds = time.monotonic() - began
        log.info("release command ended", extra={"app": app.name, "release": number, "exit_code": code,
                                                  "seconds": round(seconds, 1)})
        if code == 0:
            on_line(f"-----> Release command finished in {seconds:.1f} s")
            return
        outcome = f"exited {code}" if code is not None else \
            f"did not finish within {timeout} s (release/timeout) and was killed"
        kept = f"; release {app.release} keeps serving" if app.release is not None and app.started else ""
        raise ReleaseFailed(command=command, app=app.name, outcome=outcome, release=number, kept=kept)

    def last_log(self, app: str) -> Iterator[str]:
        """The lines of the app's last release-phase run, each prefixed ``[release]``.

        Raises:
            InvalidName: a malformed app name.
            AppNotFound: the app's release command never ran.
        """
        runs = self._runs(check_app_name(app))
        if not runs:
            raise AppNotFound(app=f"{app} (no release command has run for it)")
        host_file = runs[-1]

        def lines() -> Iterator[str]:
            with host_file.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    yield f"{LOG_PREFIX} {line.rstrip(chr(10))}"
        return lines()

    def _upcoming(self, app: str) -> int:
        """The number the app's next release gets (the store numbers releases 1, 2, … per app)."""
        releases = self._store.releases(app)
        return releases[0].number + 1 if releases else 1

    def _runs(self, app: str) -> list[Path]:
        host_dir = self._home.host_app_release_logs(app)
        return sorted(host_dir.glob("*.log")) if host_dir.is_dir() else []  # names start with a UTC stamp

    def _prune(self, app: str) -> None:
        for host_old in self._runs(app)[:-KEEP_LOGS]:
            host_old.unlink(missing_ok=True)
