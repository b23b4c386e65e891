"""The checked source each droplet was staged from, kept under FENCE_HOME/sources so apps can be restaged."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from fence.atomic import atomic_file
from fence.errors import SourceNotKept
from fence.home import NodeHome
from fence.models import PreparedSource
from fence.staging.sources import SOURCE_TAR_NAME
from fence.wire import from_wire, to_wire

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class KeptSource:
    """A source ready to stage again.

    Attributes:
        source: the packed source, its tar in the caller's scratch folder.
        buildpacks: the buildpack specs the developer gave when it was first staged.
    """

    source: PreparedSource
    buildpacks: tuple[str, ...]


@dataclass(frozen=True)
class KeptFile:
    """One kept source on disk, for garbage collection.

    Attributes:
        app: the app's name.
        droplet: the droplet staged from it.
        host_files: its files (the gzipped tar and its description).
        size: their bytes.
    """

    app: str
    droplet: str
    host_files: tuple[Path, ...]
    size: int


class KeptSources:
    """Sources by app and droplet: ``sources/APP/DROPLET.tar.gz`` (the checked tar, gzipped) and
    ``DROPLET.json`` (its manifest, Procfile, origin, commit and the buildpacks asked for).

    Written atomically (temporary file, then rename), so a crash leaves a source whole or absent.

    Args:
        home: FENCE_HOME (``NodeHome.host_sources`` and ``host_app_sources``).
    """

    def __init__(self, *, home: NodeHome) -> None:
        self._home = home

    def save(self, *, app: str, droplet: str, source: PreparedSource, buildpacks: tuple[str, ...]) -> None:
        """Keep the source a droplet was staged from.

        Raises:
            OSError: the disk is full or unwritable (nothing half-written is left).
        """
        host_dir = self._home.host_app_sources(app)
        host_dir.mkdir(parents=True, exist_ok=True)
        described = {"source": to_wire(dataclasses.replace(source, host_tar=Path(SOURCE_TAR_NAME))),
                     "buildpacks": list(buildpacks)}
        with atomic_file(host_dir / f"{droplet}.tar.gz", prefix=".", suffix=".tmp") as handle, \
                gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=3, mtime=0) as packed, \
                source.host_tar.open("rb") as raw:
            shutil.copyfileobj(raw, packed, _CHUNK)
        with atomic_file(host_dir / f"{droplet}.json", prefix=".", suffix=".tmp") as handle:
            handle.write(json.dumps(described, sort_keys=True).encode())

    def load(self, *, app: str, droplet: str, host_workdir: Path) -> KeptSource:
        """Unpack a kept source's tar into ``host_workdir`` (the tar stays a tar: nothing is extracted).

        Raises:
            SourceNotKept: no source was kept for that droplet.
        """
        host_dir = self._home.host_app_sources(app)
        host_tar_gz, host_json = host_dir / f"{droplet}.tar.gz", host_dir / f"{droplet}.json"
        if not _DIGEST.fullmatch(droplet) or not host_tar_gz.is_file() or not host_json.is_file():
            raise SourceNotKept(app=app, droplet=droplet[:12])
        described = json.loads(host_json.read_text())
        host_workdir.mkdir(parents=True, exist_ok=True)
        host_tar = host_workdir / SOURCE_TAR_NAME
        with gzip.open(host_tar_gz, "rb") as packed, host_tar.open("wb") as raw:
            shutil.copyfileobj(packed, raw, _CHUNK)
        source = dataclasses.replace(from_wire(PreparedSource, described["source"]), host_tar=host_tar)
        return KeptSource(source=source, buildpacks=tuple(str(b) for b in described.get("buildpacks", [])))

    def has(self, *, app: str, droplet: str) -> bool:
        """Whether a source is kept for the droplet."""
        host_dir = self._home.host_app_sources(app)
        return (host_dir / f"{droplet}.tar.gz").is_file() and (host_dir / f"{droplet}.json").is_file()

    def touch(self, *, app: str, droplet: str) -> bool:
        """Mark a kept source as just used (its files' times set to now, so a garbage collection
        running meanwhile leaves it be); returns whether it is kept."""
        if not _DIGEST.fullmatch(droplet):
            return False
        host_dir = self._home.host_app_sources(app)
        try:
            for host_file in (host_dir / f"{droplet}.tar.gz", host_dir / f"{droplet}.json"):
                os.utime(host_file)
        except FileNotFoundError:
            return False
        return True

    def files(self) -> list[KeptFile]:
        """Every kept source, by app then droplet (temporary files of a crashed write included,
        under the droplet name ``.tmp``)."""
        found: list[KeptFile] = []
        host_top = self._home.host_sources
        if not host_top.is_dir():
            return found
        for host_dir in sorted(p for p in host_top.iterdir() if p.is_dir()):
            groups: dict[str, list[Path]] = {}
            for host_file in sorted(host_dir.iterdir()):
                name = host_file.name
                droplet = name.split(".", 1)[0] if _DIGEST.fullmatch(name.split(".", 1)[0]) else ".tmp"
                groups.setdefault(droplet, []).append(host_file)
            for droplet, host_files in sorted(groups.items()):
                size = sum(f.lstat().st_size for f in host_files)
                found.append(KeptFile(app=host_dir.name, droplet=droplet, host_files=tuple(host_files), size=size))
        return found

    def remove(self, kept: KeptFile) -> None:
        """Remove a kept source's files (and the app's folder once it is empty)."""
        for host_file in kept.host_files:
            with contextlib.suppress(FileNotFoundError):
                host_file.unlink()
        with contextlib.suppress(OSError):
            self._home.host_app_sources(kept.app).rmdir()

    def prune(self, *, app: str, keep: set[str]) -> None:
        """Remove the app's kept sources whose droplet is not in ``keep``."""
        for kept in self.files():
            if kept.app == app and kept.droplet not in keep and kept.droplet != ".tmp":
                self.remove(kept)
