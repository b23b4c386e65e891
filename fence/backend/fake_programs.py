"""The fake backend's process model: its file tree entries, the process a program sees, and built-in programs."""

from __future__ import annotations

import io
import posixpath
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Mapping

# A fake program: gets the process, writes its output through it, returns the exit status.
Program = Callable[["FakeProcess"], int]


@dataclass
class FakeFile:
    """One entry of a fake container's file tree.

    Attributes:
        kind: ``"file"``, ``"dir"`` or ``"symlink"``.
        data: a file's content.
        mode: permission bits.
        uid: owner.
        gid: group.
        target: a symlink's target.
    """

    kind: str
    data: bytes = b""
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    target: str = ""


class StillRunning(Exception):
    """A main process blocked: from now on its container simply runs."""


class SleptPastDeadline(Exception):
    """A process slept past its deadline."""


@dataclass
class FakeProcess:
    """What a fake program sees, and how it acts.

    Attributes:
        argv: the program and its arguments.
        env: the whole environment (defaults, then the container's env, then the process's).
        uid: numeric user id the process runs as.
        gid: numeric group id.
        cwd: working directory.
        files: the container's file tree by absolute path (programs may change it).
        write: emits output text (lines are split on ``\\n``).
        sleep: waits that many seconds of simulated time (``FakeBackend.clock``); raises past
            the process's timeout, and in a main process it means "keeps running".
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    uid: int
    gid: int
    cwd: PurePosixPath
    files: dict[PurePosixPath, FakeFile]
    write: Callable[[str], None]
    sleep: Callable[[float], None]

    def path(self, name: str) -> PurePosixPath:
        """An absolute, normalised path for ``name`` (relative names start at ``cwd``)."""
        return PurePosixPath(posixpath.normpath(posixpath.join(str(self.cwd), name)))

    def read(self, name: str) -> bytes:
        """A file's content, if the process's user may read it.

        Raises:
            FileNotFoundError: no such file.
            IsADirectoryError: ``name`` is a directory.
            PermissionError: the mode bits deny reading.
        """
        node = self.files.get(self.path(name))
        if node is None:
            raise FileNotFoundError(name)
        if node.kind == "dir":
            raise IsADirectoryError(name)
        shift = 6 if node.uid == self.uid else 3 if node.gid == self.gid else 0
        if not (node.mode >> shift) & 0o4:
            raise PermissionError(name)
        return node.data


# --- built-in programs -------------------------------------------------------------------------

def _echo(proc: FakeProcess) -> int:
    args = list(proc.argv[1:])
    newline = not (args and args[0] == "-n")
    proc.write(" ".join(args if newline else args[1:]) + ("\n" if newline else ""))
    return 0


def _cat(proc: FakeProcess) -> int:
    status = 0
    for name in proc.argv[1:]:
        try:
            proc.write(proc.read(name).decode("utf-8", errors="replace"))
        except OSError as exc:
            why = {FileNotFoundError: "No such file or directory", IsADirectoryError:
                   "Is a directory"}.get(type(exc), "Permission denied")
            proc.write(f"cat: {name}: {why}\n")
            status = 1
    return status


def _sleep(proc: FakeProcess) -> int:
    units, total = {"s": 1, "m": 60, "h": 3600, "d": 86400}, 0.0
    for arg in proc.argv[1:]:
        number, unit = (arg[:-1], arg[-1]) if arg[-1:] in units else (arg, "s")
        try:
            total += float(number) * units[unit]
        except ValueError:
            proc.write(f"sleep: invalid time interval '{arg}'\n")
            return 1
    if len(proc.argv) < 2:
        proc.write("sleep: missing operand\n")
        return 1
    proc.sleep(total)
    return 0


def _id(proc: FakeProcess) -> int:
    answers = {("-u",): f"{proc.uid}", ("-g",): f"{proc.gid}",
               (): f"uid={proc.uid} gid={proc.gid} groups={proc.gid}"}
    if proc.argv[1:] not in answers:
        proc.write(f"id: the fake knows only -u and -g, not {shlex.join(proc.argv[1:])}\n")
        return 1
    proc.write(answers[proc.argv[1:]] + "\n")
    return 0


def _pwd(proc: FakeProcess) -> int:
    proc.write(f"{proc.cwd}\n")
    return 0


def _printenv(proc: FakeProcess) -> int:
    names = proc.argv[1:] or tuple(sorted(proc.env))
    for name in names:
        if name in proc.env:
            proc.write(f"{proc.env[name]}\n" if proc.argv[1:] else f"{name}={proc.env[name]}\n")
    return 0 if all(name in proc.env for name in names) else 1


def _tar(proc: FakeProcess) -> int:
    """``tar -xzpf FILE -C DIR`` (or ``-xpf``): extract only; the files belong to the process's user."""
    args = list(proc.argv[1:])
    if len(args) != 4 or args[0] not in ("-xzpf", "-xpf", "-xzf", "-xf") or args[2] != "-C":
        proc.write(f"tar: the fake only extracts (-xzpf FILE -C DIR), not {shlex.join(args)}\n")
        return 2
    try:
        data = proc.read(args[1])
    except OSError:
        proc.write(f"tar: {args[1]}: Cannot open: No such file or directory\n")
        return 2
    dest = proc.path(args[3])
    if getattr(proc.files.get(dest), "kind", None) != "dir":
        proc.write(f"tar: {args[3]}: Cannot open: No such file or directory\n")
        return 2
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                target = PurePosixPath(posixpath.normpath(posixpath.join(str(dest), member.name)))
                if dest != target and dest not in target.parents:
                    proc.write(f"tar: {member.name}: member name leaves the folder\n")
                    return 2
                node = FakeFile(kind="dir" if member.isdir() else "symlink" if member.issym() else "file",
                                mode=member.mode & 0o7777, uid=proc.uid, gid=proc.gid, target=member.linkname)
                if member.isfile():
                    node.data = archive.extractfile(member).read()  # type: ignore[union-attr]
                for parent in reversed(target.parents):
                    proc.files.setdefault(parent, FakeFile(kind="dir", uid=proc.uid, gid=proc.gid))
                proc.files[target] = node
    except tarfile.TarError as exc:
        proc.write(f"tar: {exc}\n")
        return 2
    return 0


def _rm(proc: FakeProcess) -> int:
    """``rm -f FILE…``: removes files (not folders)."""
    for name in proc.argv[1:]:
        if name == "-f":
            continue
        node = proc.files.get(proc.path(name))
        if node is not None and node.kind == "dir":
            proc.write(f"rm: cannot remove '{name}': Is a directory\n")
            return 1
        proc.files.pop(proc.path(name), None)
    return 0


BUILTIN_PROGRAMS: Mapping[str, Program] = {
    "tar": _tar,
    "rm": _rm,
    "true": lambda proc: 0,
    "false": lambda proc: 1,
    "echo": _echo,
    "cat": _cat,
    "sleep": _sleep,
    "id": _id,
    "pwd": _pwd,
    "printenv": _printenv,
}
