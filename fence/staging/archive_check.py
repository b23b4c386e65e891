"""Checks app source entries (names, types, links, limits) and repacks the accepted ones into a new tar."""

from __future__ import annotations

import dataclasses
import datetime
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from fence.errors import SourceRefused
from fence.models import SourceLimits
from fence.staging.ignores import IgnoreRules

# What reading a damaged archive member can raise (zipfile, zlib, lzma, tarfile, the OS).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
               ValueError, NotImplementedError)
_MAX_LINK_HOPS = 40
_COPY_CHUNK = 1024 * 1024
_MAX_MTIME = 8 ** 11 - 1


@dataclass(frozen=True, slots=True)  # a source may hold max_files of them
class Entry:
    """One checked entry of app source.

    Attributes:
        parts: path components relative to the app root (never empty, no ``.`` or ``..``).
        kind: ``dir``, ``file``, ``symlink`` or ``hardlink``.
        size: bytes of content (files; hardlinks carry their target's size once resolved).
        executable: whether the owner-execute bit was set (files).
        mtime: modification time, whole seconds.
        target: a symlink's target as stored, or a hardlink's target path (``/``-joined parts).
        ref: how the source reader finds the entry's data again (member index or relative path).
    """

    parts: tuple[str, ...]
    kind: str
    size: int = 0
    executable: bool = False
    mtime: int = 0
    target: str = ""
    ref: int | str = 0

    @property
    def path(self) -> str:
        """The ``/``-joined path relative to the app root."""
        return "/".join(self.parts)


@dataclass(frozen=True)
class Plan:
    """The entries to pack, in source order (``entries``), and notes for the developer (``warnings``)."""

    entries: tuple[Entry, ...]
    warnings: tuple[str, ...] = ()


def show(name: str | bytes, limit: int = 160) -> str:
    """A quoted, printable, truncated form of an entry name for one-line messages.

    Args:
        name: the name as read (``str`` may hold surrogate escapes of undecodable bytes).
        limit: the longest name shown whole.

    Returns:
        The name in single quotes with undecodable bytes as ``\\xNN`` and control characters escaped.
    """
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    if len(text) > limit:
        text = text[:limit - 50] + "…" + text[-40:]
    safe = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return f"'{safe}'"


def refuse(name: str | bytes, why: str) -> SourceRefused:
    """Build the one-line refusal naming an entry."""
    return SourceRefused(entry=show(name), why=why)


def check_name(name: str, *, limits: SourceLimits) -> tuple[str, ...]:
    """Normalise an entry name and refuse the dangerous ones.

    ``./`` prefixes, repeated and trailing slashes and ``.`` components are dropped. Names must
    be UTF-8: an undecodable name (surrogate escapes from tarfile or ``os.scandir``) is refused,
    never guessed at.

    Args:
        name: the name as stored.
        limits: depth and length bounds.

    Returns:
        The path components; ``()`` for the root itself.

    Raises:
        SourceRefused: an absolute path, a ``..`` component, a name that is not UTF-8 or holds
            control characters, or one too deep or too long.
    """
    if name.startswith("/"):
        raise refuse(name, "is an absolute path")
    problem = _text_problem(name)
    if problem == "utf-8":
        raise refuse(name, "is not a UTF-8 name (rename it)")
    if problem == "control":
        raise refuse(name, "holds a control character")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise refuse(name, "has a '..' component")
    if len(parts) > limits.max_depth:
        raise refuse(name, f"is {len(parts)} levels deep (limit {limits.max_depth})")
    if len(name) > limits.max_path:
        raise refuse(name, f"is {len(name)} characters long (limit {limits.max_path})")
    return parts


