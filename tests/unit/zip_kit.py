"""Zip files written record by record (APPNOTE layouts), so tests can make ones zipfile would not."""

from __future__ import annotations

import struct
from collections.abc import Iterable

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR = struct.Struct("<4sLQL")
_DOS_DATE = (1 << 5) | 1  # 1980-01-01
_UNIX_FILE = 0o100644 << 16


def central_record(name: bytes, offset: int, *, comment: bytes = b"") -> bytes:
    """One central-directory record of an empty stored file (UTF-8 flag set, made on Unix)."""
    return _CENTRAL.pack(b"PK\x01\x02", 20, 3, 20, 0, 0x800, 0, 0, _DOS_DATE, 0, 0, 0, len(name), 0,
                         len(comment), 0, 0, _UNIX_FILE, offset) + name + comment


def end_records(*, entries: int, cd_size: int, cd_offset: int, zip64: bool = False,
                locator_offset: int | None = None) -> bytes:
    """The end record (with the zip64 end record and locator before it when ``zip64``)."""
    if not zip64:
        return _END.pack(b"PK\x05\x06", 0, 0, entries, entries, cd_size, cd_offset, 0)
    end64_at = cd_offset + cd_size if locator_offset is None else locator_offset
    return (_END64.pack(b"PK\x06\x06", _END64.size - 12, 45, 45, 0, 0, entries, entries, cd_size, cd_offset)
            + _LOCATOR.pack(b"PK\x06\x07", 0, end64_at, 1)
            + _END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


def empty_files_zip(names: Iterable[str], *, zip64: bool = False, declared: int | None = None,
                    comment: bytes = b"") -> bytes:
    """A real zip of empty files (zipfile reads it); ``declared`` overrides the end record's count;
    ``comment`` goes on every central-directory record (to make the directory big)."""
    local, central = [], []
    offset = 0
    count = 0
    for name in names:
        raw = name.encode()
        header = _LOCAL.pack(b"PK\x03\x04", 20, 0, 0x800, 0, 0, _DOS_DATE, 0, 0, 0, len(raw), 0) + raw
        local.append(header)
        central.append(central_record(raw, offset, comment=comment))
        offset += len(header)
        count += 1
    directory = b"".join(central)
    return b"".join(local) + directory + end_records(
        entries=count if declared is None else declared, cd_size=len(directory), cd_offset=offset, zip64=zip64)


def declared_only_zip(entries: int) -> bytes:
    """A zip64 end record that declares ``entries`` entries and a matching directory size, with no
    entry written: cheap to make, and enough to make zipfile try to parse them all."""
    cd_size = entries * 53
    return b"PK\x03\x04" + b"\0" * 26 + end_records(entries=entries, cd_size=cd_size, cd_offset=30, zip64=True)
