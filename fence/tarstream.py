"""The tars fence builds (entries owned by the app user) and copies from the engine, never extracting them."""

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


_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE}


def tar_info(name: str, *, kind: str = "file", mode: int, uid: int, gid: int | None = None,
             mtime: float, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    """A tar header for a folder, file or symlink owned by ``uid`` (no user or group names).

    Args:
        name: the entry's relative path (a trailing ``/`` is dropped).
        kind: ``"file"``, ``"dir"`` or ``"link"``.
        mode: permission bits.
        uid: owner, and group unless ``gid`` is given.
        gid: group, when it differs from ``uid``.
        mtime: modification time (0 when the same input must always give the same bytes).
        size: a file's content length.
        linkname: a symlink's target.

    Returns:
        The header, ready for ``TarFile.addfile`` or ``tobuf``.

    Raises:
        ValueError: an unknown kind (a bug in the caller).
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown tar entry kind {kind!r}")
    info = tarfile.TarInfo(name.rstrip("/") if kind == "dir" else name)
    info.type, info.mode, info.mtime = _KINDS[kind], mode, mtime
    info.uid, info.gid = uid, uid if gid is None else gid
    info.uname = info.gname = ""
    info.size = size if kind == "file" else 0
    info.linkname = linkname
    return info


@dataclass(frozen=True)
class TarMember:
    """One entry of a tar built on the fly.

    Attributes:
        name: the entry's relative path.
        mode: permission bits.
        uid: owner, and group unless ``gid`` is given.
        data: a file's content, when it is small and in memory.
        host_file: a file to stream the content from (read once, in chunks), instead of ``data``.
        kind: ``"file"``, ``"dir"`` or ``"link"``.
        linkname: a symlink's target.
        gid: group, when it differs from ``uid``.
        mtime: modification time; ``None``: when the tar is built.
    """

    name: str
    mode: int
    uid: int
    data: bytes = b""
    host_file: Path | None = None
    kind: str = "file"
    linkname: str = ""
    gid: int | None = None
    mtime: float | None = None


def tar_stream(members: Iterable[TarMember]) -> Iterator[bytes]:
    """A tar archive of ``members`` as chunks, built while it is sent: a large file is read once
    from disk and never held in memory or re-packed.

    Raises:
        OSError: a host file cannot be read, or changed size while it was read.
    """
    now = time.time()
    for member in members:
        if member.kind == "file" and member.host_file is not None:
            yield from _streamed_file(member, now)
            continue
        size = len(member.data) if member.kind == "file" else 0
        yield _header(member, size, now)
        if size:
            yield member.data
            yield bytes(-size % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)


def _header(member: TarMember, size: int, now: float) -> bytes:
    info = tar_info(member.name, kind=member.kind, mode=member.mode, uid=member.uid, gid=member.gid,
                    mtime=now if member.mtime is None else member.mtime, size=size,
                    linkname=member.linkname)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _streamed_file(member: TarMember, now: float) -> Iterator[bytes]:
    assert member.host_file is not None
    with member.host_file.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        yield _header(member, size, now)
        yield from _exactly(handle, size, host_file=member.host_file)
    yield bytes(-size % tarfile.BLOCKSIZE)


def _exactly(handle: IO[bytes], size: int, *, host_file: Path) -> Iterator[bytes]:
    """The next ``size`` bytes of an open file, in chunks.

    Raises:
        OSError: the file ends sooner (it shrank while it was read).
    """
    left = size
    while left > 0:
        chunk = handle.read(min(_CHUNK, left))
        if not chunk:
            raise OSError(f"{host_file} shrank while it was read")
        left -= len(chunk)
        yield chunk


def tar_bytes(members: Iterable[TarMember]) -> bytes:
    """A small tar archive of ``members``, in memory (see ``tar_stream``)."""
    return b"".join(tar_stream(members))


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
            end = _entries_end(handle)
            handle.seek(0)
            yield from _exactly(handle, end, host_file=part)
    yield bytes(2 * tarfile.BLOCKSIZE)


def _entries_end(handle: IO[bytes]) -> int:
    """Where a seekable tar archive's end-of-archive marker starts (headers only are read)."""
    with tarfile.open(fileobj=handle, mode="r:") as tar:
        for _ in tar:
            pass
        return tar.offset
