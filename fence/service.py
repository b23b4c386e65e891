"""The node's facade: staging, pushes and node-wide operations; app lifecycle is its partner AppOps."""

from __future__ import annotations

import dataclasses

import datetime as dt
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Protocol

from fence import __version__, labels
from fence.apps import AppOps
from fence.backend.base import ContainerBackend
from fence.backend.firewall import FirewallStatus, HostFirewall
from fence.config import ConfigStore
from fence.drains.ops import DrainOps
from fence.droplets import DropletStore
from fence.errors import DropletNotFound, EngineUnavailable, FenceError, NoRelease, RolloutBusy
from fence.gc import GarbageCollector
from fence.home import NodeHome
from fence.models import (AppUid, AppView, CronView, DeploySettings, DropletRecord, EngineInfo, GcReport, NodeInfo, NodeStatus,
                          RolloutReport, RouterStatus, SourceLimits, StackImage, StackStatus)
from fence.node import app_uid_warnings, crash_loop_warnings, disk_warnings, disks, node_info, port_holder_problem
from fence.rules import check_app_name
from fence.running.cron import CronScheduler
from fence.running.manager import InstanceManager
from fence.stack.images import stack_images
from fence.stack.resolve import stack_status
from fence.stack.rollout import StackRollout
from fence.staging.session import StageOrder, StagingSession
from fence.store import StateStore

__all__ = ["NodeService", "Router", "StageOrder"]

log = logging.getLogger("fence.service")


class Router(Protocol):
    """The node's router as the service uses it (``fence.router.nginx.NginxRouter``)."""

    def status(self) -> RouterStatus:
        """Running, port, routes, last reload, last error."""


