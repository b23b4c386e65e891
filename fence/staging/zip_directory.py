"""Checks a zip's end records and central directory against the limits before zipfile builds any entry."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fence.models import SourceLimits
from fence.staging.archive_check import refuse

# APPNOTE.TXT 4.3.16, 4.3.15, 4.3.14 and 4.3.12: the record layouts (little-endian).
_END = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
_LOCATOR = struct.Struct("<4sLQL")  # signature, disk of the zip64 end record, its offset, total disks
_END64 = struct.Struct("<4sQ2H2L4Q")  # signature, size, 2 versions, 2 disks, entries here, entries, size, offset
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # one central-directory record, before its name
_END_SIG, _LOCATOR_SIG, _END64_SIG, _CENTRAL_SIG = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06", b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF
# What the central directory may take: a record is 46 bytes plus name, extra field and comment,
# so 256 bytes an entry fits real archives (names of ~100 characters, the usual extra fields);
# the constant part leaves room for a few long names in a small archive.
METADATA_PER_ENTRY = 256
METADATA_BASE = 1024 * 1024


@dataclass(frozen=True)
class ZipDirectory:
    """Where a zip's central directory is and what it holds, as zipfile will read it.

    Attributes:
        entries: records in the central directory (counted, not as declared).
        size: its size in bytes.
        start: its offset in the file.
        zip64: whether a zip64 end record gave these figures.
    """

    entries: int
    size: int
    start: int
    zip64: bool


def metadata_limit(limits: SourceLimits) -> int:
    """The most bytes a zip's central directory may take (``METADATA_PER_ENTRY`` per allowed entry)."""
    return limits.max_files * METADATA_PER_ENTRY + METADATA_BASE


def check_zip_directory(host_archive: Path, *, limits: SourceLimits) -> ZipDirectory:
    """Read the end records of a zip and walk its central directory, refusing it over the limits.

    ``zipfile.ZipFile`` reads the whole central directory into memory and builds an object for
    every record before anyone can count them (a million empty entries cost it half a GiB). This
    runs first, in constant memory: it finds the end record as zipfile does (the last 22 bytes,
    else the last signature in the final 64 KiB), takes the zip64 end record when its locator is
    there, refuses a declared count or a directory size over the limits, then steps from record
    header to record header, counting, without keeping any.

    Args:
        host_archive: the zip file.
        limits: ``max_files`` bounds the entries, and with it the directory's bytes
            (``metadata_limit``).

    Returns:
        The directory as checked.

    Raises:
        SourceRefused: no end record, a spanned archive, a directory outside the file, more
            entries than ``max_files`` (naming the first one past it when it can be read), or a
            directory larger than ``metadata_limit``.
    """
    name = host_archive.name
    with open(host_archive, "rb", buffering=1024 * 1024) as handle:
        handle.seek(0, 2)
        file_size = handle.tell()
        at, end = _end_record(handle, file_size, name)
        _, disk, cd_disk, _, declared, size, offset, _ = end
        zip64 = False
        if at >= _LOCATOR.size:
            handle.seek(at - _LOCATOR.size)
            sig, end64_disk, end64_offset, disks = _LOCATOR.unpack(handle.read(_LOCATOR.size))
            if sig == _LOCATOR_SIG:
                if end64_disk != 0 or disks > 1:
                    raise refuse(name, "spans several disks (not supported)")
                end64 = _end64_record(handle, at)
                if end64 is not None:
                    zip64 = True
                    _, _, _, _, disk, cd_disk, _, declared, size, offset = end64
                    if end64_offset != offset + size:
                        raise refuse(name, "has a zip64 end record that is not where its locator points")
        if disk != 0 or cd_disk != 0:
            raise refuse(name, "spans several disks (not supported)")
        # As zipfile reckons it: the directory ends where the end records begin (data may precede the zip).
        start = at - size - (_LOCATOR.size + _END64.size if zip64 else 0)
        if declared > limits.max_files:
            # name the first entry past the limit when the records are there (bounded: max_files steps)
            past = _walk(handle, start=start, size=size, stop_after=limits.max_files) if start >= 0 else None
            entry: str | bytes = past if isinstance(past, bytes) else name
            raise refuse(entry, f"is past the limit of {limits.max_files} entries (max_files): the "
                                f"archive declares {declared}")
        if start < 0:
            raise refuse(name, f"declares a central directory of {size} bytes, more than the file holds")
        budget = metadata_limit(limits)
        if size > budget:
            raise refuse(name, f"has a central directory of {size} bytes, past the limit of {budget} "
                               f"({METADATA_PER_ENTRY} bytes per staging/max_files entry plus "
                               f"{METADATA_BASE // (1024 * 1024)} MiB)")
        counted = _walk(handle, start=start, size=size, stop_after=limits.max_files)
        if counted is None:
            raise refuse(name, "is not a readable zip archive (its central directory is damaged)")
        if isinstance(counted, bytes):
            raise refuse(counted, f"is past the limit of {limits.max_files} entries (max_files)")
        return ZipDirectory(entries=counted, size=size, start=start, zip64=zip64)


def _end_record(handle: BinaryIO, file_size: int, name: str) -> tuple[int, tuple[int, ...]]:
    """The end record's offset and fields, found where zipfile looks for it."""
    if file_size >= _END.size:
        handle.seek(file_size - _END.size)
        data = handle.read(_END.size)
        if data[:4] == _END_SIG and data[-2:] == b"\0\0":
            return file_size - _END.size, _END.unpack(data)
    window = max(file_size - _MAX_COMMENT - _END.size, 0)
    handle.seek(window)
    tail = handle.read()
    found = tail.rfind(_END_SIG)
    if found < 0 or len(tail) - found < _END.size:
        raise refuse(name, "is not a readable zip archive (no end-of-central-directory record)")
    return window + found, _END.unpack(tail[found:found + _END.size])


def _end64_record(handle: BinaryIO, at: int) -> tuple[int, ...] | None:
    """The zip64 end record just before its locator (where zipfile reads it), or None."""
    where = at - _LOCATOR.size - _END64.size
    if where < 0:
        return None
    handle.seek(where)
    record = _END64.unpack(handle.read(_END64.size))
    return record if record[0] == _END64_SIG else None


def _walk(handle: BinaryIO, *, start: int, size: int, stop_after: int) -> int | bytes | None:
    """Count the central-directory records as zipfile will parse them (it stops by bytes, not by
    the declared count), keeping none: the count, the name of record ``stop_after`` (0-based)
    when there is one, or None when a record is damaged."""
    total = 0
    count = 0
    handle.seek(start)
    while total < size:
        header = handle.read(_CENTRAL.size)
        if len(header) != _CENTRAL.size or header[:4] != _CENTRAL_SIG:
            return None  # zipfile refuses this too
        name_length, extra_length, comment_length = _CENTRAL.unpack(header)[12:15]
        if count == stop_after:
            return handle.read(name_length)
        handle.seek(name_length + extra_length + comment_length, 1)
        total += _CENTRAL.size + name_length + extra_length + comment_length
        count += 1
    return count
