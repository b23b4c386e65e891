"""The fake backend's process model: its file tree entries, the process a program sees, and built-in programs."""

from __future__ import annotations

import posixpath
import shlex
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


BUILTIN_PROGRAMS: Mapping[str, Program] = {
    "true": lambda proc: 0,
    "false": lambda proc: 1,
    "echo": _echo,
    "cat": _cat,
    "sleep": _sleep,
    "id": _id,
    "pwd": _pwd,
    "printenv": _printenv,
}
