"""The content-addressed droplet store: droplet files named by their sha256, written atomically."""

from __future__ import annotations

import contextlib
import gzip
import io
import hashlib
import os
import re
import tarfile
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from fence.atomic import fsync_dir
from fence.errors import DropletCorrupt, DropletNotFound
from fence.tarstream import copy_members, file_chunks, tar_info

_DIGEST = re.compile(r"[0-9a-f]{64}")


class _HashingWriter:
    """A file wrapper that hashes and counts what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


class DropletStore:
    """Droplet files in one folder, ``<sha256>.tgz``.

    A droplet is either absent or whole: it is written to a temporary file, fsynced, then renamed
    to its digest. Reading verifies nothing by default; ``verify`` re-hashes.
    """

    def __init__(self, *, host_dir: Path) -> None:
        self._host_dir = host_dir

    def write(self, *, app_tar: Iterable[bytes], extra_files: dict[str, bytes], uid: int,
              max_bytes: int | None = None) -> tuple[str, int]:
        """Pack a droplet from the container's ``app/`` tar stream plus extra top-level files.

        Entries keep their names (``app/…``) and modes; ownership is reset to ``uid:uid`` (the
        engine reports host-side ids under userns-remap). Device files are dropped.

        Args:
            app_tar: the tar stream of the compiled app folder (top entry ``app``).
            extra_files: name → content, added at the top (``staging_info.yml``).
            uid: owner of every entry.
            max_bytes: the most bytes ``app_tar`` may bring (checked while it is read); ``None``: no cap.

        Returns:
            The droplet's digest and size in bytes.

        Raises:
            OSError: the disk is full or unwritable (no partial droplet is left).
            StreamTooLarge: ``app_tar`` passed ``max_bytes`` (no partial droplet is left).
        """
        self._host_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".droplet-", suffix=".tmp", dir=self._host_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                hashing = _HashingWriter(handle)
                with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=3, mtime=0) as gz, \
                        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as out:
                    now = time.time()
                    for name, data in extra_files.items():
                        out.addfile(tar_info(name, mode=0o644, uid=uid, mtime=now, size=len(data)), io.BytesIO(data))
                    copy_members(app_tar, out, uid=uid, max_bytes=max_bytes)
                handle.flush()
                os.fsync(handle.fileno())
            digest = hashing.sha256.hexdigest()
            os.replace(tmp_name, self._host_dir / f"{digest}.tgz")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        fsync_dir(self._host_dir)
        return digest, hashing.size

    def host_path(self, digest: str) -> Path:
        """The droplet file of a digest.

        Raises:
            DropletNotFound: a malformed digest, or no such droplet.
        """
        if not _DIGEST.fullmatch(digest or ""):
            raise DropletNotFound(droplet=digest)
        path = self._host_dir / f"{digest}.tgz"
        if not path.is_file():
            raise DropletNotFound(droplet=digest)
        return path

    def touch(self, digest: str) -> bool:
        """Mark a droplet as just used (its file's times set to now), so that a garbage
        collection running while it is being reused leaves it be; returns whether it is there."""
        try:
            os.utime(self.host_path(digest))
        except (DropletNotFound, FileNotFoundError):
            return False
        return True

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The droplet file's bytes, in chunks.

        Raises:
            DropletNotFound: no such droplet.
        """
        return file_chunks(self.host_path(digest))

    def verify(self, digest: str) -> None:
        """Re-hash a droplet.

        Raises:
            DropletNotFound: no such droplet.
            DropletCorrupt: its content no longer matches its name.
        """
        sha = hashlib.sha256()
        for chunk in self.chunks(digest):
            sha.update(chunk)
        if sha.hexdigest() != digest:
            raise DropletCorrupt(droplet=digest, why=f"content hashes to {sha.hexdigest()[:12]}")

    def delete(self, digest: str) -> None:
        """Remove a droplet file; a missing one is fine."""
        with contextlib.suppress(DropletNotFound, FileNotFoundError):
            self.host_path(digest).unlink()

    def digests(self) -> list[str]:
        """Every droplet in the store."""
        if not self._host_dir.is_dir():
            return []
        return sorted(p.stem for p in self._host_dir.glob("*.tgz") if _DIGEST.fullmatch(p.stem))

    def remove_partials(self) -> int:
        """Delete temporary files a crash left behind; returns how many."""
        removed = 0
        for path in self._host_dir.glob(".droplet-*.tmp") if self._host_dir.is_dir() else []:
            path.unlink(missing_ok=True)
            removed += 1
        return removed
