"""Garbage collection: finds what this node owns and no longer needs, and removes exactly that."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import ContainerNotFound, DropletNotFound, FenceError, UsageError
from fence.home import NodeHome
from fence.kept_sources import KeptSources
from fence.models import GcItem, GcReport
from fence.store import StateStore

log = logging.getLogger("fence.gc")

KEEP_STAGING_LOGS = 5
BUILDPACK_UNUSED_DAYS = 7
_STALE_TEMP_SECONDS = 3600
_BUILDPACK_SCRIPTS = ("detect", "compile", "release", "supply", "finalize")
_KIND_ORDER = ("container", "network", "droplet-image", "image", "droplet", "droplet-record", "source", "cache",
               "staging-log", "buildpack")


@dataclass(frozen=True)
class _Found:
    """What a plan found, with what it needs to remove it."""

    item: GcItem
    remove: Callable[[], None]


class GarbageCollector:
    """Removes what this node owns and nothing needs: unreferenced droplets (and their kept
    sources), build caches of deleted apps, this node's stopped containers no instance record
    needs, networks of deleted apps that no container runs on, droplet images no container uses whose droplet is in no kept release or whose stack
    is no longer configured, stack images this node ran on that are neither configured nor used
    by any container (or kept droplet image),
    staging logs beyond the last five per app, and git buildpack checkouts unused for a week.

    A dry run and the real run that follows it (with nothing changed between) list the same
    items: both take the same plan.

    Args:
        home: FENCE_HOME (build caches, staging logs, git buildpack checkouts).
        node_id: this node's id (only containers with its label are ever touched).
        config: node config (the configured stacks).
        backend: the engine.
        store: desired state (apps, releases, droplet records, stacks used).
        droplets: the droplet files.
        sources: kept sources.
        tracked: ids of the containers the instance manager keeps a record of.
        busy_since: wall-clock start of the oldest staging or deploy in flight, ``None`` when
            none runs (files newer than it are left alone).
        clock: wall-clock seconds (a fake in tests).
    """

    def __init__(self, *, home: NodeHome, node_id: str, config: ConfigStore, backend: ContainerBackend,
                 store: StateStore, droplets: DropletStore, sources: KeptSources,
                 tracked: Callable[[], set[str]], busy_since: Callable[[], float | None],
                 clock: Callable[[], float] = time.time) -> None:
        self._home = home
        self._node_id = node_id
        self._config = config
        self._backend = backend
        self._store = store
        self._droplets = droplets
        self._sources = sources
        self._tracked = tracked
        self._busy_since = busy_since
        self._clock = clock
        self._lock = threading.Lock()

    def collect(self, *, dry_run: bool) -> GcReport:
        """Plan, and unless ``dry_run`` remove what the plan lists.

        Returns:
            What was (or would be) removed, what could not be, and what was skipped.

        Raises:
            EngineUnavailable: the engine does not answer (nothing is removed).
        """
        with self._lock:
            found, notes = self._plan()
            if dry_run:
                return GcReport(dry_run=True, items=tuple(f.item for f in found), notes=tuple(notes))
            removed, errors = [], []
            for entry in found:
                try:
                    entry.remove()
                except (FenceError, OSError) as exc:
                    why = exc.message if isinstance(exc, FenceError) else str(exc)
                    errors.append(f"{entry.item.kind} {entry.item.name}: {why}")
                    continue
                removed.append(entry.item)
            if removed:
                log.info("garbage collected", extra={"items": len(removed),
                                                     "bytes": sum(i.size for i in removed)})
            return GcReport(dry_run=False, items=tuple(removed), errors=tuple(errors), notes=tuple(notes))

    # --- the plan ----------------------------------------------------------------------------

    def _plan(self) -> tuple[list[_Found], list[str]]:
        notes: list[str] = []
        busy = self._busy_since()
        apps = {app.name for app in self._store.apps()}
        mine = self._backend.list_info({labels.NODE: self._node_id})
        referenced = {r.droplet for app in apps for r in self._store.releases(app)}
        referenced |= {c.labels[labels.DROPLET] for c in mine if c.labels.get(labels.DROPLET)}
        found = self._containers(mine) + self._networks(apps) + self._images(referenced, busy)
        found += self._build_images(apps, referenced, busy)
        found += self._droplet_files(referenced, busy) + self._kept_sources(apps, referenced, busy)
        found += self._caches(apps, busy) + self._staging_logs()
        if busy is None:
            found += self._buildpacks()
        else:
            notes.append("git buildpack checkouts were left alone: a staging is running")
        order = {kind: n for n, kind in enumerate(_KIND_ORDER)}
        return sorted(found, key=lambda f: (order[f.item.kind], f.item.name)), notes

    def _containers(self, mine: list) -> list[_Found]:  # noqa: ANN001 - list[ContainerInfo]
        tracked = self._tracked()
        found = []
        for info in mine:
            if info.state not in ("exited", "dead") or info.id in tracked:
                continue
            role = info.labels.get(labels.ROLE, "?")
            app = info.labels.get(labels.APP)
            detail = f"stopped {role} container" + (f" of {app}" if app else "")
            found.append(_Found(GcItem(kind="container", name=info.id[:12], detail=detail),
                                lambda cid=info.id: self._remove_container(cid)))
        return found

    def _remove_container(self, container_id: str) -> None:
        try:
            container = self._backend.lookup(container_id)
            info = container.info()
        except ContainerNotFound:
            return
        if not labels.is_owned_by(info.labels, self._node_id) or info.running:
            raise ContainerNotFound(container=f"{container_id[:12]} (started again or not this node's)")
        container.destroy()

    def _networks(self, apps: set[str]) -> list[_Found]:
        found = []
        for network in self._backend.list_networks({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_NETWORK}):
            app = network.labels.get(labels.APP, "")
            if app in apps or network.containers:
                continue  # a task of a deleted app may still run on it: the next pass takes it
            found.append(_Found(GcItem(kind="network", name=network.name,
                                       detail=f"network of {app or '?'}, an app this node no longer has"),
                                lambda name=network.name, app=app: self._remove_network(name, app)))
        return found

    def _remove_network(self, name: str, app: str) -> None:
        if app and self._store.app(app) is not None:
            # Pushed again since the plan was made: its instances are about to join it.
            raise UsageError(detail=f"{app} was pushed again; its network stays")
        self._backend.remove_network(name)

    def _images(self, referenced: set[str], busy: float | None) -> list[_Found]:
        configured = set()
        for ref in [str(self._config.fence("docker/image")), *map(str, self._config.fence("docker/images"))]:
            image = self._backend.image_info(ref)
            if image is not None:
                configured.add(image.id)
        everything = self._backend.list_info({})  # every container on the engine
        used = {c.image_id for c in everything} | {c.stack_image_id for c in everything}
        found = []
        for image in self._backend.list_images({labels.NODE: self._node_id, labels.DROPLET: ""}):
            if not labels.is_droplet_image(image.labels) or image.id in used:
                continue
            stack_id = image.labels[labels.STACK_ID]
            if image.labels[labels.DROPLET] in referenced and stack_id in configured:
                used.add(stack_id)  # its stack cannot go while it stays
                continue
            if busy is not None and _epoch(image.created) >= busy - 5:
                used.add(stack_id)
                continue  # a deploy in flight may have just made it for its new release
            why = ("its droplet is in no kept release" if image.labels[labels.DROPLET] not in referenced
                   else "its stack is no longer configured")
            found.append(_Found(
                GcItem(kind="droplet-image", name=image.tags[0] if image.tags else image.id, size=image.size,
                       detail=f"image of a droplet of {image.labels.get(labels.APP, '?')}: {why}; no container uses it"),
                lambda image=image: self._remove_image(image.id, image.tags, stack=False)))
        history = self._store.stacks_used()
        for image in self._backend.list_images({labels.STACK: ""}):
            if (labels.is_droplet_image(image.labels) or image.id in configured or image.id in used
                    or image.id not in history):
                continue
            shown = ", ".join(image.tags) or "untagged"
            found.append(_Found(
                GcItem(kind="image", name=image.id, size=image.size,
                       detail=f"stack image ({shown}) this node ran on; not configured, no container uses it"),
                lambda image=image: self._remove_image(image.id, image.tags)))
        return found

    def _build_images(self, apps: set[str], referenced: set[str], busy: float | None) -> list[_Found]:
        """Dockerfile apps' built images (issue 15) that no kept release runs and no container
        uses: all of a deleted app's; of a live app, all but its newest (tagged: the next build's
        cache)."""
        kept = {d.image_id for d in self._store.droplets_by_id(referenced).values() if d.image_id}
        used = {c.image_id for c in self._backend.list_info({})}
        found = []
        for image in self._backend.list_images({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_BUILD}):
            app = image.labels.get(labels.APP, "")
            if image.id in kept or image.id in used or (app in apps and image.tags):
                continue
            if busy is not None and _epoch(image.created) >= busy - 5:
                continue  # a staging in flight may have just built it
            why = "an app this node no longer has" if app not in apps else "in no kept release"
            found.append(_Found(
                GcItem(kind="droplet-image", name=image.tags[0] if image.tags else image.id, size=image.size,
                       detail=f"built image of {app or '?'}: {why}; no container uses it"),
                lambda image=image: self._remove_image(image.id, image.tags, stack=False)))
        return found

    def _remove_image(self, image_id: str, tags: tuple[str, ...], *, stack: bool = True) -> None:
        for tag in tags:
            self._backend.remove_image(tag)
        if self._backend.image_info(image_id) is not None:
            self._backend.remove_image(image_id)
        if stack:
            self._store.forget_stack(image_id)

    def _droplet_files(self, referenced: set[str], busy: float | None) -> list[_Found]:
        found = []
        files = set(self._droplets.digests())
        records = {r.id: r for r in self._store.droplets()}
        for digest in sorted(files - referenced):
            try:
                stat = self._droplets.host_path(digest).stat()
            except (DropletNotFound, OSError):
                continue  # removed meanwhile
            if busy is not None and stat.st_mtime >= busy - 5:
                continue  # a staging in flight may be about to make it a release
            app = records[digest].app if digest in records else "no record"
            found.append(_Found(GcItem(kind="droplet", name=digest, size=stat.st_size,
                                       detail=f"droplet of {app}, in no kept release"),
                                lambda d=digest: self._remove_droplet(d)))
        if busy is None:
            for digest in sorted(set(records) - files - referenced):
                found.append(_Found(GcItem(kind="droplet-record", name=digest,
                                           detail=f"record of a droplet of {records[digest].app} whose file is gone"),
                                    lambda d=digest: self._store.delete_droplet(d)))
        return found

    def _remove_droplet(self, digest: str) -> None:
        self._store.delete_droplet(digest)
        self._droplets.delete(digest)

    def _kept_sources(self, apps: set[str], referenced: set[str], busy: float | None) -> list[_Found]:
        found = []
        for kept in self._sources.files():
            newest = max((f.lstat().st_mtime for f in kept.host_files), default=0.0)
            if busy is not None and newest >= busy - 5:
                continue
            if kept.droplet == ".tmp":
                if self._clock() - newest < _STALE_TEMP_SECONDS:
                    continue
                why = "left by an interrupted write"
            elif kept.app not in apps:
                why = "source of a deleted app"
            elif kept.droplet not in referenced:
                why = "source of a droplet in no kept release"
            else:
                continue
            found.append(_Found(GcItem(kind="source", name=f"{kept.app}/{kept.droplet}", size=kept.size, detail=why),
                                lambda kept=kept: self._sources.remove(kept)))
        return found

    def _caches(self, apps: set[str], busy: float | None) -> list[_Found]:
        host_dir = self._home.host_caches
        found = []
        for host_file in sorted(host_dir.glob("*.tar")) if host_dir.is_dir() else []:
            stat = host_file.lstat()
            if host_file.stem in apps or (busy is not None and stat.st_mtime >= busy - 5):
                continue
            found.append(_Found(GcItem(kind="cache", name=host_file.stem, size=stat.st_size,
                                       detail="build cache of an app this node no longer has"),
                                lambda f=host_file: f.unlink(missing_ok=True)))
        return found

    def _staging_logs(self) -> list[_Found]:
        host_top = self._home.host_staging_logs
        found = []
        for host_dir in sorted(p for p in host_top.iterdir() if p.is_dir()) if host_top.is_dir() else []:
            logs = sorted(host_dir.glob("*.log"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
            for host_file in logs[KEEP_STAGING_LOGS:]:
                found.append(_Found(GcItem(kind="staging-log", name=str(host_file.relative_to(self._home.host_root)),
                                           size=host_file.stat().st_size,
                                           detail=f"older than the last {KEEP_STAGING_LOGS} of {host_dir.name}"),
                                    lambda f=host_file: f.unlink(missing_ok=True)))
        return found

    def _buildpacks(self) -> list[_Found]:
        host_top = self._home.host_git_buildpacks
        cutoff = self._clock() - BUILDPACK_UNUSED_DAYS * 86400
        found = []
        for host_repo in sorted(p for p in host_top.iterdir() if p.is_dir()) if host_top.is_dir() else []:
            for host_dir in sorted(p for p in host_repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if _last_used(host_dir) >= cutoff:
                    continue
                found.append(_Found(GcItem(kind="buildpack", name=str(host_dir.relative_to(self._home.host_root)),
                                           size=_tree_size(host_dir),
                                           detail=f"git buildpack checkout unused for {BUILDPACK_UNUSED_DAYS} days"),
                                    lambda d=host_dir: _remove_checkout(d)))
        return found


def _last_used(host_dir: Path) -> float:
    """When a checkout was last used: each staging that uses it reads its bin/ scripts, which
    updates their access times (relatime: at least once a day). Only ``lstat`` is used here, and
    no folder is listed, so looking does not count as a use (a dry run changes nothing)."""
    times = []
    for name in _BUILDPACK_SCRIPTS:
        try:
            stat = (host_dir / "bin" / name).lstat()
        except OSError:
            continue
        times += [stat.st_atime, stat.st_mtime]
    if not times:
        try:
            times.append(host_dir.lstat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def _tree_size(host_dir: Path) -> int:
    total = 0
    for host_path in host_dir.rglob("*"):
        try:
            total += host_path.lstat().st_size
        except OSError:
            pass
    return total


def _remove_checkout(host_dir: Path) -> None:
    shutil.rmtree(host_dir)
    try:
        host_dir.parent.rmdir()  # the repository's folder, once its last checkout is gone
    except OSError:
        pass


def _epoch(iso: str) -> float:
    """Seconds since the epoch of an engine timestamp (nanosecond digits allowed); 0 if unreadable."""
    try:
        head, _, rest = iso.replace("Z", "+00:00").partition(".")
        zone = rest[rest.find("+"):] if "+" in rest else rest[rest.find("-"):] if "-" in rest else ""
        return dt.datetime.fromisoformat(head + zone).timestamp()
    except ValueError:
        return 0.0
