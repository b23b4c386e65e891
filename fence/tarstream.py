"""Copies tar streams from the engine into local tar files with ownership reset, never extracting them."""

from __future__ import annotations

import io
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from fence.atomic import atomic_file

_CHUNK = 1024 * 1024


class StreamTooLarge(Exception):
    """A stream brought more bytes than its cap; what was written from it must not be kept.

    Attributes:
        max_bytes: the cap that was passed.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the stream is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class ChunkReader:
    """A ``read()``-able file over an iterable of byte chunks (the engine's tar stream).

    Args:
        chunks: the stream.
        max_bytes: the most bytes it may bring; one more raises ``StreamTooLarge`` from ``read``
            as soon as it arrives (``None``: no cap).
    """

    def __init__(self, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._max_bytes = max_bytes
        self._seen = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative).

        Raises:
            StreamTooLarge: the stream passed ``max_bytes``.
        """
        while size < 0 or len(self._buffer) < size:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            self._seen += len(chunk)
            if self._max_bytes is not None and self._seen > self._max_bytes:
                self.close()
                raise StreamTooLarge(self._max_bytes)
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        """Stop reading: the stream is closed (a generator's ``close``) and let go of now, so the
        engine's side of it ends (the engine holds a container it is archiving)."""
        chunks, self._chunks = self._chunks, iter(())
        self._buffer = bytearray()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def copy_members(chunks: Iterable[bytes], out: tarfile.TarFile, *, uid: int,
                 max_bytes: int | None = None) -> int:
    """Copy the files, folders and symlinks of a tar stream into ``out``, owned by ``uid:uid``.

    Device files, FIFOs and hard links are dropped: nothing a staging produced needs them.

    Args:
        chunks: the tar stream.
        out: where the entries go.
        uid: owner and group of every entry.
        max_bytes: the most bytes the stream may bring (headers, content and what is dropped),
            counted while it is read; ``None``: no cap.

    Returns:
        How many entries were copied.

    Raises:
        StreamTooLarge: the stream passed ``max_bytes`` (``out`` holds a part: discard it).
    """
    copied = 0
    with tarfile.open(fileobj=ChunkReader(chunks, max_bytes=max_bytes), mode="r|") as source:
        for member in source:
            if not (member.isfile() or member.isdir() or member.issym()):
                continue
            member.uid = member.gid = uid
            member.uname = member.gname = ""
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
            copied += 1
    return copied


def file_chunks(host_file: Path) -> Iterator[bytes]:
    """A file's bytes in chunks (for streaming into a container)."""
    with host_file.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def save_owned_tar(chunks: Iterable[bytes], host_out: Path, *, uid: int, max_bytes: int | None = None) -> None:
    """Write a tar stream to ``host_out`` atomically, with ownership reset to ``uid``.

    Raises:
        OSError: the disk is full or unwritable (the old file, if any, stays).
        StreamTooLarge: the stream passed ``max_bytes`` (nothing of it is kept; the old file stays).
    """
    host_out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(host_out) as handle, \
            tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT) as out:
        copy_members(chunks, out, uid=uid, max_bytes=max_bytes)


def as_stream(handle: IO[bytes]) -> Iterator[bytes]:
    """An open binary file as chunks."""
    while chunk := handle.read(_CHUNK):
        yield chunk


@dataclass(frozen=True)
class TarMember:
    """One entry of a tar stream built on the fly.

    Attributes:
        name: the entry's relative path.
        mode: permission bits.
        uid: owner and group.
        data: a file's content, when it is small and in memory.
        host_file: a file to stream the content from (read once, in chunks), instead of ``data``.
        directory: a folder rather than a file.
    """

    name: str
    mode: int
    uid: int
    data: bytes = b""
    host_file: Path | None = None
    directory: bool = False


def tar_stream(members: Iterable[TarMember]) -> Iterator[bytes]:
    """A tar archive of ``members`` as chunks, built while it is sent: a large file is read once
    from disk and never held in memory or re-packed.

    Raises:
        OSError: a host file cannot be read, or changed size while it was read.
    """
    now = time.time()
    for member in members:
        info = tarfile.TarInfo(member.name)
        info.mode, info.uid, info.gid, info.mtime = member.mode, member.uid, member.uid, now
        if member.directory:
            info.type = tarfile.DIRTYPE
            yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            continue
        if member.host_file is None:
            info.size = len(member.data)
            yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            yield member.data
        else:
            with member.host_file.open("rb") as handle:
                info.size = os.fstat(handle.fileno()).st_size
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                left = info.size
                while left > 0:
                    chunk = handle.read(min(_CHUNK, left))
                    if not chunk:
                        raise OSError(f"{member.host_file} shrank while it was read")
                    left -= len(chunk)
                    yield chunk
        yield bytes(-info.size % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)


def concat_tars(parts: Iterable[bytes | Path]) -> Iterator[bytes]:
    """Several tar archives (in memory or files) as one stream: each part's entries in order,
    one end-of-archive marker at the end; one engine call unpacks them all.

    Raises:
        tarfile.TarError: a part is not a tar archive.
        OSError: a file cannot be read.
    """
    for part in parts:
        if isinstance(part, (bytes, bytearray)):
            yield bytes(part[:_entries_end(io.BytesIO(part))])
            continue
        with part.open("rb") as handle:
            left = _entries_end(handle)
            handle.seek(0)
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{part} shrank while it was read")
                left -= len(chunk)
                yield chunk
    yield bytes(2 * tarfile.BLOCKSIZE)


def _entries_end(handle: IO[bytes]) -> int:
    """Where a seekable tar archive's end-of-archive marker starts (headers only are read)."""
    with tarfile.open(fileobj=handle, mode="r:") as tar:
        for _ in tar:
            pass
        return tar.offset
