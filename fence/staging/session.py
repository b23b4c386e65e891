"""A staging session: one staging from its source to a recorded droplet whose source is kept."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Protocol

from fence.config import ConfigStore
from fence.errors import AppNotFound
from fence.home import NodeHome
from fence.kept_sources import KeptSources
from fence.layout import AppUser
from fence.logfile import LogFile, LogTap
from fence.models import AppRecord, DropletRecord, Manifest, PreparedSource, ReleaseRecord, SourceLimits
from fence.reaper import ContainerReaper
from fence.staging.queue import StagingSlots
from fence.staging.gitfetch import FetchPolicy
from fence.staging.sources import prepare_source
from fence.rules import check_app_name
from fence.staging.stager import StageRequest, app_name
from fence.store import StateStore

LineCallback = Callable[[str], None]
log = logging.getLogger("fence.staging")


@dataclass(frozen=True)
class StageOrder:
    """A staging as the API received it.

    Attributes:
        origin: an uploaded archive's host path, or a git URL.
        app: the app name given by the developer.
        fallback_name: a name to use when neither ``app`` nor the manifest gives one.
        buildpacks: buildpack specs given by the developer.
        env: env variables given by the developer.
        force: stage even when the staging inputs are unchanged (no droplet reuse).
        packed_folder: the upload is a folder the client packed: staged as it is (never
            unwrapped like an archive of one folder).
        builder: ``--builder``, if given (issue 15).
        image: ``--image``: an image on the engine to deploy (no build).
    """

    origin: str
    app: str | None = None
    fallback_name: str | None = None
    buildpacks: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    force: bool = False
    packed_folder: bool = False
    builder: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class Staged:
    """What a staging made.

    Attributes:
        droplet: the recorded droplet (an earlier one, when the staging inputs were unchanged).
        manifest: the manifest of the source it was staged from (a push deploys by it).
    """

    droplet: DropletRecord
    manifest: Manifest


class Stages(Protocol):
    """The staging containers as the session uses them (``fence.staging.stager.Stager``)."""

    @property
    def reaper(self) -> ContainerReaper:
        """What removes finished staging containers in the background."""

    def stage(self, request: StageRequest, *, on_line: LineCallback, staging_id: str | None = None,
              reusable: Callable[[DropletRecord], bool] | None = None,
              cancelled: Callable[[], bool] = lambda: False) -> DropletRecord:
        """Stage in a fresh container (or reuse a droplet staged from the same inputs); a git
        buildpack's clone is killed once ``cancelled()`` says so."""

    def cancel(self, staging_id: str) -> bool:
        """Destroy a running staging's container; returns whether it was running."""

    def cancel_all(self) -> int:
        """Cancel every running staging; returns how many."""

    def wait_removals(self, timeout: float = 60.0) -> None:
        """Wait until finished stagings' containers are removed."""


