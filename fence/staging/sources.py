"""Turns app source (a folder, a .tar[.gz]/.zip archive or a git URL) into a checked tar for staging."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from fence.errors import UsageError
from fence.models import Manifest, PreparedSource, SourceLimits
from fence.staging.archive_check import (
    Entry,
    Repacker,
    check_link_target,
    check_name,
    describe_mode,
    plan_entries,
    refuse,
)
from fence.rules import looks_like_git_url, parse_git_spec
from fence.staging.archives import SPECIALS, SourceReader, archive_reader, too_big, too_many
from fence.staging.gitfetch import FetchPolicy, fetch, under_roots
from fence.staging.ignores import (
    IGNORE_FILES,
    IgnorePattern,
    IgnoreRules,
    manifest_patterns,
    read_ignore_file,
)
from fence.staging.manifest import MANIFEST_NAMES, parse_manifest
from fence.staging.procfile import parse_procfile

SOURCE_TAR_NAME = "app-source.tar"
APP_PREFIX = "app"
def prepare_source(origin: str, *, host_workdir: Path, limits: SourceLimits, uid: int,
                   gid: int, policy: FetchPolicy, packed_folder: bool = False) -> PreparedSource:
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
        policy: how a git origin is fetched (time, size, cancellation) and the folders a local
            origin (a folder, an archive, a ``file://`` URL) may lie in: ``policy.local_roots``
            (the session adds the staging's own folder, where an upload lands).
        packed_folder: ``origin`` is an archive a client packed from a folder (``fence push
            DIR``): it is staged exactly as it is. Otherwise an archive whose entries all lie
            in one folder (a GitHub download) is staged as that folder's contents.

    Returns:
        The packed source, with the parsed manifest (``Manifest()`` if none) and Procfile.

    Raises:
        SourceRefused: an entry fence will not stage, or a limit passed (one line naming it).
        ManifestInvalid: the manifest cannot be used.
        InvalidName: the manifest names a bad app or env variable name.
        ProcfileInvalid: a bad Procfile line.
        UsageError: the origin does not exist, lies outside ``policy.local_roots``, or the git
            repository or ref cannot be fetched (or passed a bound).
        StagingFailed: the clone was cancelled.
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
            commit = fetch(spec, host_clone_parent / "repo", what="source", policy=policy)
            reader: SourceReader = _DirectoryReader(host_clone_parent / "repo", limits=limits)
        elif not under_roots(origin, policy.local_roots):
            raise UsageError(detail=f"source {origin[:200]!r}: local paths may only be staged from the "
                                    "admin's folders (staging/local_roots)")
        elif os.path.isdir(origin):
            shown = origin
            reader = _DirectoryReader(Path(origin), limits=limits, skip=(host_workdir,))
        elif os.path.isfile(origin):
            shown = origin
            reader = archive_reader(Path(origin), limits=limits, unwrap=not packed_folder)
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


def _pack(reader: SourceReader, *, host_out: Path, uid: int, gid: int, limits: SourceLimits,
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
    patterns: list[IgnorePattern] = []
    for name in IGNORE_FILES:
        data = specials.get(name)
        if data is not None:
            patterns.extend(read_ignore_file(data, source=name))
    patterns.extend(manifest_patterns(manifest.ignores, source=manifest.source_name or "manifest"))
    rules = IgnoreRules(patterns=patterns, max_patterns=limits.max_ignore_patterns,
                        max_length=limits.max_ignore_pattern_length)
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
        for name, limit in SPECIALS.items():
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
                    raise too_many(name, self._limits)
                mtime = int(st.st_mtime)
                if stat.S_ISDIR(st.st_mode):
                    entries.append(Entry(parts=child_parts, kind="dir", mtime=mtime, ref=name))
                    subdirs.append(child_parts)
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if total > self._limits.max_bytes:
                        raise too_big(name, self._limits)
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
