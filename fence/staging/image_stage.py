"""Stages a Dockerfile or image app: its image built (or found) once, checked, recorded as an image droplet."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tarfile
from typing import Callable, Mapping

from fence.backend.base import ContainerBackend
from fence.builds import ImageConfig
from fence.config import ConfigStore
from fence.errors import StagingFailed, UsageError
from fence.home import NodeHome
from fence.image_apps import check_image_ref, process_types, run_as
from fence.layout import AppUser, Workspace
from fence.models import DropletRecord, PreparedSource
from fence.staging.dockerfile_build import allowed_bases, build_app_image
from fence.staging.inputs import manifest_digest, source_digest
from fence.store import StateStore

LineCallback = Callable[[str], None]
# Bump when what an image droplet records changes for the same inputs (they are built again).
IMAGE_LOGIC_VERSION = 1
class ImageStager:
    """Makes image droplets: a Dockerfile built on the node, or an image already on its engine.

    Args:
        backend: the engine.
        config: node config (read at every staging).
        store: where droplets are recorded.
        home: FENCE_HOME (the staging's scratch folder holds the build context).
        node_id: this node's id (image labels).
        app_user: the uid a root or unset image USER becomes.
    """

    def __init__(self, *, backend: ContainerBackend, config: ConfigStore, store: StateStore, home: NodeHome,
                 node_id: str, app_user: AppUser) -> None:
        self._backend = backend
        self._config = config
        self._store = store
        self._home = home
        self._node_id = node_id
        self._app_user = app_user

    def stage(self, *, name: str, source: PreparedSource, image: str | None, force: bool, staging_id: str,
              on_line: LineCallback, reusable: Callable[[DropletRecord], bool] | None = None,
              cancelled: Callable[[], bool] = lambda: False) -> DropletRecord:
        """Build the app's Dockerfile (``image`` is ``None``) or take ``image`` from the engine,
        and record the image droplet; unless ``force``, a droplet made from the same inputs
        whose image is still on the engine is returned instead (a warm restage builds nothing).

        Raises:
            UsageError: ``image`` is malformed or not on the engine.
            BuildRefused, DockerfileRefused, BuildFailed, StagingTimeout, StagingFailed: see
                ``build_app_image``.
        """
        manifest = source.manifest
        if image is not None:
            check_image_ref(image)
            config = self._backend.image_config(image)
            if config is None:
                raise UsageError(detail=f"--image {image!r} is not on the node's Docker Engine (fence has no "
                                 "registry: build or load the image on the node first)")
            key = self._key(name=name, source=source, extra={"image": config.id})
        else:
            bases = {ref: (info.id if (info := self._backend.image_info(ref)) else "")
                     for ref in allowed_bases(self._config)}
            fence = self._config.fence
            key = self._key(name=name, source=source, extra={
                "bases": bases, "network": str(fence("staging/network")), "memory": int(fence("staging/memory")),
                "max_layers": int(fence("staging/max_layers")), "max_image": int(fence("staging/max_image"))})
        reused = None if force else self._reuse(key, reusable)
        if reused is not None:
            on_line(f"-----> Inputs unchanged: reusing image droplet {reused.id[:12]} "
                    f"(image {reused.image_id[7:19]}); use --force to build again")
            return reused
        ws = Workspace.of(self._config, self._app_user)
        digest, base_ref, base_id = "", "", ""
        if image is not None:
            on_line(f"-----> Deploying the image {image} ({config.id[7:19]})")
            builder, image_ref = "image", image
            droplet_id = hashlib.sha256(f"{name}\n{config.id}".encode()).hexdigest()
            base_ref, base_id = image, config.id
        else:
            host_work = self._home.host_staging_work(staging_id)
            host_work.mkdir(parents=True, exist_ok=True)
            built = build_app_image(backend=self._backend, config=self._config, node_id=self._node_id, app=name,
                                    host_source=source.host_tar, host_workdir=host_work,
                                    dockerfile=manifest.dockerfile or "Dockerfile",
                                    build_args=manifest.build_args, on_line=on_line, cancelled=cancelled)
            config, builder = built.image, "dockerfile"
            image_ref = config.tags[0] if config.tags else config.id
            droplet_id = config.id.removeprefix("sha256:")
            digest, base_ref, base_id = built.check.digest, built.check.base.ref, built.check.base.image_id
        record = self._record(name=name, source=source, config=config, ws=ws, staging_id=staging_id, key=key,
                              builder=builder, image_ref=image_ref, droplet_id=droplet_id, digest=digest,
                              base_ref=base_ref, base_id=base_id, on_line=on_line)
        self._store.add_droplet(record)
        on_line(f"-----> Image droplet {record.id[:12]} ({record.size / 1e6:.1f} MB), "
                f"start command: {record.start_command or '(none)'}")
        return record

    def _record(self, *, name: str, source: PreparedSource, config: ImageConfig, ws: Workspace, staging_id: str,
                key: str, builder: str, image_ref: str, droplet_id: str, digest: str, base_ref: str,
                base_id: str, on_line: LineCallback) -> DropletRecord:
        manifest = source.manifest
        root_allowed = name in [str(a) for a in self._config.fence("security/root_apps")]
        who = run_as(image_user=config.user, app_uid=ws.uid, app_home=str(ws.ctr_home), root_allowed=root_allowed,
                     remapped=self._backend.engine_info().userns_remap)
        on_line(f"-----> {who.why[0].upper()}{who.why[1:]}")
        types = process_types(image=config, procfile=source.procfile, processes=manifest.processes)
        if not types:
            raise StagingFailed(phase="the image", buildpack="", detail="it has no ENTRYPOINT or CMD, and the "
                                "app no Procfile or `processes:`: nothing to run")
        if manifest.hooks.pre_running:
            on_line("       warning: hooks.pre-running is ignored for an image app (put it in the image's ENTRYPOINT)")
        staged_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return DropletRecord(
            id=droplet_id, app=name, size=config.size, buildpacks=(), start_command=types.get("web"),
            process_types=types, config_vars={}, stack_image=base_ref, stack_image_id=base_id,
            commit=source.commit, staged_at=staged_at, staging_id=staging_id, inputs_key=key,
            cron=tuple(manifest.cron), builder=builder, image_id=config.id, image_ref=image_ref,
            dockerfile_digest=digest, base_image=base_ref, base_image_id=base_id, run_user=who.user,
            run_home=who.home, workdir=config.workdir)

    def _key(self, *, name: str, source: PreparedSource, extra: Mapping[str, object]) -> str:
        try:
            content = source_digest(source.host_tar)
        except (tarfile.TarError, OSError) as exc:
            raise StagingFailed(phase="copying", buildpack="", detail=f"could not read {exc}") from None
        inputs = {"v": IMAGE_LOGIC_VERSION, "app": name, "source": content, "manifest": manifest_digest(source.manifest),
                  "procfile": dict(source.procfile or {}), "user": self._app_user.uid(),
                  "root_apps": sorted(str(a) for a in self._config.fence("security/root_apps")), **extra}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _reuse(self, key: str, reusable: Callable[[DropletRecord], bool] | None) -> DropletRecord | None:
        record = self._store.droplet_staged_from(key)
        if record is None or not record.image_id or self._backend.image_info(record.image_id) is None:
            return None
        if reusable is not None and not reusable(record):
            return None
        return record
