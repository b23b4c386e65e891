"""Reads tar and zip archives of app source as checked entries, both through one member loop."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol

from fence.errors import SourceRefused
from fence.models import SourceLimits
from fence.staging.archive_check import (
    READ_ERRORS,
    Entry,
    check_name,
    refuse,
    tar_member_entry,
    zip_member_entry,
)
from fence.staging.ignores import IGNORE_FILES, MAX_IGNORE_FILE_BYTES, IgnoreRules
from fence.staging.manifest import MANIFEST_NAMES, MAX_MANIFEST_BYTES
from fence.staging.procfile import MAX_PROCFILE_BYTES
from fence.staging.zip_directory import check_zip_directory

# Root-level files read before packing, each with the most bytes worth reading.
SPECIALS = {**{name: MAX_MANIFEST_BYTES for name in MANIFEST_NAMES}, "Procfile": MAX_PROCFILE_BYTES,
             **{name: MAX_IGNORE_FILE_BYTES for name in IGNORE_FILES}}


class SourceReader(Protocol):
    """One kind of source: read its root-level special files, list its entries, stream their data."""

    ignored: list[str]
    unwrapped: str | None  # the one top folder of an archive whose contents are the app

    def specials(self) -> dict[str, bytes | None]:
        """Root-level special files by name: bounded content, or None when not a regular file."""

    def scan(self, rules: IgnoreRules) -> list[Entry]:
        """Every checked entry in source order (a reader may leave ignored ones out)."""

    def data(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, BinaryIO | None]]:
        """Each planned entry, in order, with its content stream when it is a file."""


def too_many(name: str, limits: SourceLimits) -> SourceRefused:
    """The refusal of the entry that passes ``max_files``."""
    return refuse(name, f"is past the limit of {limits.max_files} entries (max_files)")


def too_big(name: str, limits: SourceLimits) -> SourceRefused:
    """The refusal of the entry that brings the source past ``max_bytes``."""
    return refuse(name, f"brings the source past {limits.max_bytes} bytes (limit max_bytes)")


class _OneFolder:
    """Whether every entry of an archive lies in one top folder, as GitHub's downloads and
    ``git archive --prefix`` make them: then that folder's contents are the app (as on Heroku).

    While that is still possible, the special files one level down (manifest, Procfile, ignore
    files) are kept too, at most one of each: there is only one folder they can be in.
    """

    def __init__(self) -> None:
        self.top: str | None = None
        self.possible = True
        self.nested: dict[str, bytes | None] = {}

    def note(self, entry: Entry) -> str | None:
        """Take an entry in; returns the special file's name if it is one inside the top folder."""
        if not self.possible:
            return None
        if self.top is None:
            self.top = entry.parts[0]
        if entry.parts[0] != self.top or (len(entry.parts) == 1 and entry.kind != "dir"):
            self.possible = False
            self.nested.clear()
            return None
        return entry.parts[1] if len(entry.parts) == 2 and entry.parts[1] in SPECIALS else None

    def applies(self, entries: Sequence[Entry]) -> bool:
        """Whether the archive is one folder with something in it."""
        return self.possible and any(len(entry.parts) > 1 for entry in entries)

    def strip(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries relative to the top folder (the folder itself left out)."""
        stripped = []
        for entry in entries:
            if len(entry.parts) == 1:
                continue
            target = entry.target
            if entry.kind == "hardlink" and target.startswith(f"{self.top}/"):
                target = target[len(self.top) + 1:]  # type: ignore[arg-type]
            stripped.append(dataclasses.replace(entry, parts=entry.parts[1:], target=target))
        return stripped


def archive_reader(host_archive: Path, *, limits: SourceLimits, unwrap: bool) -> SourceReader:
    """A reader for a tar (plain or compressed) or zip file, told apart by content.

    Args:
        host_archive: the archive.
        limits: size, count, depth and path-length bounds.
        unwrap: whether an archive whose entries all lie in one folder is read as that
            folder's contents (archives a user gave: GitHub downloads); False for an archive
            a client packed from a folder, which is taken as it is.
    """
    with open(host_archive, "rb") as probe:
        magic = probe.read(6)
    if magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _ZipReader(host_archive, limits=limits, unwrap=unwrap)
    return _TarReader(host_archive, limits=limits, unwrap=unwrap)


@dataclasses.dataclass(frozen=True)
class _Member:
    """One archive member as the shared member loop sees it: its stored name, how to check it,
    and how to read the start of its content."""

    name: str
    entry: Callable[[], Entry | None]
    read: Callable[[int], bytes]


class _ArchiveReader:
    """What tar and zip readers share: one pass over the members builds the entries (counted and
    size-capped), reads the special files, and finds an archive of one folder."""

    def __init__(self, host_archive: Path, *, limits: SourceLimits, unwrap: bool) -> None:
        self._host_archive = host_archive
        self._limits = limits
        self._unwrap = unwrap
        self._entries: list[Entry] = []
        self.ignored: list[str] = []
        self.unwrapped: str | None = None

    def _scan_members(self, members: Iterable[_Member]) -> dict[str, bytes | None]:
        """Check every member in order; returns the special files at the app root.

        When ``unwrap`` holds and every entry lies in one folder, that folder's contents are the
        app: the entries are made relative to it and its special files are the app's.
        """
        found: dict[str, bytes | None] = {}
        one = _OneFolder()
        total = 0
        for index, member in enumerate(members):
            if index >= self._limits.max_files:
                raise too_many(member.name, self._limits)
            entry = member.entry()
            if entry is None:
                continue
            self._entries.append(entry)
            if entry.kind == "file":
                total += entry.size
                if total > self._limits.max_bytes:
                    raise too_big(member.name, self._limits)
            nested = one.note(entry) if self._unwrap else None
            for name, into in ((entry.path if len(entry.parts) == 1 else None, found), (nested, one.nested)):
                if name in SPECIALS:
                    into[name] = member.read(SPECIALS[name] + 1) if entry.kind == "file" else None
        if self._unwrap and one.applies(self._entries):
            self._entries, self.unwrapped = one.strip(self._entries), one.top
            return one.nested
        return found

    def scan(self, rules: IgnoreRules) -> list[Entry]:
        return self._entries


class _Capped:
    """The decompressed tar stream, refusing to yield more than the archive can honestly hold."""

    def __init__(self, stream: BinaryIO, *, name: str, limit: int) -> None:
        self._stream = stream
        self._name = name
        self.limit = limit
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size >= 0 else 1024 * 1024)
        self.total += len(data)
        if self.total > self.limit:
            raise refuse(self._name, f"expands to more than {self.limit} bytes of tar data "
                                     "(limit max_bytes plus headers)")
        return data


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses extended headers (pax, GNU long names) bigger than a path could need, before reading them."""

    max_extended = 64 * 1024

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                    tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > self.max_extended:
            raise refuse(self.name, f"is an extended tar header of {self.size} bytes (at most "
                                    f"{self.max_extended} allowed)")
        return super()._proc_member(tarfile_)


class _TarReader(_ArchiveReader):
    """A tar, plain or gzip/bzip2/xz-compressed, read twice as a stream: once to check, once to pack."""

    def __init__(self, host_archive: Path, *, limits: SourceLimits, unwrap: bool) -> None:
        super().__init__(host_archive, limits=limits, unwrap=unwrap)
        self._extended = 2 * limits.max_path + 8192
        # What one member may cost beyond its data: header, extended headers, padding.
        self._per_member = 4 * 512 + 2 * self._extended
        self._limit = limits.max_bytes + self._per_member

    @contextmanager
    def _open(self) -> Iterator[tuple[tarfile.TarFile, _Capped]]:
        guard = type("_Guard", (_GuardedTarInfo,), {"max_extended": self._extended})
        with ExitStack() as stack:
            raw = stack.enter_context(open(self._host_archive, "rb"))
            magic = raw.read(6)
            raw.seek(0)
            stream: BinaryIO = raw
            if magic[:2] == b"\x1f\x8b":
                stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[arg-type]
            elif magic[:3] == b"BZh":
                stream = stack.enter_context(bz2.BZ2File(raw))  # type: ignore[arg-type]
            elif magic == b"\xfd7zXZ\x00":
                stream = stack.enter_context(lzma.LZMAFile(raw))  # type: ignore[arg-type]
            capped = _Capped(stream, name=self._host_archive.name, limit=self._limit)
            try:
                with tarfile.open(fileobj=capped, mode="r|", tarinfo=guard) as archive:  # type: ignore[arg-type]
                    yield archive, capped
            except READ_ERRORS as exc:
                raise refuse(self._host_archive.name, "is not a readable tar or zip archive "
                                                      f"({type(exc).__name__}: {str(exc)[:160]})") from None

    def specials(self) -> dict[str, bytes | None]:
        with self._open() as (archive, capped):
            return self._scan_members(self._members(archive, capped))

    def _members(self, archive: tarfile.TarFile, capped: _Capped) -> Iterator[_Member]:
        for index, member in enumerate(archive):
            # the stream may now hold this member's data and the next member's headers
            capped.limit = self._limit = self._limits.max_bytes + (index + 2) * self._per_member
            yield _Member(name=member.name, entry=partial(tar_member_entry, index, member, limits=self._limits),
                          read=partial(_read_tar_member, archive, member))

    def data(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, BinaryIO | None]]:
        wanted = {entry.ref: entry for entry in entries}
        strip = 0 if self.unwrapped is None else 1
        with self._open() as (archive, _):
            for index, member in enumerate(archive):
                entry = wanted.get(index)
                if entry is None:
                    continue
                if check_name(member.name, limits=self._limits)[strip:] != entry.parts:
                    raise refuse(member.name, "changed while the archive was being read")
                yield entry, archive.extractfile(member) if entry.kind == "file" else None


