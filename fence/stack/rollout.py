"""Moves every app onto the configured stack image: restarted without restaging, or restaged, one instance at a time per app."""

from __future__ import annotations

import time
from typing import Callable, Protocol

from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import FenceError, ImageNotFound, RolloutFailed
from fence.image_apps import is_image_droplet
from fence.labels import short_id
from fence.models import AppRecord, AppRollout, AppView, RolloutProgress, RolloutReport
from fence.stack.resolve import stack_status
from fence.store import StateStore

LineCallback = Callable[[str], None]


class Roller(Protocol):
    """The instance manager's rollout controls (``fence.running.manager.InstanceManager``)."""

    def roll(self, app: str, *, image_id: str, surge: int = 1) -> None:
        """Start moving the app's serving instances onto ``image_id``."""

    def rollout_progress(self, app: str) -> RolloutProgress | None:
        """Where the app's rollout stands."""

    def end_rollout(self, app: str) -> None:
        """Forget the app's rollout."""

    def set_surge(self, app: str, surge: int | None) -> None:
        """Limit how many of the app's serving instances are replaced at once."""


class StackRollout:
    """Runs ``kato stack rollout``.

    Apps go one after the other, in name order; within an app one instance is replaced at a
    time, the new one healthy (and routed) before its old one stops. An app whose new instance
    fails stops there, its old instances serving; the next app goes on.

    Args:
        config: node config.
        backend: the engine.
        store: desired state.
        manager: the instance manager.
        restage: restages one app and waits for it (``NodeService.restage``).
        poll: seconds between looks at an app's progress.
    """

    def __init__(self, *, config: ConfigStore, backend: ContainerBackend, store: StateStore, manager: Roller,
                 restage: Callable[[str, LineCallback], AppView], poll: float = 0.2) -> None:
        self._config = config
        self._backend = backend
        self._store = store
        self._manager = manager
        self._restage = restage
        self._poll = poll

    def run(self, *, restage: bool, on_line: LineCallback) -> RolloutReport:
        """Roll every app onto the stack new containers start from now.

        Args:
            restage: restage each app from its kept source instead of restarting its droplet.
            on_line: receives progress lines and the summary.

        Returns:
            What happened to each app.

        Raises:
            ImageNotFound: no configured stack (nor fallback) is on the engine.
            RolloutFailed: some apps could not move (after the summary was shown).
        """
        started = time.monotonic()
        status = stack_status(config=self._config, backend=self._backend)
        if status.in_use is None or status.image_id is None:
            raise ImageNotFound(image=status.configured)
        apps = self._store.apps()
        how = "restaging each app" if restage else "restarting each app's droplet (no restaging)"
        fallback = f" (fallback for missing {status.configured})" if status.fallback else ""
        on_line(f"-----> Rolling {len(apps)} app{'s' if len(apps) != 1 else ''} onto {status.in_use}{fallback} "
                f"({short_id(status.image_id)}), {how}, one instance at a time")
        results = [self._one(app, status.image_id, restage, on_line) for app in apps]
        report = RolloutReport(image=status.in_use, image_id=status.image_id, restage=restage,
                               apps=tuple(results), seconds=round(time.monotonic() - started, 1))
        for line in summary(report):
            on_line(line)
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            raise RolloutFailed(image=status.in_use, failed=len(failed), total=len(results),
                                detail="; ".join(f"{r.app}: {r.why}" for r in failed))
        return report

    def _one(self, app: AppRecord, image_id: str, restage: bool, on_line: LineCallback) -> AppRollout:
        if app.release is None:
            on_line(f"       {app.name}: skipped (never staged)")
            return AppRollout(app=app.name, outcome="skipped", why="never staged")
        if not app.started:
            on_line(f"       {app.name}: skipped (stopped; it starts on the new stack)")
            return AppRollout(app=app.name, outcome="skipped", why="stopped")
        if restage:
            return self._restaged(app, on_line)
        release = self._store.release(app.name, app.release)
        droplet = self._store.droplet(release.droplet) if release is not None else None
        if droplet is not None and is_image_droplet(droplet.builder):
            # An image app runs its own image: its stack is its FROM, which only a rebuild changes.
            if droplet.base_image_id == image_id:
                on_line(f"-----> {app.name}: already on the new stack (an image app built FROM it)")
                return AppRollout(app=app.name, outcome="already")
            why = (f"an image app whose base is {droplet.base_image or 'its own image'}, not the stack: "
                   f"rebuild it with `fence restage {app.name}`")
            on_line(f"       {app.name}: skipped ({why})")
            return AppRollout(app=app.name, outcome="skipped", why=why)
        return self._moved(app, image_id, on_line)

    def _restaged(self, app: AppRecord, on_line: LineCallback) -> AppRollout:
        on_line(f"-----> {app.name}: restaging")
        self._manager.set_surge(app.name, 1)
        try:
            view = self._restage(app.name, lambda line: on_line(f"       {app.name}| {line}"))
        except FenceError as exc:
            on_line(f"       {app.name}: FAILED: {exc.message}")
            return AppRollout(app=app.name, outcome="failed", why=exc.message)
        finally:
            self._manager.set_surge(app.name, None)
        return AppRollout(app=app.name, outcome="restaged", replaced=view.running)

    def _moved(self, app: AppRecord, image_id: str, on_line: LineCallback) -> AppRollout:
        health = app.health_timeout or int(self._config.fence("health/timeout"))
        limit = (health + 60) * max(1, sum(app.counts().values()))  # every process type's instances
        deadline = time.monotonic() + limit
        self._manager.roll(app.name, image_id=image_id, surge=1)
        shown = 0
        try:
            while True:
                progress = self._manager.rollout_progress(app.name)
                if progress is None:  # the app was deleted meanwhile
                    return AppRollout(app=app.name, outcome="skipped", why="deleted during the rollout")
                for event in progress.events[shown:]:
                    on_line(f"       {app.name}: {event}")
                shown = len(progress.events)
                if progress.failed is not None:
                    return AppRollout(app=app.name, outcome="failed", replaced=progress.replaced,
                                      why=progress.failed)
                if progress.done:
                    outcome = "moved" if progress.replaced else "already"
                    on_line(f"-----> {app.name}: " + (f"{progress.replaced} instance"
                            f"{'s' if progress.replaced != 1 else ''} on the new stack" if progress.replaced
                            else "already on the new stack"))
                    return AppRollout(app=app.name, outcome=outcome, replaced=progress.replaced)
                if time.monotonic() > deadline:
                    return AppRollout(app=app.name, outcome="failed", replaced=progress.replaced,
                                      why=f"not done within {limit} s")
                time.sleep(self._poll)
        finally:
            self._manager.end_rollout(app.name)


def summary(report: RolloutReport) -> list[str]:
    """The summary lines of a rollout."""
    counts: dict[str, int] = {}
    for result in report.apps:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    replaced = sum(r.replaced for r in report.apps)
    parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no apps"
    lines = [f"-----> Rollout onto {report.image} ({short_id(report.image_id)}) finished in "
             f"{report.seconds:.0f} s: {parts}; {replaced} instance{'s' if replaced != 1 else ''} "
             f"{'restaged' if report.restage else 'replaced'}"]
    lines += [f"       {r.app}: FAILED: {r.why} (its old instances keep serving)"
              for r in report.apps if r.outcome == "failed"]
    lines += [f"       {r.app}: skipped: {r.why}" for r in report.apps
              if r.outcome == "skipped" and r.why.startswith("an image app")]
    return lines
