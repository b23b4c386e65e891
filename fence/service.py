"""The facade every operation goes through: the API and both CLIs call NodeService, nothing deeper."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Protocol, TextIO

from fence import __version__, labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.apps import AppOps
from fence.errors import DropletNotFound, EngineUnavailable, FenceError, NoRelease, RolloutBusy
from fence.gc import GarbageCollector
from fence.home import NodeHome
from fence.kept_sources import KeptSources
from fence.models import (AppView, DropletRecord, EngineInfo, GcReport, Manifest, NodeInfo, NodeStatus,
                          PreparedSource, RolloutReport, RouterStatus, SourceLimits, StackImage,
                          StackStatus)
from fence.node import crash_loop_warnings, disk_warnings, disks, node_info
from fence.running.manager import InstanceManager
from fence.stack.resolve import stack_status
from fence.stack.images import stack_images
from fence.stack.rollout import StackRollout
from fence.staging.queue import StagingSlots
from fence.staging.sources import prepare_source
from fence.staging.stager import StageRequest, Stager, app_name, check_app_name
from fence.store import StateStore


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
    """

    origin: str
    app: str | None = None
    fallback_name: str | None = None
    buildpacks: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    force: bool = False
    packed_folder: bool = False


log = logging.getLogger("fence.service")


class Router(Protocol):
    """The node's router as the service uses it (``fence.router.nginx.NginxRouter``)."""

    def status(self) -> RouterStatus:
        """Running, port, routes, last reload, last error."""