def _read_tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    handle = archive.extractfile(member)
    return handle.read(limit) if handle is not None else b""


class _ZipReader(_ArchiveReader):
    """A zip archive: names, types and sizes from its central directory (checked against the
    limits before zipfile reads it), content bounded as read."""

    @contextmanager
    def _open(self) -> Iterator[zipfile.ZipFile]:
        try:
            with zipfile.ZipFile(self._host_archive) as archive:
                yield archive
        except READ_ERRORS as exc:
            raise refuse(self._host_archive.name, "is not a readable zip archive "
                                                  f"({type(exc).__name__}: {str(exc)[:160]})") from None

    def specials(self) -> dict[str, bytes | None]:
        check_zip_directory(self._host_archive, limits=self._limits)
        with self._open() as archive:
            return self._scan_members(
                _Member(name=info.filename,
                        entry=partial(zip_member_entry, archive, index, info, limits=self._limits),
                        read=partial(_read_zip_member, archive, info))
                for index, info in enumerate(archive.infolist()))

    def data(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, BinaryIO | None]]:
        with self._open() as archive:
            infos = archive.infolist()
            for entry in entries:
                if entry.kind != "file":
                    yield entry, None
                    continue
                assert isinstance(entry.ref, int)
                with archive.open(infos[entry.ref]) as handle:
                    yield entry, handle  # type: ignore[misc]


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    with archive.open(info) as handle:
        return handle.read(limit)
