"""Writes files atomically: a temporary file beside the target, fsynced, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_file(host_file: Path, *, mode: int | None = None, prefix: str | None = None,
                suffix: str = "", sync_dir: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``host_file`` only when the block ends without error.

    After a crash the target is either the old file or the whole new one; on an error the
    temporary file is removed and the old file stays.

    Args:
        host_file: the file to write (its folder must exist).
        mode: permission bits for the new file (default: mkstemp's 0600).
        prefix: name prefix of the temporary file (default ``.NAME.``).
        suffix: name suffix of the temporary file.
        sync_dir: also fsync the folder, so the rename itself survives a crash.

    Raises:
        OSError: the disk is full or unwritable.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=prefix if prefix is not None else f".{host_file.name}.",
                                    suffix=suffix, dir=host_file.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        os.replace(tmp_name, host_file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    if sync_dir:
        fsync_dir(host_file.parent)


def fsync_dir(host_dir: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    fd = os.open(host_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
