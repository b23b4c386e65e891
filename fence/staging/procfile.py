"""Parses an app's ``Procfile`` (``type: command`` lines) into process types and commands."""

from __future__ import annotations

import re

from fence.errors import ProcfileInvalid

# Process types: what `processes:` in stackato.yml and the Procfile may name.
PROCESS_TYPE_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
MAX_PROCFILE_BYTES = 64 * 1024

_PROCESS_TYPE = re.compile(PROCESS_TYPE_PATTERN)
# Control characters other than tab have no business in a one-line command.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_procfile(text: bytes) -> dict[str, str]:
    """Parse a Procfile.

    Each non-blank line that does not start with ``#`` must be ``type: command``; the type
    matches ``[a-z][a-z0-9_-]{0,31}``, the command is not empty, and no type appears twice.

    Args:
        text: the file's bytes (UTF-8, at most 64 KiB; ``\\r\\n`` line ends are accepted).

    Returns:
        Process type → command, in file order.

    Raises:
        ProcfileInvalid: naming the first bad line: a line that is not ``type: command``, a bad
            type, an empty command, a repeated type, bytes that are not UTF-8, control
            characters, or a file larger than 64 KiB (named at the line where it crosses).
    """
    if len(text) > MAX_PROCFILE_BYTES:
        raise ProcfileInvalid(line=text[:MAX_PROCFILE_BYTES].count(b"\n") + 1,
                              why=f"the Procfile is larger than {MAX_PROCFILE_BYTES // 1024} KiB")
    processes: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError:
            raise ProcfileInvalid(line=number, why="is not UTF-8 text") from None
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _CONTROL.search(line):
            raise ProcfileInvalid(line=number, why="holds a control character")
        kind, sep, command = stripped.partition(":")
        kind, command = kind.strip(), command.strip()
        if not sep:
            raise ProcfileInvalid(line=number, why=f"expected 'type: command', got {_clip(stripped)!r}")
        if not _PROCESS_TYPE.fullmatch(kind):
            raise ProcfileInvalid(line=number, why=f"process type {_clip(kind)!r} is not allowed "
                                                   f"(use {PROCESS_TYPE_PATTERN})")
        if not command:
            raise ProcfileInvalid(line=number, why=f"process type {kind!r} has no command")
        if kind in processes:
            raise ProcfileInvalid(line=number, why=f"process type {kind!r} appears twice "
                                                   f"(first on line {first_seen[kind]})")
        processes[kind] = command
        first_seen[kind] = number
    return processes


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