def _text_problem(text: str) -> str | None:
    """``"utf-8"`` when a name cannot be written as UTF-8, ``"control"`` when it holds a control
    character, else ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "utf-8"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in text):
        return "control"
    return None


def check_link_target(name: str, target: str, *, limits: SourceLimits) -> None:
    """Refuse a symlink target that is empty, absolute, not UTF-8 or too long.

    Whether a relative target stays inside the app is decided by ``plan_entries``, which knows
    every symlink in the source.

    Raises:
        SourceRefused: naming the link.
    """
    if not target:
        raise refuse(name, "is a symlink with an empty target")
    if target.startswith("/"):
        raise refuse(name, f"is a symlink to the absolute path {show(target, 80)} (outside the app)")
    problem = _text_problem(target)
    if problem == "utf-8":
        raise refuse(name, "is a symlink whose target is not UTF-8")
    if problem == "control":
        raise refuse(name, "is a symlink whose target holds a control character")
    if len(target) > limits.max_path:
        raise refuse(name, f"is a symlink whose target is longer than {limits.max_path} characters")


def plan_entries(entries: Sequence[Entry], *, rules: IgnoreRules,
                 already_ignored: Sequence[str] = ()) -> Plan:
    """Decide what to pack: drop ``.git`` and ignored entries, then check links and parents.

    Args:
        entries: checked entries in source order.
        rules: the app's ignore rules.
        already_ignored: paths a reader left out itself (counted in the warning).

    Returns:
        The plan.

    Raises:
        SourceRefused: a name given twice (other than a directory), an entry below a symlink or
            a file, a symlink that resolves outside the app root or loops, a hardlink to
            anything but an earlier file.
    """
    kept: dict[tuple[str, ...], Entry] = {}
    order: list[Entry] = []
    earlier_files: dict[tuple[str, ...], Entry] = {}
    ignored: list[str] = list(already_ignored)
    dropped_links: list[str] = []
    for entry in entries:
        if entry.kind == "hardlink":
            target = earlier_files.get(tuple(entry.target.split("/")))
            if target is None:
                raise refuse(entry.path, f"is a hardlink to {show(entry.target, 80)}, which is not "
                                         "an earlier file of the archive")
            entry = dataclasses.replace(entry, target=target.path, size=target.size,
                                        executable=target.executable)
            earlier_files[entry.parts] = target
        elif entry.kind == "file":
            earlier_files[entry.parts] = entry
        if ".git" in entry.parts:
            continue
        if rules.ignored(entry.parts, is_dir=entry.kind == "dir"):
            ignored.append(entry.path)
            continue
        previous = kept.get(entry.parts)
        if previous is not None:
            if previous.kind == entry.kind == "dir":
                continue
            raise refuse(entry.path, "appears twice in the source")
        kept[entry.parts] = entry
        order.append(entry)
    packed = []
    for entry in order:
        _check_parents(entry, kept)
        if entry.kind == "symlink":
            why = link_escape(entry.parts, entry.target, kept)
            if why:
                raise refuse(entry.path, f"is a symlink to {show(entry.target, 80)}, which {why}")
        if entry.kind == "hardlink" and tuple(entry.target.split("/")) not in kept:
            dropped_links.append(entry.path)
            continue
        packed.append(entry)
    warnings = []
    if ignored:
        sample = ", ".join(ignored[:5]) + (", …" if len(ignored) > 5 else "")
        warnings.append(f"ignored {len(ignored)} entries (ignore files and ignores:): {sample}")
    if dropped_links:
        warnings.append(f"left out {len(dropped_links)} hardlinks to ignored files: "
                        + ", ".join(dropped_links[:5]))
    return Plan(entries=tuple(packed), warnings=tuple(warnings))


def _check_parents(entry: Entry, kept: dict[tuple[str, ...], Entry]) -> None:
    for depth in range(1, len(entry.parts)):
        parent = kept.get(entry.parts[:depth])
        if parent is not None and parent.kind != "dir":
            what = "a symlink" if parent.kind == "symlink" else "not a directory"
            raise refuse(entry.path, f"lies below {show(parent.path, 80)}, which is {what} in the "
                                     "same source")


def link_escape(link: tuple[str, ...], target: str, kept: Mapping[tuple[str, ...], Entry]) -> str | None:
    """Why ``target`` (relative to the link's directory) leaves the root, or None if it does not.

    The target is resolved as the kernel would, following the tree's own symlinks on the way:
    a lexical check alone would let ``sub/up -> ..`` plus ``sub/m -> up/..`` out of the root.
    Buildpack folders are checked with it too.

    Args:
        link: the link's path components below the root.
        target: its target as written.
        kept: the tree's entries by path components (only symlinks matter).

    Returns:
        A phrase such as ``points outside the app``, or ``None``.
    """
    here = list(link[:-1])
    pending = [part for part in target.split("/") if part not in ("", ".")]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not here:
                return "points outside the app"
            here.pop()
            continue
        here.append(part)
        found = kept.get(tuple(here))
        if found is not None and found.kind == "symlink":
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return "loops through other symlinks"
            if found.target.startswith("/"):
                return "passes through a symlink to an absolute path"
            here.pop()
            pending = [p for p in found.target.split("/") if p not in ("", ".")] + pending
    return None


class Repacker:
    """Writes accepted entries into a fresh tar, normalising owners and modes as it goes.

    Every entry goes under ``prefix/`` (when given), owned by ``uid:gid`` with empty user and
    group names; directories are 0755, files 0755 or 0644 (the owner-execute bit decides),
    symlinks keep their (checked) target, hardlinks become regular files copied from the file
    packed earlier. Parent directories missing from the source are added. The tar is written
    to a temporary name and renamed into place on success; on failure it is removed.
    """

    def __init__(self, *, host_out: Path, uid: int, gid: int, limits: SourceLimits,
                 prefix: str | None = "app", compress: bool = False) -> None:
        self._host_out = host_out
        self._host_part = host_out.with_name(f".{host_out.name}.{os.getpid()}.part")
        self._uid, self._gid = uid, gid
        self._limits = limits
        self._prefix = prefix
        self._compress = compress
        self._dirs: set[tuple[str, ...]] = set()
        self._data_at: dict[str, tuple[int, int]] = {}
        self._raw: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self.entries = 0
        self.size = 0

    def __enter__(self) -> Self:
        self._raw = open(self._host_part, "wb")  # closed in __exit__
        self._tar = tarfile.open(fileobj=self._raw, mode="w:gz" if self._compress else "w",
                                 format=tarfile.PAX_FORMAT, encoding="utf-8")
        if self._prefix:
            self._write(self._info((), tarfile.DIRTYPE, 0o755, 0), None)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._tar is not None and self._raw is not None
        try:
            self._tar.close()
            self._raw.close()
        finally:
            if kind is None:
                os.replace(self._host_part, self._host_out)
            else:
                self._host_part.unlink(missing_ok=True)

    def add(self, entry: Entry, stream: BinaryIO | None) -> None:
        """Add one entry (and any parent directories not added yet).

        Args:
            entry: an entry of the plan.
            stream: its content for a file, ``None`` otherwise.

        Raises:
            SourceRefused: the content would pass ``limits.max_bytes``, or the stream ends early
                or yields more than the entry's size.
        """
        for depth in range(1, len(entry.parts)):
            if entry.parts[:depth] not in self._dirs:
                self._write(self._info(entry.parts[:depth], tarfile.DIRTYPE, 0o755, entry.mtime), None)
        if entry.kind == "dir":
            if entry.parts not in self._dirs:
                self._write(self._info(entry.parts, tarfile.DIRTYPE, 0o755, entry.mtime), None)
        elif entry.kind == "symlink":
            info = self._info(entry.parts, tarfile.SYMTYPE, 0o777, entry.mtime)
            info.linkname = entry.target
            self._write(info, None)
        else:
            self._add_content(entry, stream)

    def _add_content(self, entry: Entry, stream: BinaryIO | None) -> None:
        if self.size + entry.size > self._limits.max_bytes:
            raise refuse(entry.path, f"brings the source past {self._limits.max_bytes} bytes "
                                     "(limit max_bytes)")
        info = self._info(entry.parts, tarfile.REGTYPE, 0o755 if entry.executable else 0o644,
                          entry.mtime)
        info.size = entry.size
        if entry.kind == "hardlink":
            offset, size = self._data_at[entry.target]
            assert self._raw is not None and not self._compress and size == entry.size
            self._raw.flush()
            with open(self._host_part, "rb") as packed:
                packed.seek(offset)
                self._write(info, _Metered(packed, entry=entry, limits=self._limits, before=self.size))
        else:
            assert stream is not None
            self._write(info, _Metered(stream, entry=entry, limits=self._limits, before=self.size))
        self.size += entry.size
        if not self._compress:
            assert self._tar is not None
            blocks = -(-entry.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            self._data_at[entry.path] = (self._tar.offset - blocks, entry.size)

    def _info(self, parts: tuple[str, ...], kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
        name = "/".join(((self._prefix,) if self._prefix else ()) + parts)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = self._uid, self._gid
        info.uname = info.gname = ""
        info.mtime = min(max(int(mtime), 0), _MAX_MTIME)
        if kind == tarfile.DIRTYPE:
            self._dirs.add(parts)
        return info

    def _write(self, info: tarfile.TarInfo, data: _Metered | None) -> None:
        assert self._tar is not None
        try:
            self._tar.addfile(info, data)
        except OSError as exc:
            shown = info.name.split("/", 1)[-1] if self._prefix else info.name
            raise refuse(shown, f"cannot be packed ({exc})") from None
        self.entries += 1


class _Metered:
    """A read-only stream that refuses to deliver more than the entry's size or the byte budget."""

    def __init__(self, stream: BinaryIO, *, entry: Entry, limits: SourceLimits, before: int) -> None:
        self._stream, self._entry, self._limits, self._before = stream, entry, limits, before
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        want = _COPY_CHUNK if size is None or size < 0 else size
        try:
            data = self._stream.read(want)
        except READ_ERRORS as exc:
            raise refuse(self._entry.path, f"cannot be read ({type(exc).__name__}: "
                                           f"{str(exc)[:160]})") from None
        self._read += len(data)
        if self._before + self._read > self._limits.max_bytes:
            raise refuse(self._entry.path, f"brings the source past {self._limits.max_bytes} bytes "
                                           "(limit max_bytes)")
        if self._read > self._entry.size:
            raise refuse(self._entry.path, f"holds more than the {self._entry.size} bytes its "
                                           "header says")
        return data


def describe_mode(mode: int) -> str:
    """Why a file of this ``st_mode`` type cannot be shipped (devices, FIFOs, sockets)."""
    if stat.S_ISCHR(mode):
        return "is a character device"
    if stat.S_ISBLK(mode):
        return "is a block device"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    return "is not a file, directory or symlink"


def tar_member_entry(index: int, member: tarfile.TarInfo, *, limits: SourceLimits) -> Entry | None:
    """Check one tar member and describe it as an Entry.

    Args:
        index: the member's position in the archive (kept as ``Entry.ref``).
        member: its header.
        limits: depth and length bounds.

    Returns:
        The entry, or ``None`` for the archive's root directory itself.

    Raises:
        SourceRefused: a bad name, a hardlink leaving the app, a device, a FIFO or an unknown type.
    """
    parts = check_name(member.name, limits=limits)
    mtime = int(member.mtime) if isinstance(member.mtime, (int, float)) else 0
    if not parts:
        if not member.isdir():
            raise refuse(member.name, "names the app root but is not a directory")
        return None
    if member.isdir():
        return Entry(parts=parts, kind="dir", mtime=mtime, ref=index)
    if member.isreg():
        return Entry(parts=parts, kind="file", size=member.size, mtime=mtime, ref=index,
                     executable=bool(member.mode & stat.S_IXUSR))
    if member.issym():
        check_link_target(member.name, member.linkname, limits=limits)
        return Entry(parts=parts, kind="symlink", target=member.linkname, mtime=mtime, ref=index)
    if member.islnk():
        target = [p for p in member.linkname.split("/") if p not in ("", ".")]
        if member.linkname.startswith("/") or ".." in target or not target:
            raise refuse(member.name, f"is a hardlink to {show(member.linkname, 80)}, outside "
                                      "the app")
        return Entry(parts=parts, kind="hardlink", target="/".join(target), mtime=mtime, ref=index)
    kinds = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
             tarfile.FIFOTYPE: stat.S_IFIFO}
    if member.type in kinds:
        raise refuse(member.name, describe_mode(kinds[member.type]))
    raise refuse(member.name, f"has the unsupported tar entry type {member.type!r}")