class NodeService:
    """One node's operations: staging (``stage``, ``push``, ``restage``, staging logs), stack
    rollouts, garbage collection, status, and the daemon's start, recovery and stop.

    The operations on one app (view, start, stop, scale, env, routes, instance logs, tasks,
    delete) are the second facade, ``AppOps`` (``fence.apps``), held here as ``apps``: the API is
    given both and calls nothing deeper; the CLIs reach them only through the API.
    """

    def __init__(self, *, home: NodeHome, config: ConfigStore, backend: ContainerBackend,
                 store: StateStore, session: StagingSession, droplets: DropletStore, apps: AppOps,
                 manager: InstanceManager, router: Router | None, firewall: HostFirewall | None = None,
                 cron: CronScheduler | None = None, drains: DrainOps | None = None) -> None:
        self.home = home
        self.firewall = firewall
        self.config = config
        self.backend = backend
        self.store = store
        self.session = session
        self.sources = session.sources
        self.droplets = droplets
        self.apps = apps
        self.manager = manager
        self.router = router
        self.node_id = home.node_id
        self.started_at = _now()
        self._rollout_lock = threading.Lock()
        self.collector = GarbageCollector(home=home, node_id=self.node_id, config=config,
                                          backend=backend, store=store, droplets=droplets, sources=self.sources,
                                          tracked=manager.tracked, busy_since=session.busy_since)
        self._gc_stop = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self.cron = cron  # cron (issue 14): the scheduler of apps' cron: entries
        self.drains = drains  # issue 18: log drains
        self.services = None  # backing services (issue 16): fence.services.ops.ServiceOps, set by wiring

    def source_limits(self) -> SourceLimits:
        """Upload limits from config (staging/max_upload, max_files, max_depth)."""
        return self.session.source_limits()

    def new_workdir(self, staging_id: str) -> Path:
        """A fresh scratch folder for one staging (removed when the staging ends)."""
        return self.session.new_workdir(staging_id)

    def stage(self, order: StageOrder, *, staging_id: str, on_line: Callable[[str], None]) -> DropletRecord:
        """Check the source, wait for a staging slot, stage, and record the droplet.

        See ``StagingSession.stage``: a droplet staged from the same inputs is reused unless
        ``order.force``; the log also goes to ``FENCE_HOME/logs/staging/APP/ID.log``.

        Raises:
            FenceError: any staging failure (see ``Stager.stage``), or a refused source.
        """
        return self.session.stage(order, staging_id=staging_id, on_line=on_line).droplet

    def push(self, order: StageOrder, *, instances: int | None, memory_mib: int | None,
             staging_id: str, on_line: Callable[[str], None]) -> AppView:
        """Stage, then make the droplet the app's new release and wait for healthy instances.

        Flags win over the manifest (``DeploySettings.of_push``). A failed staging changes
        nothing: the running release keeps serving.

        Raises:
            FenceError: a staging failure, or DeployFailed.
        """
        with self.session.in_flight():  # until the droplet is a release, garbage collection leaves it be
            staged = self.session.stage(order, staging_id=staging_id, on_line=on_line)
            settings = DeploySettings.of_push(staged.manifest, instances=instances, memory_mib=memory_mib,
                                              env=order.env)
            if staged.manifest.services and self.services is not None:  # issue 16: create, bind
                self.services.ensure_for_push(staged.droplet.app, staged.manifest.services, on_line)
            view = self.apps.deploy(staged.droplet, settings, on_line=on_line)
            if self.drains is not None and staged.manifest.drains:  # issue 18: stackato.yml drain:
                try:
                    self.drains.from_manifest(view.name, staged.manifest.drains)
                except FenceError as exc:  # the release runs already: say so rather than fail the push
                    on_line(f"-----> WARNING: a drain of {staged.manifest.source_name} was not added: {exc.message}")
            return view

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
        release = self.store.release(app.name, app.release)
        if release is None:
            raise NoRelease(app=app.name)
        with self.session.in_flight():
            droplet = self.session.restage(app, release, force=force, on_line=on_line)
            return self.apps.deploy(droplet, DeploySettings(), on_line=on_line,
                                    note=f"restage of release {release.number}")

    def staging_log(self, name: str) -> Iterator[str]:
        """The lines of the app's last staging log (``StagingSession.last_log``)."""
        return self.session.last_log(name)

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
        info = node_info(node_id=self.node_id, host_home=self.home.host_root, engine=engine,
                         node_containers=self.backend.list_info({labels.NODE: self.node_id}),
                         engine_containers=self.backend.list_info({}),
                         promised_mib=self.manager.promised_mib(),
                         overcommit=float(self.config.fence("node/memory_overcommit")))
        if self.services is not None:  # issue 16: each service's memory and disk
            info = dataclasses.replace(info, services=tuple(self.services.usage()))
        return info

    def recover(self) -> list[str]:
        """Clean up after a crash: staging and droplet-image containers of this node, partial
        droplets, scratch folders.

        Returns:
            What was removed, one line each (for the daemon's log).
        """
        removed = []
        try:
            # Task containers (`fence run`, cron jobs) lost their daemon: nobody reads them any more.
            for role in (labels.ROLE_STAGING, labels.ROLE_IMAGE, labels.ROLE_TASK):
                for container in self.backend.list({labels.NODE: self.node_id, labels.ROLE: role}):
                    container.destroy()
                    removed.append(f"{role} container {container.id[:12]}")
        except EngineUnavailable:
            pass
        partials = self.droplets.remove_partials()
        if partials:
            removed.append(f"{partials} partial droplet files")
        removed.extend(self.session.clear_scratch())
        return removed

    def cancel_staging(self, staging_id: str) -> None:
        """Abort a staging (the client went away): its container is destroyed."""
        self.session.cancel(staging_id)

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
        app_uid: AppUid | None = None
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
            try:
                app_uid = self.session.app_user.describe()
            except FenceError as exc:  # a hand-edited app-uid file: say so, report the rest
                warnings.append(exc.message)
        if stack is not None:
            warnings.extend(_stack_warnings(stack))
        warnings.extend(app_uid_warnings(app_uid))
        if self.firewall is not None:
            warnings.extend(self.firewall.check().problems)
        warnings.extend(disk_warnings(disks(self.home.host_root, engine)))
        warnings.extend(crash_loop_warnings({app.name: self.manager.instances(app.name)
                                             for app in self.store.apps()}))
        if self.services is not None and engine is not None:
            warnings.extend(self.services.warnings())
        router = None
        if self.router is not None:
            router = self.router.status()
            if not router.running:
                warnings.append("the router (nginx) is not running: apps are not reachable at their URLs")
            if router.last_error:
                warnings.append(f"the router refused its last config: {router.last_error}")
            taken = self.router_port_problem()
            if taken:
                warnings.insert(0, taken)
            warnings.extend(f"the router left out {s.what} of app {s.app}: {s.why}" for s in router.skipped)
        drains = tuple(self.drains.health()) if self.drains is not None else ()
        warnings.extend(f"drain {d.name} of {d.app or 'the node'} is down ({d.error}); "
                        f"{d.dropped} lines dropped" for d in drains if d.state == "down")
        return NodeStatus(
            drains=drains,
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
            app_uid=app_uid,
            services=self.services.states() if self.services is not None and engine is not None else {},
            backup_interval=int(self.config.fence("services/backup_interval")),
        )

    def router_port_problem(self) -> str | None:
        """One line when ``router/port`` is taken by a process that is not this node's router
        (naming the port and the holder), else ``None``; always ``None`` without a router."""
        if self.router is None:
            return None
        return port_holder_problem(address=str(self.config.fence("router/bind_address")),
                                   port=int(self.config.fence("router/port")),
                                   router_pid=self.router.status().pid)

    def images(self) -> list[StackImage]:
        """Stack images fence knows (see ``fence.stack.images.stack_images``).

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        return stack_images(config=self.config, backend=self.backend, node_id=self.node_id)

    def protect_host(self) -> FirewallStatus | None:
        """Install the host firewall that keeps app containers off the host (the daemon does at
        start); ``None`` when the node has none to install. What is missing stays in ``status``."""
        return self.firewall.install() if self.firewall is not None else None

    def start(self) -> None:
        """Start the instance reconciler: it re-adopts running instances from their labels
        without restarting them, and its first pass (re)starts the router with their routes.
        Garbage collection then runs every ``gc/interval`` seconds, the first time one interval
        after the start."""
        self.manager.run_in_background()
        self._gc_thread = threading.Thread(target=self._gc_loop, name="gc", daemon=True)
        self._gc_thread.start()
        if self.cron is not None:
            self.cron.run_in_background()
        if self.drains is not None:
            self.drains.start()
        if self.services is not None:
            self.services.run_in_background()

    # --- cron (issue 14) --------------------------------------------------------------------

    def cron_entries(self, name: str) -> list[CronView]:
        """The app's cron entries with their next and last runs (``fence cron APP``).

        Raises:
            AppNotFound: no such app.
        """
        app = self.apps.app(name)
        return self.cron.views(app) if self.cron is not None else []

    def cron_log(self, name: str, *, tail: int = 100) -> list[str]:
        """The last lines of the app's cron jobs' output, each prefixed ``[cron]``.

        Raises:
            AppNotFound: no such app.
        """
        self.apps.app(name)
        return self.cron.log_lines(name, tail=tail) if self.cron is not None else []

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
        if self.services is not None:
            self.services.stop()
        if self.cron is not None:  # cron jobs end with the daemon (a restart never re-runs their minute)
            self.cron.shutdown()
        self.manager.shutdown()
        self.session.close()
        if self.drains is not None:
            self.drains.close()
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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
