"""Turns app source (a folder, a .tar[.gz]/.zip archive or a git URL) into a checked tar for staging."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from fence.errors import SourceRefused, UsageError
from fence.models import Manifest, PreparedSource, SourceLimits
from fence.staging.archive_check import (
    READ_ERRORS,
    Entry,
    Repacker,
    check_link_target,
    check_name,
    describe_mode,
    plan_entries,
    refuse,
    tar_member_entry,
    zip_member_entry,
)
from fence.rules import looks_like_git_url, parse_git_spec
from fence.staging.gitfetch import fetch
from fence.staging.ignores import (
    IGNORE_FILES,
    MAX_IGNORE_FILE_BYTES,
    IgnoreRules,
    parse_ignore_file,
)
from fence.staging.manifest import MANIFEST_NAMES, MAX_MANIFEST_BYTES, parse_manifest
from fence.staging.procfile import MAX_PROCFILE_BYTES, parse_procfile

SOURCE_TAR_NAME = "app-source.tar"
APP_PREFIX = "app"
# Root-level files read before packing, each with the most bytes worth reading.
_SPECIALS = {**{name: MAX_MANIFEST_BYTES for name in MANIFEST_NAMES}, "Procfile": MAX_PROCFILE_BYTES,
             **{name: MAX_IGNORE_FILE_BYTES for name in IGNORE_FILES}}


def prepare_source(origin: str, *, host_workdir: Path, limits: SourceLimits, uid: int,
                   gid: int) -> PreparedSource:
    """Check app source and pack it as ``host_workdir/app-source.tar`` for a staging container.

    Nothing from an archive is ever unpacked on the host: members are read and re-written into
    a new tar. Its layout: a directory ``app`` first, then every entry as ``app/<path>``, parents
    before children, all owned by ``uid:gid`` with empty user and group names; directories
    0755, files 0755 when the owner-execute bit was set else 0644, symlinks only when they
    resolve inside the app, hardlinks rewritten as regular files. ``.git`` is never shipped;
    ``.stackatoignore``, ``.cfignore``, ``.slugignore`` and the manifest's ``ignores:`` are
    honoured. Names must be UTF-8: others are refused, not guessed at. For archives the limits
    count every member, ignored or not; for folders and git checkouts ignored directories are
    not even walked.

    Args:
        origin: a folder, a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` file (recognised by content),
            a git URL (``https://``, ``ssh://``, ``git://``, ``file://``, optional ``#ref``), or a
            local repository folder with ``#ref``.
        host_workdir: where the tar (and a temporary git clone) are written; created if missing.
        limits: size, count, depth and path-length bounds.
        uid: owner of every entry in the tar.
        gid: group of every entry in the tar.

    Returns:
        The packed source, with the parsed manifest (``Manifest()`` if none) and Procfile.

    Raises:
        SourceRefused: an entry fence will not stage, or a limit passed (one line naming it).
        ManifestInvalid: the manifest cannot be used.
        InvalidName: the manifest names a bad app or env variable name.
        ProcfileInvalid: a bad Procfile line.
        UsageError: the origin does not exist, or the git repository or ref cannot be fetched.
    """
    host_workdir.mkdir(parents=True, exist_ok=True)
    host_clone_parent: Path | None = None
    try:
        commit: str | None = None
        git_url = _git_url(origin)
        if git_url is not None:
            spec = parse_git_spec(git_url, what="source")
            shown = spec.display()
            host_clone_parent = Path(tempfile.mkdtemp(prefix="git-source-", dir=host_workdir))
            commit = fetch(spec, host_clone_parent / "repo", what="source")
            reader: _Reader = _DirectoryReader(host_clone_parent / "repo", limits=limits)
        elif os.path.isdir(origin):
            shown = origin
            reader = _DirectoryReader(Path(origin), limits=limits, skip=(host_workdir,))
        elif os.path.isfile(origin):
            shown = origin
            reader = _archive_reader(Path(origin), limits=limits)
        else:
            raise UsageError(detail=f"source {origin[:200]!r}: no such folder or archive, and not "
                                    "a git URL")
        host_tar = host_workdir / SOURCE_TAR_NAME
        manifest, procfile, notes, repacker = _pack(reader, host_out=host_tar, uid=uid, gid=gid,
                                                    limits=limits, prefix=APP_PREFIX, compress=False)
        return PreparedSource(host_tar=host_tar, files=repacker.entries, size=repacker.size,
                              origin=shown, commit=commit, manifest=manifest, procfile=procfile,
                              warnings=notes)
    finally:
        if host_clone_parent is not None:
            shutil.rmtree(host_clone_parent, ignore_errors=True)


def pack_directory_for_upload(host_dir: Path, host_out: Path, *, limits: SourceLimits) -> int:
    """Pack a local app folder as a ``.tar.gz`` for ``fence push`` to upload.

    The same checks as ``prepare_source`` run here (early, friendly errors); the daemon runs
    them again on what arrives. Entries sit at the archive root (no ``app/`` prefix), owned by
    0:0; ignore files and the manifest's ``ignores:`` are honoured and ``.git`` is left out.

    Args:
        host_dir: the app folder (walked without following symlinks).
        host_out: the ``.tar.gz`` to write (replaced atomically).
        limits: size, count, depth and path-length bounds.

    Returns:
        The number of entries packed.

    Raises:
        SourceRefused: an entry that would be refused by the daemon, or a limit passed.
        ManifestInvalid: the manifest cannot be used.
        InvalidName: a bad app or env variable name in the manifest.
        ProcfileInvalid: a bad Procfile line.
        UsageError: ``host_dir`` is not a folder.
    """
    if not host_dir.is_dir():
        raise UsageError(detail=f"{str(host_dir)[:200]!r} is not a folder")
    reader = _DirectoryReader(host_dir, limits=limits, skip=(host_out,))
    *_, repacker = _pack(reader, host_out=host_out, uid=0, gid=0, limits=limits, prefix=None,
                         compress=True)
    return repacker.entries


class _Reader(Protocol):
    """One kind of source: read its root-level special files, list its entries, stream their data."""

    ignored: list[str]
    unwrapped: str | None  # the one top folder of an archive whose contents are the app

    def specials(self) -> dict[str, bytes | None]:
        """Root-level special files by name: bounded content, or None when not a regular file."""

    def scan(self, rules: IgnoreRules) -> list[Entry]:
        """Every checked entry in source order (a reader may leave ignored ones out)."""

    def data(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, BinaryIO | None]]:
        """Each planned entry, in order, with its content stream when it is a file."""


def _pack(reader: _Reader, *, host_out: Path, uid: int, gid: int, limits: SourceLimits,
          prefix: str | None, compress: bool,
          ) -> tuple[Manifest, Mapping[str, str] | None, tuple[str, ...], Repacker]:
    specials = reader.specials()
    notes = [f"{name} is not a regular file; not read" for name, data in specials.items() if data is None]
    if reader.unwrapped is not None:
        notes.insert(0, f"the archive holds one folder, {reader.unwrapped}/: staging what is inside it")
    manifest_name = next((name for name in MANIFEST_NAMES if name in specials), None)
    manifest_data = specials.get(manifest_name) if manifest_name else None
    manifest = (parse_manifest(manifest_data, source_name=manifest_name)
                if manifest_name and manifest_data is not None else Manifest())
    procfile_data = specials.get("Procfile")
    procfile = parse_procfile(procfile_data) if procfile_data is not None else None
    patterns: list[str] = []
    for name in IGNORE_FILES:
        data = specials.get(name)
        if data is not None:
            patterns.extend(parse_ignore_file(data, source=name))
    rules = IgnoreRules(patterns=tuple(patterns) + manifest.ignores)
    plan = plan_entries(reader.scan(rules), rules=rules, already_ignored=reader.ignored)
    with Repacker(host_out=host_out, uid=uid, gid=gid, limits=limits, prefix=prefix,
                  compress=compress) as repacker:
        for entry, stream in reader.data(plan.entries):
            repacker.add(entry, stream)
    return manifest, procfile, tuple(notes) + plan.warnings, repacker


def _git_url(origin: str) -> str | None:
    if looks_like_git_url(origin):
        return origin
    path, sep, ref = origin.partition("#")
    if sep and not os.path.exists(origin) and os.path.isdir(os.path.join(path, ".git")):
        return f"file://{os.path.abspath(path)}#{ref}"
    return None


def _too_many(name: str, limits: SourceLimits) -> SourceRefused:
    return refuse(name, f"is past the limit of {limits.max_files} entries (max_files)")


def _too_big(name: str, limits: SourceLimits) -> SourceRefused:
    return refuse(name, f"brings the source past {limits.max_bytes} bytes (limit max_bytes)")


# --- folders (and git checkouts) ----------------------------------------------------------------

def _open_beneath(host_root: Path, parts: tuple[str, ...]) -> int:
    """Open ``parts`` under ``host_root`` following no symlink on the way, even if one appeared."""
    fd = os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


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
        return entry.parts[1] if len(entry.parts) == 2 and entry.parts[1] in _SPECIALS else None

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


class _DirectoryReader:
    """A folder, walked without following symlinks; ignored directories are not descended into."""

    def __init__(self, host_root: Path, *, limits: SourceLimits, skip: Sequence[Path] = ()) -> None:
        self._host_root = host_root
        self._limits = limits
        self._skip = {(st.st_dev, st.st_ino) for st in (_lstat(p) for p in skip) if st is not None}
        self.ignored: list[str] = []
        self.unwrapped: str | None = None  # a folder is taken as it is

    def specials(self) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        for name, limit in _SPECIALS.items():
            try:
                fd = _open_beneath(self._host_root, (name,))
            except FileNotFoundError:
                continue
            except OSError:
                found[name] = None  # a symlink (ELOOP) or unreadable: never followed
                continue
            with os.fdopen(fd, "rb") as handle:
                regular = stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
                found[name] = handle.read(limit + 1) if regular else None
        return found

    def scan(self, rules: IgnoreRules) -> list[Entry]:
        entries: list[Entry] = []
        total = 0
        pending: list[tuple[str, ...]] = [()]
        while pending:
            parts = pending.pop()
            try:
                with os.scandir(self._host_root.joinpath(*parts)) as listing:
                    children = sorted(listing, key=lambda child: child.name)
            except OSError as exc:
                raise refuse("/".join(parts) or ".", f"cannot be listed ({exc.strerror})") from None
            subdirs = []
            for child in children:
                name = "/".join(parts + (child.name,))
                if child.name == ".git":
                    continue
                child_parts = check_name(name, limits=self._limits)
                st = child.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) in self._skip:
                    continue
                if rules.ignored(child_parts, is_dir=stat.S_ISDIR(st.st_mode)):
                    self.ignored.append(name)
                    continue
                if len(entries) >= self._limits.max_files:
                    raise _too_many(name, self._limits)
                mtime = int(st.st_mtime)
                if stat.S_ISDIR(st.st_mode):
                    entries.append(Entry(parts=child_parts, kind="dir", mtime=mtime, ref=name))
                    subdirs.append(child_parts)
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if total > self._limits.max_bytes:
                        raise _too_big(name, self._limits)
                    entries.append(Entry(parts=child_parts, kind="file", size=st.st_size, mtime=mtime,
                                         executable=bool(st.st_mode & stat.S_IXUSR), ref=name))
                elif stat.S_ISLNK(st.st_mode):
                    target = os.readlink(child.path)
                    check_link_target(name, target, limits=self._limits)
                    entries.append(Entry(parts=child_parts, kind="symlink", target=target,
                                         mtime=mtime, ref=name))
                else:
                    raise refuse(name, describe_mode(st.st_mode))
            pending.extend(reversed(subdirs))
        return entries

    def data(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, BinaryIO | None]]:
        for entry in entries:
            if entry.kind != "file":
                yield entry, None
                continue
            try:
                fd = _open_beneath(self._host_root, entry.parts)
            except OSError as exc:
                raise refuse(entry.path, f"cannot be opened ({exc.strerror})") from None
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(handle.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                    raise refuse(entry.path, "changed while the source was being packed")
                yield entry, handle


def _lstat(host_path: Path) -> os.stat_result | None:
    try:
        return os.lstat(host_path)
    except OSError:
        return None


# --- archives ------------------------------------------------------------------------------------

def _archive_reader(host_archive: Path, *, limits: SourceLimits) -> _Reader:
    with open(host_archive, "rb") as probe:
        magic = probe.read(6)
    if magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _ZipReader(host_archive, limits=limits)
    return _TarReader(host_archive, limits=limits)


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


class _TarReader:
    """A tar, plain or gzip/bzip2/xz-compressed, read twice as a stream: once to check, once to pack."""

    def __init__(self, host_archive: Path, *, limits: SourceLimits) -> None:
        self._host_archive = host_archive
        self._limits = limits
        self._extended = 2 * limits.max_path + 8192
        # What one member may cost beyond its data: header, extended headers, padding.
        self._per_member = 4 * 512 + 2 * self._extended
        self._entries: list[Entry] = []
        self._limit = limits.max_bytes + self._per_member
        self.ignored: list[str] = []
        self.unwrapped: str | None = None
        self._strip = 0  # leading name parts left out (1 when the archive is one folder)

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
        found: dict[str, bytes | None] = {}
        one = _OneFolder()
        total = 0
        with self._open() as (archive, capped):
            for index, member in enumerate(archive):
                if index >= self._limits.max_files:
                    raise _too_many(member.name, self._limits)
                entry = tar_member_entry(index, member, limits=self._limits)
                capped.limit = self._limit = (self._limits.max_bytes
                                              + (index + 2) * self._per_member)
                if entry is None:
                    continue
                self._entries.append(entry)
                if entry.kind == "file":
                    total += entry.size
                    if total > self._limits.max_bytes:
                        raise _too_big(member.name, self._limits)
                nested = one.note(entry)
                for name, into in ((entry.path if len(entry.parts) == 1 else None, found), (nested, one.nested)):
                    if name in _SPECIALS:
                        handle = archive.extractfile(member) if entry.kind == "file" else None
                        into[name] = handle.read(_SPECIALS[name] + 1) if handle is not None else None
        if one.applies(self._entries):
            self._entries, self.unwrapped, self._strip = one.strip(self._entries), one.top, 1
            return one.nested
        return found

    def scan(self, rules: IgnoreRules) -> list[Entry]:
        return self._entries

    def data(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, BinaryIO | None]]:
        wanted = {entry.ref: entry for entry in entries}
        with self._open() as (archive, _):
            for index, member in enumerate(archive):
                entry = wanted.get(index)
                if entry is None:
                    continue
                if check_name(member.name, limits=self._limits)[self._strip:] != entry.parts:
                    raise refuse(member.name, "changed while the archive was being read")
                yield entry, archive.extractfile(member) if entry.kind == "file" else None


class _ZipReader:
    """A zip archive: names, types and sizes from its central directory, content bounded as read."""

    def __init__(self, host_archive: Path, *, limits: SourceLimits) -> None:
        self._host_archive = host_archive
        self._limits = limits
        self._entries: list[Entry] = []
        self.ignored: list[str] = []
        self.unwrapped: str | None = None

    @contextmanager
    def _open(self) -> Iterator[zipfile.ZipFile]:
        try:
            with zipfile.ZipFile(self._host_archive) as archive:
                yield archive
        except READ_ERRORS as exc:
            raise refuse(self._host_archive.name, "is not a readable zip archive "
                                                  f"({type(exc).__name__}: {str(exc)[:160]})") from None

    def specials(self) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        one = _OneFolder()
        total = 0
        with self._open() as archive:
            infos = archive.infolist()
            if len(infos) > self._limits.max_files:
                raise _too_many(infos[self._limits.max_files].filename, self._limits)
            for index, info in enumerate(infos):
                entry = zip_member_entry(archive, index, info, limits=self._limits)
                if entry is None:
                    continue
                self._entries.append(entry)
                if entry.kind == "file":
                    total += entry.size
                    if total > self._limits.max_bytes:
                        raise _too_big(entry.path, self._limits)
                nested = one.note(entry)
                for name, into in ((entry.path if len(entry.parts) == 1 else None, found), (nested, one.nested)):
                    if name in _SPECIALS:
                        if entry.kind != "file":
                            into[name] = None
                            continue
                        with archive.open(info) as handle:
                            into[name] = handle.read(_SPECIALS[name] + 1)
        if one.applies(self._entries):
            self._entries, self.unwrapped = one.strip(self._entries), one.top
            return one.nested
        return found

    def scan(self, rules: IgnoreRules) -> list[Entry]:
        return self._entries

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