class NodeService:
    """One node's operations."""

    def __init__(self, *, home: NodeHome, config: ConfigStore, backend: ContainerBackend,
                 store: StateStore, stager: Stager, droplets: DropletStore, apps: AppOps,
                 manager: InstanceManager, router: Router | None) -> None:
        self.home = home
        self.config = config
        self.backend = backend
        self.store = store
        self.stager = stager
        self.droplets = droplets
        self.apps = apps
        self.manager = manager
        self.router = router
        self.node_id = home.node_id
        self.started_at = _now()
        self._slots = StagingSlots(limit=lambda: int(config.fence("staging/concurrency")),
                                   draining=lambda: stager.reaper.pending)
        stager.reaper.on_removed(self._slots.notify)
        self._preparing = StagingSlots.for_sources(limit=lambda: int(config.fence("staging/concurrency")))
        self._cancelled: set[str] = set()
        self.sources = KeptSources(home=home)
        self._busy: dict[object, float] = {}  # stagings and deploys in flight → wall-clock start
        self._busy_lock = threading.Lock()
        self._rollout_lock = threading.Lock()
        self.collector = GarbageCollector(home=home, node_id=self.node_id, config=config,
                                          backend=backend, store=store, droplets=droplets, sources=self.sources,
                                          tracked=manager.tracked, busy_since=self._busy_since)
        self._gc_stop = threading.Event()
        self._gc_thread: threading.Thread | None = None

    def source_limits(self) -> SourceLimits:
        """Upload limits from config (staging/max_upload, max_files, max_depth, max_ignore_…)."""
        return SourceLimits(max_bytes=int(self.config.fence("staging/max_upload")) * 1024 * 1024,
                            max_files=int(self.config.fence("staging/max_files")),
                            max_depth=int(self.config.fence("staging/max_depth")),
                            max_ignore_patterns=int(self.config.fence("staging/max_ignore_patterns")),
                            max_ignore_pattern_length=int(self.config.fence("staging/max_ignore_pattern_length")))

    def new_workdir(self, staging_id: str) -> Path:
        """A fresh scratch folder for one staging (removed by ``stage``)."""
        host_dir = self.home.host_staging_work(staging_id)
        host_dir.mkdir(parents=True, exist_ok=False)
        return host_dir

    def stage(self, order: StageOrder, *, staging_id: str, on_line: Callable[[str], None]) -> DropletRecord:
        """Check the source, wait for a staging slot, stage, and record the droplet.

        Unless ``order.force``, a droplet staged from the same inputs is reused when it and its
        kept source are still there (see ``Stager.stage``). The log also goes to
        ``FENCE_HOME/logs/staging/APP/ID.log``. The scratch folder ``work/ID`` is removed on every path.

        Raises:
            FenceError: any staging failure (see ``Stager.stage``), or a refused source.
        """
        return self._stage(order, staging_id=staging_id, on_line=on_line)[0]

    def push(self, order: StageOrder, *, instances: int | None, memory_mib: int | None,
             staging_id: str, on_line: Callable[[str], None]) -> AppView:
        """Stage, then make the droplet the app's new release and wait for healthy instances.

        A failed staging changes nothing: the running release keeps serving.

        Raises:
            FenceError: a staging failure, or DeployFailed.
        """
        with self._in_flight():  # until the droplet is a release, garbage collection leaves it be
            droplet, manifest = self._stage(order, staging_id=staging_id, on_line=on_line)
            return self.apps.deploy(droplet, instances=instances if instances is not None else manifest.instances,
                                    memory_mib=memory_mib or manifest.mem_mib, env={**manifest.env, **order.env},
                                    urls=manifest.urls, health_timeout=manifest.timeout, on_line=on_line)

    def restage(self, name: str, on_line: Callable[[str], None], *, force: bool = False) -> AppView:
        """Stage the app again from the source its current droplet was staged from (on today's
        stack and buildpacks), then roll it out as a new release like a push.

        When nothing the droplet depends on changed (same stack image, buildpacks, env, …) the
        droplet is reused unless ``force``; the new release then runs it in fresh instances.

        Raises:
            AppNotFound: no such app.
            NoRelease: it was never staged.
            SourceNotKept: its current droplet was staged before fence kept sources.
            FenceError: a staging failure, or DeployFailed (the old release keeps serving).
        """
        app = self.apps.app(name)
        release = next((r for r in self.store.releases(app.name) if r.number == app.release), None)
        if release is None:
            raise NoRelease(app=app.name)
        staging_id = uuid.uuid4().hex[:12]
        host_work = self.home.host_staging_work(staging_id)
        with self._in_flight():
            try:
                kept = self.sources.load(app=app.name, droplet=release.droplet, host_workdir=host_work)
                on_line(f"-----> Restaging {app.name} from the source of release {release.number} "
                        f"(droplet {release.droplet[:12]})")
                request = StageRequest(source=kept.source, app=app.name, buildpacks=kept.buildpacks,
                                       env=dict(app.env), force=force)
                with _LogFile(self.home.host_staging_log(app.name, staging_id), on_line) as logged:
                    with self._slots.slot(on_line=logged, cancelled=lambda: staging_id in self._cancelled):
                        droplet = self.stager.stage(request, on_line=logged, staging_id=staging_id,
                                                    reusable=self._source_kept)
                self.store.note_stack(droplet.stack_image_id, droplet.stack_image, droplet.staged_at)
                self._keep_source(droplet, kept.source, kept.buildpacks)
            finally:
                self._cancelled.discard(staging_id)
                shutil.rmtree(host_work, ignore_errors=True)
            return self.apps.deploy(droplet, instances=None, memory_mib=None, env={}, urls=(),
                                    health_timeout=None, on_line=on_line,
                                    note=f"restage of release {release.number}")

    def rollout(self, *, restage: bool, on_line: Callable[[str], None]) -> RolloutReport:
        """Move every app onto the stack new containers start from (``kato stack rollout``).

        Raises:
            ImageNotFound: no configured stack is on the engine.
            RolloutFailed: some apps could not move; their old instances keep serving.
            RolloutBusy: another rollout runs.
        """
        if not self._rollout_lock.acquire(blocking=False):
            raise RolloutBusy()
        try:
            return StackRollout(config=self.config, backend=self.backend, store=self.store, manager=self.manager,
                                restage=self.restage).run(restage=restage, on_line=on_line)
        finally:
            self._rollout_lock.release()

    def gc(self, *, dry_run: bool) -> GcReport:
        """Remove (or with ``dry_run`` list) what this node owns and no longer needs.

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        return self.collector.collect(dry_run=dry_run)

    def node_info(self) -> NodeInfo:
        """CPU, memory (and what instances are promised), disks and containers.

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        engine = self.backend.engine_info()
        return node_info(node_id=self.node_id, host_home=self.home.host_root, engine=engine,
                         node_containers=self.backend.list_info({labels.NODE: self.node_id}),
                         engine_containers=self.backend.list_info({}),
                         promised_mib=self.manager.promised_mib(),
                         overcommit=float(self.config.fence("node/memory_overcommit")))

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        token = object()
        with self._busy_lock:
            self._busy[token] = time.time()
        try:
            yield
        finally:
            with self._busy_lock:
                del self._busy[token]

    def _busy_since(self) -> float | None:
        with self._busy_lock:
            return min(self._busy.values(), default=None)

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
            keep = {r.droplet for r in self.store.releases(droplet.app)} | {droplet.id}
            self.sources.prune(app=droplet.app, keep=keep)
        except OSError as exc:  # the droplet is good; only a later restage needs the source
            log.warning("could not keep the source", extra={"app": droplet.app, "error": str(exc)})

    def _stage(self, order: StageOrder, *, staging_id: str,
               on_line: Callable[[str], None]) -> tuple[DropletRecord, Manifest]:
        host_work = self.home.host_staging_work(staging_id)
        host_work.mkdir(parents=True, exist_ok=True)
        try:
            uid = int(self.config.fence("container/uid"))
            on_line("-----> Checking the app source")
            with self._preparing.slot(on_line=on_line, cancelled=lambda: staging_id in self._cancelled):
                source = prepare_source(order.origin, host_workdir=host_work, limits=self.source_limits(),
                                        uid=uid, gid=uid, packed_folder=order.packed_folder)
            for warning in (*source.warnings, *source.manifest.warnings):
                on_line(f"       warning: {warning}")
            request = StageRequest(source=source, app=order.app or source.manifest.name or order.fallback_name,
                                   buildpacks=order.buildpacks, env=order.env, force=order.force)
            name = app_name(request)
            with _LogFile(self.home.host_staging_log(name, staging_id), on_line) as logged, self._in_flight():
                with self._slots.slot(on_line=logged, cancelled=lambda: staging_id in self._cancelled):
                    droplet = self.stager.stage(request, on_line=logged, staging_id=staging_id,
                                                reusable=self._source_kept)
                self.store.note_stack(droplet.stack_image_id, droplet.stack_image, droplet.staged_at)
                self._keep_source(droplet, source, order.buildpacks)
                return droplet, source.manifest
        finally:
            self._cancelled.discard(staging_id)
            shutil.rmtree(host_work, ignore_errors=True)

    def recover(self) -> list[str]:
        """Clean up after a crash: staging and droplet-image containers of this node, partial
        droplets, scratch folders.

        Returns:
            What was removed, one line each (for the daemon's log).
        """
        removed = []
        try:
            for role in (labels.ROLE_STAGING, labels.ROLE_IMAGE):
                for container in self.backend.list({labels.NODE: self.node_id, labels.ROLE: role}):
                    container.destroy()
                    removed.append(f"{role} container {container.id[:12]}")
        except EngineUnavailable:
            pass
        partials = self.droplets.remove_partials()
        if partials:
            removed.append(f"{partials} partial droplet files")
        if self.home.host_work.is_dir():
            for host_dir in self.home.host_work.iterdir():
                shutil.rmtree(host_dir, ignore_errors=True)
                removed.append(f"scratch folder {host_dir.name}")
        return removed

    def cancel_staging(self, staging_id: str) -> None:
        """Abort a staging (the client went away): its container is destroyed."""
        self._cancelled.add(staging_id)
        self.stager.cancel(staging_id)

    def droplets_of(self, app: str | None = None) -> list[DropletRecord]:
        """Droplets, newest first, of one app or all.

        Raises:
            InvalidName: a malformed app name.
        """
        return self.store.droplets(check_app_name(app) if app is not None else None)

    def droplet(self, droplet_id: str) -> DropletRecord:
        """One droplet's record.

        Raises:
            DropletNotFound: no such droplet.
        """
        record = self.store.droplet(droplet_id)
        if record is None:
            raise DropletNotFound(droplet=droplet_id)
        return record

    def status(self) -> NodeStatus:
        """The node's status: engine, userns, stack, counts and warnings.

        Never raises for an unreachable engine: that is reported in the status.
        """
        warnings: list[str] = []
        engine: EngineInfo | None = None
        engine_error: str | None = None
        stack: StackStatus | None = None
        containers: dict[str, int] = {}
        try:
            engine = self.backend.engine_info()
            stack = stack_status(config=self.config, backend=self.backend)
            roles = Counter(c.info().labels.get(labels.ROLE, "?")
                            for c in self.backend.list({labels.NODE: self.node_id}))
            containers = dict(sorted(roles.items()))
        except EngineUnavailable as exc:
            engine_error = exc.message
            warnings.append(f"the Docker Engine does not answer: {exc.message}")
        if engine is not None:
            warnings.extend(_engine_warnings(engine, bool(self.config.fence("security/require_userns"))))
        if stack is not None:
            warnings.extend(_stack_warnings(stack))
        warnings.extend(disk_warnings(disks(self.home.host_root, engine)))
        warnings.extend(crash_loop_warnings({app.name: self.manager.instances(app.name)
                                             for app in self.store.apps()}))
        router = None
        if self.router is not None:
            router = self.router.status()
            if not router.running:
                warnings.append("the router (nginx) is not running: apps are not reachable at their URLs")
            if router.last_error:
                warnings.append(f"the router refused its last config: {router.last_error}")
            warnings.extend(f"the router left out {s.what} of app {s.app}: {s.why}" for s in router.skipped)
        return NodeStatus(
            router=router,
            version=__version__,
            node_id=self.node_id,
            home=str(self.home.host_root),
            daemon_pid=os.getpid(),
            started_at=self.started_at,
            engine=engine,
            engine_error=engine_error,
            stack=stack,
            apps=self.store.count_apps(),
            containers=containers,
            schema_version=self.store.schema_version,
            warnings=tuple(warnings),
        )

    def images(self) -> list[StackImage]:
        """Stack images fence knows (see ``fence.stack.images.stack_images``).

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        return stack_images(config=self.config, backend=self.backend, node_id=self.node_id)

    def start(self) -> None:
        """Start the instance reconciler: it re-adopts running instances from their labels
        without restarting them, and its first pass (re)starts the router with their routes.
        Garbage collection then runs every ``gc/interval`` seconds, the first time one interval
        after the start."""
        self.manager.run_in_background()
        self._gc_thread = threading.Thread(target=self._gc_loop, name="gc", daemon=True)
        self._gc_thread.start()

    def _gc_loop(self) -> None:
        last = time.monotonic()
        while not self._gc_stop.wait(timeout=min(5, max(1, int(self.config.fence("gc/interval"))))):
            interval = int(self.config.fence("gc/interval"))
            if interval <= 0 or time.monotonic() - last < interval:
                continue
            last = time.monotonic()
            try:
                report = self.collector.collect(dry_run=False)
            except FenceError as exc:
                log.warning("garbage collection failed: %s", exc.message)
                continue
            except Exception:  # a bug must not end the loop
                log.exception("garbage collection failed")
                continue
            for line in report.errors:
                log.warning("garbage collection could not remove %s", line)

    def close(self) -> None:
        """Stop reconciling and cancel running stagings; instances keep running."""
        self._gc_stop.set()
        self.manager.shutdown()
        self.stager.cancel_all()
        self.stager.wait_removals()
        self.store.close()


def _engine_warnings(engine: EngineInfo, require_userns: bool) -> list[str]:
    found = []
    if not engine.userns_remap:
        if require_userns:
            found.append("user-namespace remapping is off and security/require_userns is true: "
                         "fence refuses to create containers")
        else:
            found.append("user-namespace remapping is off: container root is host root "
                         "(start dockerd with --userns-remap=default)")
    if not engine.seccomp:
        found.append("the engine applies no seccomp profile")
    if not engine.disk_quota:
        found.append(f"disk use of containers is not limited: disk limits are not enforced by the "
                     f"{engine.storage_driver} storage driver here (it needs xfs with project quotas)")
    found.extend(f"engine: {w}" for w in engine.warnings)
    return found


def _stack_warnings(stack: StackStatus) -> list[str]:
    if stack.in_use is None:
        return [f"stack image {stack.configured} is not on this node: build it with "
                f"`kato image build --tag {stack.configured}`"]
    if stack.fallback:
        return [f"stack image {stack.configured} is missing; using fallback {stack.in_use} "
                f"from docker/images"]
    return []


class _LogFile:
    """Tees log lines to a staging log file while passing them on."""

    def __init__(self, host_file: Path, on_line: Callable[[str], None]) -> None:
        self._host_file = host_file
        self._on_line = on_line
        self._handle: TextIO | None = None

    def __enter__(self) -> Callable[[str], None]:
        self._host_file.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self._host_file.open("w", encoding="utf-8", errors="replace")
        return self._write

    def __exit__(self, *exc: object) -> None:
        assert self._handle is not None
        self._handle.close()

    def _write(self, line: str) -> None:
        assert self._handle is not None
        self._handle.write(line + "\n")
        self._handle.flush()
        self._on_line(line)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
