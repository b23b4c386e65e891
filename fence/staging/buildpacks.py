"""Names, finds, checks and packs buildpacks: built-in ones, local folders and git repositories."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from fence.errors import BuildpackInvalid, InternalError, UsageError
from fence.models import BuildpackRef, ResolvedBuildpack
from fence.rules import NAME_PATTERN, GitSpec, looks_like_git_url, parse_git_spec
from fence.staging import gitfetch
from fence.staging.archive_check import Entry, link_escape
from fence.staging.gitfetch import FenceSettings, FetchPolicy, under_roots
from fence.tarstream import TarMember, tar_bytes

_BUILTIN_NAME = re.compile(NAME_PATTERN)
_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
_PATH_PREFIXES = ("/", "./", "../", "~")
_MAX_SPEC = 2048
_MAX_SHOWN = 80
# A buildpack is scripts and small assets; these bounds keep a mistaken path (a home folder with
# a bin/detect) from being hashed and packed whole.
_MAX_FILES = 10_000
_MAX_BYTES = 100 * 1024 * 1024
_STALE_TEMP_SECONDS = 24 * 3600
_SKIPPED = frozenset({".git"})


def builtin_dir() -> Path:
    """The folder holding fence's built-in buildpacks (``buildpacks/`` at the top of the project).

    Returns:
        The absolute path of that folder.
    """
    return Path(__file__).resolve().parents[2] / "buildpacks"


def parse_buildpack(text: str, *, base_dir: Path | None = None) -> BuildpackRef:
    """Read a buildpack as a developer or admin named it, without touching disk or network.

    Three forms: a built-in name (``python``); a local folder (absolute, or starting with ``./``,
    ``../`` or ``~``); a git URL (``https://…``, ``ssh://…``, ``git://…``, ``file://…``) with an
    optional ``#branch``, ``#tag`` or ``#commit``.

    Args:
        text: the buildpack as given (``--buildpack``, ``stackato.yml``, ``staging/buildpacks``).
        base_dir: what relative paths are relative to (the app folder for a manifest); the
            current directory when ``None``. ``~`` is this process's user's home.

    Returns:
        The reference; for a path, ``location`` is absolute (not resolved through symlinks).

    Raises:
        BuildpackInvalid: empty, too long, control characters, or none of the three forms.
        UsageError: a git URL whose scheme, characters or ref are refused (``fence.rules``).
    """
    shown = _shown(text)
    if not text:
        raise BuildpackInvalid(spec=shown, why="empty: name a built-in buildpack, a path or a git URL")
    if len(text) > _MAX_SPEC:
        raise BuildpackInvalid(spec=shown, why=f"longer than {_MAX_SPEC} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise BuildpackInvalid(spec=shown, why="control characters (newline, NUL, …) are not allowed")
    if looks_like_git_url(text):
        try:
            spec = parse_git_spec(text, what="buildpack")
        except UsageError:
            # The same complaint again, about the URL without its credentials, for the message.
            parse_git_spec(_without_credentials(text), what="buildpack")
            raise BuildpackInvalid(spec=shown, why="malformed git URL") from None
        _check_git_host(spec, shown)
        return BuildpackRef(kind="git", spec=text, location=spec.url, ref=spec.ref)
    if text.startswith(_PATH_PREFIXES) or text in (".", ".."):
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = (base_dir if base_dir is not None else Path.cwd()) / path
        return BuildpackRef(kind="path", spec=text, location=os.path.normpath(path))
    if _BUILTIN_NAME.fullmatch(text):
        return BuildpackRef(kind="builtin", spec=text, location=text)
    raise BuildpackInvalid(
        spec=shown,
        why="not a built-in buildpack name (lower-case letters, digits, '-'), a path "
            "(/…, ./…, ../…, ~/…) or a git URL (https://host/repo.git#ref)")


class BuildpackResolver:
    """Turns buildpack references into checked folders on this node.

    Git buildpacks are cloned into ``host_cache`` once per commit: a reference to a full commit
    that is already there is used without any network; a branch or tag is fetched again each time
    (it may have moved) and lands in its commit's folder. Each folder appears by an atomic rename,
    so concurrent stagings never see half a checkout.

    A buildpack path is only read from the admin's buildpack folders (the built-in one and
    ``staging/buildpack_roots``); a ``file://`` buildpack only from those and ``staging/local_roots``.
    """

    def __init__(self, *, host_builtin: Path, host_cache: Path, config: FenceSettings | None = None) -> None:
        """Set where built-in buildpacks live and where git checkouts are kept.

        Args:
            host_builtin: the folder of built-in buildpacks (usually ``builtin_dir()``).
            host_cache: a folder this resolver may own (created when first needed).
            config: the node's config (read at each resolve: roots, git bounds); ``None``: no
                roots besides ``host_builtin`` and the default git bounds.
        """
        self._host_builtin = host_builtin
        self._host_cache = host_cache
        self._config = config

    def _roots(self) -> tuple[Path, ...]:
        configured = self._config.fence("staging/buildpack_roots") if self._config is not None else []
        return (self._host_builtin, *(Path(p) for p in configured))

    def builtin_names(self) -> tuple[str, ...]:
        """The names of the built-in buildpacks, sorted.

        Returns:
            Each sub-folder of ``host_builtin`` whose name is a valid buildpack name.
        """
        if not self._host_builtin.is_dir():
            return ()
        return tuple(sorted(entry.name for entry in self._host_builtin.iterdir()
                            if entry.is_dir() and _BUILTIN_NAME.fullmatch(entry.name)))

    def resolve(self, ref: BuildpackRef, *, cancelled: Callable[[], bool] = lambda: False) -> ResolvedBuildpack:
        """Find the buildpack's folder, fetching it if it is a git repository, and check it.

        Args:
            ref: what ``parse_buildpack`` returned.
            cancelled: says whether the client went away (a clone is then killed).

        Returns:
            The folder with its name and version (the commit for git, else a content hash).

        Raises:
            BuildpackInvalid: an unknown built-in, a missing folder, a folder that is not a
                buildpack (no executable ``bin/detect`` + ``bin/compile``, ``bin/supply`` or
                ``bin/finalize``), links out of it, too big, or a path outside the admin's
                buildpack folders (staging/buildpack_roots).
            UsageError: a git repository that cannot be cloned, lacks the ref, is a ``file://``
                outside the roots, or passed staging/git_timeout or staging/max_git.
            StagingFailed: the clone was cancelled.
        """
        if ref.kind == "builtin":
            return self._resolve_builtin(ref)
        if ref.kind == "path":
            return self._resolve_path(ref)
        if ref.kind == "git":
            return self._resolve_git(ref, cancelled)
        raise InternalError(detail=f"unknown buildpack kind {ref.kind!r}")

    def _resolve_builtin(self, ref: BuildpackRef) -> ResolvedBuildpack:
        names = self.builtin_names()
        if ref.location not in names:
            raise BuildpackInvalid(spec=_shown(ref.spec), why="no such built-in buildpack (built-in: "
                                   f"{', '.join(names) or 'none'})")
        host_dir = self._host_builtin / ref.location
        digest = _check_buildpack(host_dir, spec=ref.spec)
        return ResolvedBuildpack(name=ref.location, host_dir=host_dir,
                                 version=f"builtin-{digest[:12]}", origin=ref.spec, digest=digest)

    def _resolve_path(self, ref: BuildpackRef) -> ResolvedBuildpack:
        host_dir = Path(ref.location)
        if not under_roots(host_dir, self._roots()):
            raise BuildpackInvalid(spec=_shown(ref.spec), why="buildpack paths may only name the admin's "
                                   "buildpack folders (staging/buildpack_roots); use a git URL or a "
                                   "built-in name")
        if not host_dir.exists():
            raise BuildpackInvalid(spec=_shown(ref.spec), why=f"no such folder {ref.location}")
        if not host_dir.is_dir():
            raise BuildpackInvalid(spec=_shown(ref.spec), why=f"{ref.location} is not a folder")
        digest = _check_buildpack(host_dir, spec=ref.spec)
        return ResolvedBuildpack(name=_short_name(host_dir.resolve().name), host_dir=host_dir,
                                 version=f"path-{digest[:12]}", origin=ref.spec, digest=digest)

    def _resolve_git(self, ref: BuildpackRef, cancelled: Callable[[], bool]) -> ResolvedBuildpack:
        spec = GitSpec(url=ref.location, ref=ref.ref)
        origin = spec.display()
        name = _short_name(ref.location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))
        host_repo = self._host_cache / "git" / f"{name}-{hashlib.sha256(ref.location.encode()).hexdigest()[:16]}"
        if ref.ref is not None and _COMMIT.fullmatch(ref.ref):
            host_dir = host_repo / ref.ref.lower()
            if host_dir.is_dir():
                _check_buildpack(host_dir, spec=origin)
                return ResolvedBuildpack(name=name, host_dir=host_dir, version=ref.ref.lower(),
                                         origin=origin, digest=ref.ref.lower())
        host_repo.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(host_repo)
        host_tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=host_repo))
        try:
            host_checkout = host_tmp / "checkout"
            policy = (FetchPolicy.from_config(self._config, extra_roots=self._roots(), cancelled=cancelled)
                      if self._config is not None else FetchPolicy(cancelled=cancelled))
            commit = gitfetch.fetch(spec, host_checkout, what="buildpack", policy=policy)
            shutil.rmtree(host_checkout / ".git", ignore_errors=True)
            _check_buildpack(host_checkout, spec=origin)
            host_dir = host_repo / commit
            try:
                os.rename(host_checkout, host_dir)
            except OSError:
                # Another staging put the same commit there first: its copy is as good as ours.
                if not host_dir.is_dir():
                    raise
        finally:
            shutil.rmtree(host_tmp, ignore_errors=True)
        return ResolvedBuildpack(name=name, host_dir=host_dir, version=commit, origin=origin, digest=commit)


def buildpack_tar(resolved: ResolvedBuildpack, *, ctr_prefix: str, uid: int, gid: int) -> bytes:
    """Pack a buildpack folder as a tar stream to copy into a staging container.

    Entries are ``ctr_prefix`` itself (and its parent folders) then the buildpack's files under
    it, all owned by ``uid:gid``; files keep their executable bits (mode 0755 or 0644), links that
    stay inside the buildpack are kept as links, ``.git`` folders are left out.

    Args:
        resolved: the buildpack, as ``BuildpackResolver.resolve`` returned it.
        ctr_prefix: relative folder for the entries, e.g. ``buildpacks/0-python/``.
        uid: owner of every entry (the container's app user).
        gid: group of every entry.

    Returns:
        The uncompressed tar, in memory (buildpacks are bounded in size when resolved).

    Raises:
        BuildpackInvalid: the folder holds a link pointing out of it, a device or pipe, or is too big.
        InternalError: ``ctr_prefix`` is absolute, empty or climbs out with ``..``.
    """
    prefix = PurePosixPath(ctr_prefix)
    if prefix.is_absolute() or not prefix.parts or ".." in prefix.parts or "." in ctr_prefix.split("/"):
        raise InternalError(detail=f"buildpack tar prefix {ctr_prefix!r} must be a relative folder")
    def members() -> Iterator[TarMember]:
        # mtime 0: the same buildpack always packs to the same bytes.
        for depth in range(1, len(prefix.parts) + 1):
            yield TarMember(name=str(PurePosixPath(*prefix.parts[:depth])), kind="dir", mode=0o755,
                            uid=uid, gid=gid, mtime=0)
        for entry in _walk(resolved.host_dir, spec=resolved.origin):
            name = str(prefix / entry.rel)
            if entry.kind == "dir":
                yield TarMember(name=name, kind="dir", mode=0o755, uid=uid, gid=gid, mtime=0)
            elif entry.kind == "link":
                yield TarMember(name=name, kind="link", linkname=entry.target, mode=0o777, uid=uid, gid=gid,
                                mtime=0)
            else:
                yield TarMember(name=name, mode=0o755 if entry.executable else 0o644, uid=uid, gid=gid,
                                mtime=0, host_file=entry.host_path)

    return tar_bytes(members())


# --- checks --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    rel: PurePosixPath
    kind: str            # "dir", "file" or "link"
    host_path: Path
    executable: bool = False
    target: str = ""     # a link's target, as written


def _walk(host_root: Path, *, spec: str) -> Iterator[_Entry]:
    """Every entry under ``host_root`` in sorted order, refusing what must not reach a container.

    Links are checked once every entry is known, with the archive checker's resolver: a chain of
    links (``up -> ..``, ``m -> up/..``) is followed as the kernel would follow it.
    """
    entries = list(_scan(host_root, spec=spec))
    links = {tuple(e.rel.parts): Entry(parts=tuple(e.rel.parts), kind="symlink", target=e.target)
             for e in entries if e.kind == "link"}
    for parts, link in links.items():
        why = link_escape(parts, link.target, links)
        if why:
            raise BuildpackInvalid(spec=_shown(spec), why=f"{'/'.join(parts)} is a link pointing out of the "
                                   f"buildpack ({link.target}: it {why.replace('the app', 'the buildpack')})")
    yield from entries


def _scan(host_root: Path, *, spec: str) -> Iterator[_Entry]:
    files = 0
    size = 0
    pending = [PurePosixPath()]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(host_root / rel_dir) as it:
            names = sorted(entry.name for entry in it)
        subdirs = []
        for entry_name in names:
            if entry_name in _SKIPPED:
                continue
            rel = rel_dir / entry_name
            host_path = host_root / rel
            files += 1
            if files > _MAX_FILES:
                raise BuildpackInvalid(spec=_shown(spec), why=f"more than {_MAX_FILES} files")
            st = host_path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(host_path)
                joined = posixpath.normpath(posixpath.join(str(rel_dir), target))
                if posixpath.isabs(target) or joined == ".." or joined.startswith("../"):
                    raise BuildpackInvalid(spec=_shown(spec),
                                           why=f"{rel} is a link pointing out of the buildpack ({target})")
                yield _Entry(rel=rel, kind="link", host_path=host_path, target=target)
            elif stat.S_ISDIR(st.st_mode):
                yield _Entry(rel=rel, kind="dir", host_path=host_path)
                subdirs.append(rel)
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
                if size > _MAX_BYTES:
                    raise BuildpackInvalid(spec=_shown(spec),
                                           why=f"larger than {_MAX_BYTES // (1024 * 1024)} MiB")
                yield _Entry(rel=rel, kind="file", host_path=host_path,
                             executable=bool(st.st_mode & 0o111))
            else:
                raise BuildpackInvalid(spec=_shown(spec), why=f"{rel} is not a file, folder or link")
        pending.extend(reversed(subdirs))


def _check_buildpack(host_dir: Path, *, spec: str) -> str:
    """Check that ``host_dir`` is a usable buildpack and return the sha256 of its content."""
    missing = []
    for script in ("detect", "compile", "supply", "finalize"):
        host_script = host_dir / "bin" / script
        if host_script.is_file() and not os.stat(host_script).st_mode & 0o111:
            raise BuildpackInvalid(spec=_shown(spec), why=f"bin/{script} is not executable (chmod +x)")
        if not host_script.is_file():
            missing.append(script)
    heroku = "detect" not in missing and "compile" not in missing
    cloud_foundry = "supply" not in missing or "finalize" not in missing
    if not (heroku or cloud_foundry):
        raise BuildpackInvalid(spec=_shown(spec), why="not a buildpack: it needs an executable bin/detect "
                               "and bin/compile, or bin/supply and/or bin/finalize")
    digest = hashlib.sha256()
    for entry in _walk(host_dir, spec=spec):
        digest.update(f"{entry.kind}\0{entry.rel}\0{int(entry.executable)}\0{entry.target}\0".encode())
        if entry.kind == "file":
            with open(entry.host_path, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _check_git_host(spec: GitSpec, shown: str) -> None:
    # A host starting with '-' would reach ssh as an option (-oProxyCommand=…).
    rest = spec.url.split("://", 1)[1]
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if host.startswith("-") or rest.startswith("-"):
        raise BuildpackInvalid(spec=shown, why="a git host may not start with '-'")


def _remove_stale_temps(host_repo: Path) -> None:
    """Remove clones that a crashed staging left half-done."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for entry in host_repo.glob(".tmp-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            pass


def _short_name(text: str) -> str:
    """A name for logs and ``<index>-<name>`` folders: lower-case letters, digits and '-'."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return name or "buildpack"


def _without_credentials(text: str) -> str:
    return re.sub(r"^([a-z]+://)[^/@]*@", r"\1", text)


def _shown(text: str) -> str:
    """The spec as it may appear in a one-line error: credentials dropped, cut to a sane length."""
    text = _without_credentials(text)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"
