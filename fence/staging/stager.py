"""Stages one app: a fresh hardened container, source and buildpacks in, hooks and phases, a droplet out."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import yaml

from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import BuildpackInvalid, ContainerNotFound, FenceError, StagingFailed, UsageError
from fence.home import NodeHome
from fence.image_apps import choose_builder
from fence.layout import CONTAINER_PATH, AppUser, Workspace
from fence.models import (
    BuildpackUse,
    ContainerSpec,
    DropletRecord,
    PreparedSource,
    ResolvedBuildpack,
)
from fence.limits import container_limits
from fence.reaper import ContainerReaper
from fence.rules import check_app_name, check_env
from fence.stack.resolve import stack_image
from fence.staging import phases
from fence.staging.buildpacks import BuildpackResolver, buildpack_tar, parse_buildpack
from fence.staging.dockerfile_build import has_source_file
from fence.staging.image_stage import ImageStager
from fence.staging.inputs import StagingInputs, buildpack_identity, manifest_digest, source_digest
from fence.store import StateStore
from fence.staging.procfile import parse_procfile
from fence.tarstream import ChunkReader, StreamTooLarge, concat_tars, save_owned_tar

LineCallback = Callable[[str], None]
log = logging.getLogger("fence.staging")
_BIN_STEPS = ("compile", "finalize", "supply", "release")


@dataclass(frozen=True)
class StageRequest:
    """What to stage.

    Attributes:
        source: the checked, packed app source.
        app: the app's name; ``None`` to take it from the manifest.
        buildpacks: buildpack specs given by the developer (override the manifest's).
        env: env variables given by the developer (override the manifest's).
        force: stage even when a droplet staged from the same inputs is still in the store.
        builder: ``--builder`` (``dockerfile`` or ``buildpack``), if given.
        image: ``--image``: an image on the engine to deploy as it is (no build).
    """

    source: PreparedSource
    app: str | None = None
    buildpacks: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    force: bool = False
    builder: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class StagingPlan:
    """A staging as decided before any container exists (``Stager.plan``).

    Attributes:
        staging_id: the staging's id (container tracking, cancellation).
        name, source: the app's name and its checked, packed source.
        env: the app's env for staging (the manifest's, then the developer's), checked.
        workspace: the app user's layout in the container.
        timeout, deadline: staging/timeout in seconds, and when it runs out (``time.monotonic``).
        explicit: whether the buildpacks were given (else detected among the configured ones).
        resolved: the buildpacks, resolved and cached on the host.
        image, image_id: the stack image and its id (``""`` when the engine has no such image).
        container_spec, staging_env: the staging container's spec; the env buildpacks and hooks get.
        inputs, inputs_key: what the staging is computed from, and its key (``""``: never reused).
        reused: a droplet staged from the same inputs to return instead of staging, if any.
    """

    staging_id: str
    name: str
    source: PreparedSource
    env: Mapping[str, str]
    workspace: Workspace
    timeout: int
    deadline: float
    explicit: bool
    resolved: tuple[ResolvedBuildpack, ...]
    image: str
    image_id: str
    container_spec: ContainerSpec
    staging_env: Mapping[str, str]
    inputs: StagingInputs
    inputs_key: str
    reused: DropletRecord | None


def app_name(request: StageRequest) -> str:
    """The app's name: given, else from the manifest.

    Raises:
        UsageError: no name anywhere.
        InvalidName: the name breaks the app-name pattern.
    """
    name = request.app or request.source.manifest.name
    if not name:
        raise UsageError(detail="the app has no name: give --name or put `name:` in stackato.yml")
    return check_app_name(name)


class Stager:
    """Runs stagings on one node.

    Args:
        backend: the engine.
        config: node config (read at every staging).
        droplets: where droplets are written.
        store: where droplets are recorded.
        home: FENCE_HOME (build caches).
        node_id: this node's id (container labels).
        resolver: finds and caches buildpacks.
        reaper: removes finished staging containers in the background.
        app_user: decides the uid stagings run as (and the owner of what they make).
    """

    def __init__(self, *, backend: ContainerBackend, config: ConfigStore, droplets: DropletStore,
                 store: StateStore, home: NodeHome, node_id: str, resolver: BuildpackResolver,
                 app_user: AppUser, reaper: ContainerReaper | None = None) -> None:
        self.app_user = app_user
        self._backend = backend
        self._config = config
        self._droplets = droplets
        self._store = store
        self._home = home
        self._node_id = node_id
        self._resolver = resolver
        self._lock = threading.Lock()
        self._running: dict[str, Container] = {}
        self._reaper = reaper or ContainerReaper()
        self._image_stager = ImageStager(backend=backend, config=config, store=store, home=home,
                                         node_id=node_id, app_user=app_user)

    def stage(self, request: StageRequest, *, on_line: LineCallback, staging_id: str | None = None,
              reusable: Callable[[DropletRecord], bool] | None = None,
              cancelled: Callable[[], bool] = lambda: False) -> DropletRecord:
        """Stage an app into a droplet; the container is destroyed on every path.

        First the staging is planned without a container (``plan``): its staging-input key
        (``fence.staging.inputs``: source content, buildpacks resolved, stack image id, env,
        manifest, staging settings) and, unless ``request.force``, a droplet staged from the same
        key that is still in the store, which is then returned as it is. The daemon's log gets a
        line when a staging starts, reuses a droplet, and ends (outcome and duration).

        Args:
            request: source, name, buildpacks, env, force.
            on_line: receives the staging log, line by line, as it happens.
            staging_id: an id chosen by the caller (so it can cancel), else a new one.
            reusable: says whether a droplet found for the same inputs may be reused (the
                service checks that its kept source is still there); any is, when ``None``.
            cancelled: says whether the client went away (a git buildpack's clone is then killed).

        Returns:
            The recorded droplet (an earlier one, when its inputs were the same).

        Raises:
            UsageError, InvalidName, BuildpackInvalid: bad input (nothing was created).
            NoBuildpackDetected: no buildpack accepted the app.
            StagingFailed: a hook or buildpack failed (phase, buildpack and output tail named).
            StagingTimeout: staging ran past staging/timeout.
            ImageNotFound: the stack image is missing.
        """
        began = time.monotonic()
        builder = self.builder(request)
        if builder != "buildpack":  # issue 15: an image droplet, built once (or pushed) and run as it is
            return self._image_stager.stage(name=app_name(request), source=request.source, image=request.image,
                                            force=request.force, staging_id=staging_id or uuid.uuid4().hex[:12],
                                            on_line=on_line, reusable=reusable, cancelled=cancelled)
        plan = self.plan(request, staging_id=staging_id or uuid.uuid4().hex[:12], reusable=reusable,
                         cancelled=cancelled)
        facts = {"app": plan.name, "staging": plan.staging_id}
        if plan.reused is not None:
            reused = plan.reused
            used = ", ".join(f"{u.name} {u.version}" for u in reused.buildpacks) or "none"
            on_line(f"-----> Staging inputs unchanged (source {plan.inputs.source[:12]}, buildpack {used}, stack "
                    f"{plan.image_id.removeprefix('sha256:')[:12]}): reusing droplet {reused.id[:12]}; "
                    f"use --force to stage again")
            on_line(f"-----> Droplet {reused.id[:12]} ({reused.size / 1e6:.1f} MB), "
                    f"start command: {reused.start_command or '(none)'}")
            log.info("staging inputs unchanged: droplet reused", extra={**facts, "droplet": reused.id[:12]})
            return reused
        log.info("staging started", extra={**facts, "image": plan.image, "buildpacks": len(plan.resolved)})
        try:
            record = self._run(plan, on_line)
        except FenceError as exc:
            log.warning("staging failed", extra={**facts, "error": exc.message,
                                                 "seconds": round(time.monotonic() - began, 1)})
            raise
        log.info("staging done", extra={**facts, "droplet": record.id[:12], "size": record.size,
                                        "seconds": round(time.monotonic() - began, 1)})
        return record

    def builder(self, request: StageRequest) -> str:
        """``image`` for ``--image``, else ``image_apps.choose_builder``'s pick.

        Raises:
            UsageError: an unknown builder, or one that contradicts the other options.
        """
        manifest = request.source.manifest
        if request.image is not None:
            if request.builder is not None or request.buildpacks:
                raise UsageError(detail="--image deploys an image as it is: give no --builder or --buildpack with it")
            return "image"
        return choose_builder(flag=request.builder, manifest_builder=manifest.builder,
                              buildpacks_given=bool(request.buildpacks or manifest.buildpacks),
                              has_dockerfile=has_source_file(request.source.host_tar,
                                                             manifest.dockerfile or "Dockerfile"))

    def plan(self, request: StageRequest, *, staging_id: str,
             reusable: Callable[[DropletRecord], bool] | None = None,
             cancelled: Callable[[], bool] = lambda: False) -> StagingPlan:
        """Decide everything about a staging that needs no container: name, env, buildpacks
        (resolved), stack image, container spec, staging env, input key and droplet reuse.

        Raises:
            UsageError, InvalidName, BuildpackInvalid: bad input.
            ImageNotFound: the stack image is missing.
        """
        timeout = int(self._config.fence("staging/timeout"))
        deadline = time.monotonic() + timeout
        name = app_name(request)
        manifest = request.source.manifest
        env = check_env({**manifest.env, **request.env})
        ws = Workspace.of(self._config, self.app_user)
        specs = request.buildpacks or manifest.buildpacks
        explicit = bool(specs)
        if not explicit:
            specs = tuple(str(n) for n in self._config.fence("staging/buildpacks"))
        refs = [parse_buildpack(spec) for spec in specs]
        for ref in refs:
            if ref.kind == "path" and not request.buildpacks and not ref.spec.startswith(("/", "~")):
                raise BuildpackInvalid(spec=ref.spec, why="a buildpack path in stackato.yml must be "
                                       "absolute on the node; or use a git URL or a built-in name")
        resolved = tuple(self._resolver.resolve(ref, cancelled=cancelled) for ref in refs)
        image = stack_image(config=self._config, backend=self._backend)
        image_info = self._backend.image_info(image)
        image_id = image_info.id if image_info else ""
        container_spec = self._container_spec(name, image, ws)
        staging_env = self._staging_env(name, ws, env, timeout)
        inputs = self._inputs(name, request.source, specs, explicit, resolved, image_id, container_spec, staging_env)
        inputs_key = inputs.key() if image_id else ""
        return StagingPlan(staging_id=staging_id, name=name, source=request.source, env=env, workspace=ws,
                           timeout=timeout, deadline=deadline, explicit=explicit, resolved=resolved, image=image,
                           image_id=image_id, container_spec=container_spec, staging_env=staging_env,
                           inputs=inputs, inputs_key=inputs_key,
                           reused=None if request.force else self._reuse(inputs_key, reusable))

    def _run(self, plan: StagingPlan, on_line: LineCallback) -> DropletRecord:
        """Stage in a fresh container, record the droplet; the container goes on every path."""
        ws, manifest, name = plan.workspace, plan.source.manifest, plan.name
        on_line(f"-----> Staging {name} on {plan.image} ({len(plan.resolved)} buildpack"
                f"{'s' if len(plan.resolved) != 1 else ''} {'given' if plan.explicit else 'to try'})")
        container = self._backend.create(plan.container_spec)
        staged = False
        with self._lock:
            self._running[plan.staging_id] = container
        try:
            container.start()
            runner = phases.PhaseRunner(container=container, workspace=ws, env=plan.staging_env,
                                        deadline=plan.deadline, timeout_seconds=plan.timeout, on_line=on_line,
                                        max_log_mib=int(self._config.fence("staging/max_log")))
            copied = self._copy_in(container, ws, plan.source, name, plan.env, plan.resolved, on_line)
            cache_before = runner.probe([ws.ctr_admin_hook("pre-staging"), ws.ctr_admin_hook("post-staging"),
                                         *(p.ctr_dir / "bin" / step for p in copied for step in _BIN_STEPS)],
                                        fingerprint=ws.ctr_cache)
            phases.run_hooks(runner, phase="pre-staging", commands=manifest.hooks.pre_staging, whose="app")
            phases.run_admin_hook(runner, phase="pre-staging")
            chain = copied if plan.explicit else [phases.detect(runner, copied)]
            phases.compile_chain(runner, chain)
            release = phases.release(runner, chain[-1])
            process_types = {**release.process_types, **self._procfile(container, ws, plan.source),
                             **manifest.processes}
            phases.run_hooks(runner, phase="post-staging", commands=manifest.hooks.post_staging, whose="app")
            phases.run_admin_hook(runner, phase="post-staging")
            # A cache that nothing wrote to (a buildpack that found everything up to date) is
            # already on the host as it is: streaming it out again would only cost time.
            unchanged = cache_before is not None and runner.fingerprint(ws.ctr_cache) == cache_before
            # The droplet and the build cache stream out of the container at once: one is mostly
            # gzip (CPU), the other mostly the engine's archiving and disk writes.
            with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-save") as pool:
                if unchanged:
                    on_line("-----> Build cache unchanged: kept as it is")
                    saved = None
                else:
                    on_line("-----> Saving the build cache")
                    saved = pool.submit(save_owned_tar, container.stream_out(ws.ctr_cache),
                                        self._home.host_app_cache(name), uid=ws.uid,
                                        max_bytes=_mib(self._config, "staging/max_cache"))
                try:
                    record = self._package(container, plan, chain, release, process_types, on_line)
                except StreamTooLarge:
                    raise _too_large("the droplet", self._config, "staging/max_droplet") from None
                try:
                    if saved is not None:
                        saved.result()
                except StreamTooLarge:
                    if self._store.droplet(record.id) is None:
                        self._droplets.delete(record.id)  # nothing of this staging is kept
                    raise _too_large("the build cache", self._config, "staging/max_cache") from None
            self._store.add_droplet(record)
            on_line(f"-----> Droplet {record.id[:12]} ({record.size / 1e6:.1f} MB), "
                    f"start command: {record.start_command or '(none)'}")
            staged = True
            return record
        except FenceError as exc:
            if self._cancelled(plan.staging_id):
                raise StagingFailed(phase="staging", buildpack="", detail="cancelled") from None
            raise exc
        finally:
            with self._lock:
                self._running.pop(plan.staging_id, None)
            if staged:
                # The droplet is out: removing the container's layer need not hold up the
                # developer or the deploy that follows.
                self._reaper.remove_later(container, "staging")
            else:
                container.destroy()

    def _inputs(self, name: str, source: PreparedSource, specs: tuple[str, ...], explicit: bool,
                resolved: tuple[ResolvedBuildpack, ...], image_id: str, spec: ContainerSpec,
                staging_env: Mapping[str, str]) -> StagingInputs:
        try:
            content = source_digest(source.host_tar)
        except (tarfile.TarError, OSError) as exc:
            raise StagingFailed(phase="copying", buildpack="", detail=f"could not read {exc}") from None
        limits = spec.limits
        return StagingInputs(
            app=name, source=content, commit=source.commit, manifest=manifest_digest(source.manifest),
            buildpack_specs=tuple(specs), explicit=explicit,
            buildpacks=tuple(buildpack_identity(pack) for pack in resolved), stack_image_id=image_id,
            env=dict(staging_env),
            container=(f"user={spec.user}", f"network={spec.network}", f"memory={limits.memory_bytes}",
                       f"pids={limits.pids}", f"cpu_shares={limits.cpu_shares}", f"nofile={limits.nofile}"))

    def _reuse(self, inputs_key: str, reusable: Callable[[DropletRecord], bool] | None) -> DropletRecord | None:
        """The droplet staged from these inputs, if its record and file are still there (and the
        caller accepts it); its file is touched so a concurrent garbage collection spares it."""
        record = self._store.droplet_staged_from(inputs_key)
        if record is None or not self._droplets.touch(record.id):
            return None
        if reusable is not None and not reusable(record):
            return None
        return record

    @property
    def reaper(self) -> ContainerReaper:
        """What removes finished staging containers in the background (staging slots count them)."""
        return self._reaper

    def wait_removals(self, timeout: float = 60.0) -> None:
        """Wait until the containers of finished stagings are removed (daemon stop)."""
        self._reaper.wait(timeout)

    def cancel(self, staging_id: str) -> bool:
        """Stop a running staging by destroying its container; returns whether it was running."""
        with self._lock:
            container = self._running.get(staging_id)
            if container is not None:
                self._running[staging_id] = _CANCELLED
        if container is None or container is _CANCELLED:
            return False
        container.destroy()
        return True

    def cancel_all(self) -> int:
        """Cancel every running staging (daemon stop); returns how many."""
        with self._lock:
            ids = list(self._running)
        return sum(self.cancel(staging_id) for staging_id in ids)

    def _cancelled(self, staging_id: str) -> bool:
        with self._lock:
            return self._running.get(staging_id) is _CANCELLED

    def _container_spec(self, name: str, image: str, ws: Workspace) -> ContainerSpec:
        fence = self._config.fence
        return ContainerSpec(image=image, labels=labels.owned(self._node_id, labels.ROLE_STAGING, app=name),
                             user=f"{ws.uid}:{ws.uid}", env=ws.base_env, workdir=PurePosixPath("/"),
                             limits=container_limits(self._config, int(fence("staging/memory"))),
                             network=str(fence("staging/network")))

    def _staging_env(self, name: str, ws: Workspace, env: Mapping[str, str], timeout: int) -> dict[str, str]:
        fence = self._config.fence
        return {
            **env,
            "HOME": str(ws.ctr_home),
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "USER": str(fence("container/user")),
            "TMPDIR": str(ws.ctr_tmp),
            "STACKATO_APP_NAME": name,
            "BUILDPACK_CACHE": str(ws.ctr_cache),
            "STAGING_TIMEOUT": str(timeout),
            "MEMORY_LIMIT": f"{int(fence('staging/memory'))}m",
            "FENCE_STAGING_NETWORK": str(fence("staging/network")),
        }

    def _copy_in(self, container: Container, ws: Workspace, source: PreparedSource, name: str,
                 env: Mapping[str, str], resolved: tuple[ResolvedBuildpack, ...],
                 on_line: LineCallback) -> list[phases.CopiedBuildpack]:
        on_line(f"-----> Copying the app ({source.files} files, {source.size / 1e6:.1f} MB)")
        container.stream_in(PurePosixPath("/"), ws.skeleton_tar())
        # Everything else goes in under the home folder as one tar stream: one engine call (each
        # costs tens of ms however small) for the source, the cache, ENV_DIR and the buildpacks.
        parts: list[bytes | Path] = [source.host_tar]
        host_cache = self._home.host_app_cache(name)
        if host_cache.is_file():
            on_line(f"-----> Restoring the build cache ({host_cache.stat().st_size / 1e6:.1f} MB)")
            parts.append(host_cache)
        parts.append(ws.env_tar(env))
        copied = []
        for index, pack in enumerate(resolved):
            ctr_dir = ws.ctr_buildpack(index, pack.name)
            parts.append(buildpack_tar(pack, ctr_prefix=str(ctr_dir.relative_to(ws.ctr_home)), uid=ws.uid, gid=ws.uid))
            copied.append(phases.CopiedBuildpack(index=index, name=pack.name, version=pack.version,
                                                 origin=pack.origin, ctr_dir=ctr_dir))
        try:
            container.stream_in(ws.ctr_home, concat_tars(parts))
        except (tarfile.TarError, OSError) as exc:
            raise StagingFailed(phase="copying", buildpack="", detail=f"could not read {exc}") from None
        return copied

    def _procfile(self, container: Container, ws: Workspace, source: PreparedSource) -> Mapping[str, str]:
        # A buildpack may write or change the Procfile; the compiled app's one wins.
        try:
            chunks = container.stream_out(ws.ctr_app / "Procfile")
            with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:
                for member in tar:
                    if member.isfile() and member.size <= 64 * 1024:
                        handle = tar.extractfile(member)
                        return parse_procfile(handle.read() if handle else b"")
        except ContainerNotFound:  # the compiled app has none: fall back to the source's Procfile
            pass
        return source.procfile or {}

    def _package(self, container: Container, plan: StagingPlan, chain: list[phases.CopiedBuildpack],
                 release: phases.Release, process_types: Mapping[str, str], on_line: LineCallback) -> DropletRecord:
        on_line("-----> Packaging the droplet")
        staged_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        uses = tuple(BuildpackUse(name=p.name, version=p.version, origin=p.origin) for p in chain)
        name, image, image_id, source, ws = plan.name, plan.image, plan.image_id, plan.source, plan.workspace
        pre_running = source.manifest.hooks.pre_running
        info = {
            "app": name,
            "detected_buildpack": chain[-1].name,
            "buildpack_version": chain[-1].version,
            "buildpacks": [{"name": u.name, "version": u.version, "origin": u.origin} for u in uses],
            "start_command": process_types.get("web"),
            "process_types": dict(process_types),
            "config_vars": dict(release.config_vars),
            "stack": {"image": image, "image_id": image_id},
            "commit": source.commit,
            "staged_at": staged_at,
            "staging_id": plan.staging_id,
            "hooks": {"pre-running": list(pre_running)},
        }
        text = yaml.safe_dump(info, default_flow_style=False, sort_keys=False).encode()
        digest, size = self._droplets.write(app_tar=container.stream_out(ws.ctr_app),
                                            extra_files={"staging_info.yml": text}, uid=ws.uid,
                                            max_bytes=_mib(self._config, "staging/max_droplet"))
        return DropletRecord(id=digest, app=name, size=size, buildpacks=uses,
                             start_command=process_types.get("web"), process_types=dict(process_types),
                             config_vars=dict(release.config_vars), stack_image=image,
                             stack_image_id=image_id, commit=source.commit, staged_at=staged_at,
                             staging_id=plan.staging_id, pre_running=tuple(pre_running),
                             inputs_key=plan.inputs_key, cron=tuple(source.manifest.cron))


def _mib(config: ConfigStore, key: str) -> int:
    return int(config.fence(key)) * 1024 * 1024


def _too_large(what: str, config: ConfigStore, key: str) -> StagingFailed:
    return StagingFailed(phase="packaging", buildpack="",
                         detail=f"{what} is larger than {key} ({int(config.fence(key))} MiB): nothing was kept")


class _Cancelled:
    """Marks a staging whose container was destroyed on purpose."""

    def destroy(self) -> None:
        """Nothing left to destroy."""


_CANCELLED: Container = _Cancelled()  # type: ignore[assignment]