class StagingSession:
    """Owns every staging of the node: its source, slot, log file, cancellation and kept source.

    Each staging's scratch folder ``work/ID`` holds its source while it runs and is removed on
    every path; its log also goes to ``FENCE_HOME/logs/staging/APP/ID.log``; at most
    ``staging/concurrency`` run at once. Work that must not lose its droplet to a concurrent
    garbage collection holds ``in_flight()`` (the collector asks ``busy_since``).

    Args:
        config: node config (read at every staging).
        stager: runs the staging containers.
        store: where stacks used are noted.
        sources: where the sources of droplets are kept (for ``fence restage``).
        home: the node's FENCE_HOME map (scratch folders, staging logs).
        app_user: decides the uid that owns the checked source (as the stager's containers see it).
    """

    def __init__(self, *, config: ConfigStore, stager: Stages, store: StateStore, sources: KeptSources,
                 home: NodeHome, app_user: AppUser, drains: LogTap | None = None) -> None:
        self._config = config
        self._drains = drains  # issue 18: staging lines go to the app's drains too
        self._stager = stager
        self._store = store
        self.sources = sources
        self._home = home
        self.app_user = app_user
        self._slots = StagingSlots(limit=lambda: int(config.fence("staging/concurrency")),
                                   draining=lambda: stager.reaper.pending)
        stager.reaper.on_removed(self._slots.notify)
        # Checking sources takes places of its own (so N hostile uploads cannot multiply memory).
        self._preparing = StagingSlots.for_sources(limit=lambda: int(config.fence("staging/concurrency")))
        self._cancelled: set[str] = set()
        self._busy: dict[object, float] = {}  # stagings and deploys in flight → wall-clock start
        self._busy_lock = threading.Lock()

    def source_limits(self) -> SourceLimits:
        """Upload limits from config (staging/max_upload, max_files, max_depth, max_ignore_…)."""
        return SourceLimits(max_bytes=int(self._config.fence("staging/max_upload")) * 1024 * 1024,
                            max_files=int(self._config.fence("staging/max_files")),
                            max_depth=int(self._config.fence("staging/max_depth")),
                            max_ignore_patterns=int(self._config.fence("staging/max_ignore_patterns")),
                            max_ignore_pattern_length=int(self._config.fence("staging/max_ignore_pattern_length")))

    def new_workdir(self, staging_id: str) -> Path:
        """A fresh scratch folder for one staging (removed when the staging ends)."""
        host_dir = self._home.host_staging_work(staging_id)
        host_dir.mkdir(parents=True, exist_ok=False)
        return host_dir

    def stage(self, order: StageOrder, *, staging_id: str, on_line: LineCallback) -> Staged:
        """Check the source, wait for a staging slot, stage, record the droplet and keep its source.

        Unless ``order.force``, a droplet staged from the same inputs is reused when it and its
        kept source are still there (see ``Stager.stage``).

        Raises:
            FenceError: any staging failure (see ``Stager.stage``), or a refused source.
        """
        host_work = self._home.host_staging_work(staging_id)
        host_work.mkdir(parents=True, exist_ok=True)
        try:
            uid = self.app_user.uid()
            on_line("-----> Checking the app source")
            cancelled = lambda: staging_id in self._cancelled  # noqa: E731
            # A local origin only from the admin's folders, or the upload in this staging's own one.
            policy = FetchPolicy.from_config(self._config, extra_roots=(host_work,), cancelled=cancelled)
            with self._preparing.slot(on_line=on_line, cancelled=cancelled):
                source = prepare_source(order.origin, host_workdir=host_work, limits=self.source_limits(),
                                        uid=uid, gid=uid, policy=policy, packed_folder=order.packed_folder)
            for warning in (*source.warnings, *source.manifest.warnings):
                on_line(f"       warning: {warning}")
            request = StageRequest(source=source, app=order.app or source.manifest.name or order.fallback_name,
                                   buildpacks=order.buildpacks, env=order.env, force=order.force,
                                   builder=order.builder, image=order.image)
            with self.in_flight():
                droplet = self._run(request, staging_id=staging_id, keep_buildpacks=order.buildpacks,
                                    on_line=on_line)
            return Staged(droplet=droplet, manifest=source.manifest)
        finally:
            self._end(staging_id)

    def restage(self, app: AppRecord, release: ReleaseRecord, *, force: bool, on_line: LineCallback) -> DropletRecord:
        """Stage the app again from the kept source of ``release``'s droplet, with the app's env
        and the buildpacks that droplet was staged with.

        Raises:
            SourceNotKept: the droplet was staged before fence kept sources.
            FenceError: any staging failure.
        """
        staging_id = uuid.uuid4().hex[:12]
        try:
            kept = self.sources.load(app=app.name, droplet=release.droplet,
                                     host_workdir=self._home.host_staging_work(staging_id))
            on_line(f"-----> Restaging {app.name} from the source of release {release.number} "
                    f"(droplet {release.droplet[:12]})")
            before = self._store.droplet(release.droplet)
            pushed = before.image_ref if before is not None and before.builder == "image" else None
            request = StageRequest(source=kept.source, app=app.name, buildpacks=kept.buildpacks,
                                   env=dict(app.env), force=force, image=pushed,
                                   builder=before.builder if before is not None and before.builder != "image" else None)
            return self._run(request, staging_id=staging_id, keep_buildpacks=kept.buildpacks, on_line=on_line)
        finally:
            self._end(staging_id)

    def last_log(self, app: str) -> Iterator[str]:
        """The lines of the app's last staging log.

        Raises:
            InvalidName: a malformed app name.
            AppNotFound: no staging log for it.
        """
        host_dir = self._home.host_app_staging_logs(check_app_name(app))
        logs = sorted(host_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if host_dir.is_dir() else []
        if not logs:
            raise AppNotFound(app=app)
        return _file_lines(logs[-1])

    def cancel(self, staging_id: str) -> None:
        """Abort a staging (the client went away): a queued one stops waiting, a running one's
        container is destroyed."""
        self._cancelled.add(staging_id)
        self._stager.cancel(staging_id)

    def close(self) -> None:
        """Cancel running stagings and wait until their containers are removed (daemon stop)."""
        self._stager.cancel_all()
        self._stager.wait_removals()

    def clear_scratch(self) -> list[str]:
        """Remove every scratch folder (after an unclean stop); returns one line for each."""
        removed = []
        if self._home.host_work.is_dir():
            for host_dir in self._home.host_work.iterdir():
                shutil.rmtree(host_dir, ignore_errors=True)
                removed.append(f"scratch folder {host_dir.name}")
        return removed

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Mark work in flight for the block: garbage collection spares what is newer than it."""
        token = object()
        with self._busy_lock:
            self._busy[token] = time.time()
        try:
            yield
        finally:
            with self._busy_lock:
                del self._busy[token]

    def busy_since(self) -> float | None:
        """The wall-clock start of the oldest work in flight, or ``None``."""
        with self._busy_lock:
            return min(self._busy.values(), default=None)

    def _run(self, request: StageRequest, *, staging_id: str, keep_buildpacks: tuple[str, ...],
             on_line: LineCallback) -> DropletRecord:
        """Stage in a slot with the log teed to its file; note the stack and keep the source."""
        tap = self._drains.tap(app=app_name(request), process="staging", fresh=True) if self._drains is not None else None
        with LogFile(self._home.host_staging_log(app_name(request), staging_id), on_line, tap=tap) as logged:
            with self._slots.slot(on_line=logged, cancelled=lambda: staging_id in self._cancelled):
                droplet = self._stager.stage(request, on_line=logged, staging_id=staging_id,
                                             reusable=self._source_kept,
                                             cancelled=lambda: staging_id in self._cancelled)
        if droplet.builder != "image":  # a pushed image is no stack
            self._store.note_stack(droplet.stack_image_id, droplet.stack_image, droplet.staged_at)
        self._keep_source(droplet, request.source, keep_buildpacks)
        return droplet

    def _end(self, staging_id: str) -> None:
        self._cancelled.discard(staging_id)
        shutil.rmtree(self._home.host_staging_work(staging_id), ignore_errors=True)

    def _source_kept(self, droplet: DropletRecord) -> bool:
        """Whether a droplet's source is still kept (a reused droplet must stay restageable);
        touching it keeps a concurrent garbage collection off it."""
        return self.sources.touch(app=droplet.app, droplet=droplet.id)

    def _keep_source(self, droplet: DropletRecord, source: PreparedSource, buildpacks: tuple[str, ...]) -> None:
        """Keep what the droplet was staged from (for ``fence restage``; a reused droplet's is
        already kept), and drop the app's kept sources of droplets no kept release runs."""
        try:
            if not self.sources.has(app=droplet.app, droplet=droplet.id):
                self.sources.save(app=droplet.app, droplet=droplet.id, source=source, buildpacks=buildpacks)
            keep = {r.droplet for r in self._store.releases(droplet.app)} | {droplet.id}
            self.sources.prune(app=droplet.app, keep=keep)
        except OSError as exc:  # the droplet is good; only a later restage needs the source
            log.warning("could not keep the source", extra={"app": droplet.app, "error": str(exc)})


def _file_lines(host_file: Path) -> Iterator[str]:
    with host_file.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            yield line.rstrip("\n")
