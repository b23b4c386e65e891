"""Copies tar streams from the engine into local tar files with ownership reset, never extracting them."""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

_CHUNK = 1024 * 1024


class ChunkReader:
    """A ``read()``-able file over an iterable of byte chunks (the engine's tar stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative)."""
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def copy_members(chunks: Iterable[bytes], out: tarfile.TarFile, *, uid: int) -> int:
    """Copy the files, folders and symlinks of a tar stream into ``out``, owned by ``uid:uid``.

    Device files, FIFOs and hard links are dropped: nothing a staging produced needs them.

    Returns:
        How many entries were copied.
    """
    copied = 0
    with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as source:
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


def save_owned_tar(chunks: Iterable[bytes], host_out: Path, *, uid: int) -> None:
    """Write a tar stream to ``host_out`` atomically, with ownership reset to ``uid``.

    Raises:
        OSError: the disk is full or unwritable (the old file, if any, stays).
    """
    host_out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{host_out.name}.", dir=host_out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT) as out:
                copy_members(chunks, out, uid=uid)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, host_out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def as_stream(handle: IO[bytes]) -> Iterator[bytes]:
    """An open binary file as chunks."""
    while chunk := handle.read(_CHUNK):
        yield chunk