def zip_member_entry(archive: zipfile.ZipFile, index: int, info: zipfile.ZipInfo, *,
                     limits: SourceLimits) -> Entry | None:
    """Check one zip member and describe it as an Entry (a symlink's target is read, bounded).

    Names without the zip UTF-8 flag are taken as UTF-8 when they decode as such, else refused.

    Args:
        archive: the open archive.
        index: the member's position in ``infolist()`` (kept as ``Entry.ref``).
        info: its central-directory record.
        limits: depth and length bounds.

    Returns:
        The entry, or ``None`` for the archive's root directory itself.

    Raises:
        SourceRefused: a bad name, an encrypted member, a device, FIFO or socket.
    """
    name = info.filename
    if not info.flag_bits & 0x800:
        raw = name.encode("cp437")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(raw, "is not a UTF-8 name (rename it)") from None
    parts = check_name(name, limits=limits)
    if not parts:
        return None
    if info.flag_bits & 0x1:
        raise refuse(name, "is encrypted")
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    mtime = _zip_mtime(info)
    kind = stat.S_IFMT(mode)
    if info.is_dir() or kind == stat.S_IFDIR:
        return Entry(parts=parts, kind="dir", mtime=mtime, ref=index)
    if kind == stat.S_IFLNK:
        if info.file_size > limits.max_path:
            raise refuse(name, f"is a symlink whose target is longer than {limits.max_path}")
        with archive.open(info) as handle:
            raw_target = handle.read(limits.max_path + 1)
        target = raw_target.decode("utf-8", "surrogateescape")
        check_link_target(name, target, limits=limits)
        return Entry(parts=parts, kind="symlink", target=target, mtime=mtime, ref=index)
    if kind in (0, stat.S_IFREG):
        return Entry(parts=parts, kind="file", size=info.file_size, mtime=mtime, ref=index,
                     executable=bool(mode & stat.S_IXUSR))
    raise refuse(name, describe_mode(mode))


def _zip_mtime(info: zipfile.ZipInfo) -> int:
    try:
        return int(datetime.datetime(*info.date_time).timestamp())
    except (ValueError, OverflowError):
        return 0
