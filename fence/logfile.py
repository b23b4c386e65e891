"""One log file of lines written as they come (a staging's or a release command's), with an optional size cap."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, TextIO

LineCallback = Callable[[str], None]


class LogTap(Protocol):
    """Where staging, release-phase and cron lines also go: the node's log drains
    (``fence.drains.hub.DrainHub``); the phases depend only on this."""

    def tap(self, *, app: str, process: str, release: int | None = None, fresh: bool = False) -> LineCallback:
        """A callback taking each line of one app's phase (``process``: ``staging``, ``release``
        or ``cron``); it never blocks. ``fresh``: the drains are read again first (a phase's start)."""


class LogFile:
    """Writes lines to a new log file, passing each on when ``on_line`` is given.

    Used as a context manager, it gives the callback to write with.

    Args:
        host_file: the file (its folder is made; an existing file is replaced).
        on_line: where each line also goes (the client), or ``None``.
        max_bytes: the most the file keeps; past it one ``cut_line`` is written and the rest only
            passed on (``None``: no cap).
        cut_line: the line that says the file was cut.
        tap: where every line also goes, past the cap too (the drains), or ``None``.
    """

    def __init__(self, host_file: Path, on_line: LineCallback | None = None, *, max_bytes: int | None = None,
                 cut_line: str = "fence: log cut here", tap: LineCallback | None = None) -> None:
        self._host_file = host_file
        self._on_line = on_line
        self._max_bytes = max_bytes
        self._cut_line = cut_line
        self._tap = tap
        self._handle: TextIO | None = None
        self._written = 0

    def __enter__(self) -> LineCallback:
        self._host_file.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self._host_file.open("w", encoding="utf-8", errors="replace")
        return self._write

    def __exit__(self, *exc: object) -> None:
        assert self._handle is not None
        self._handle.close()

    def _write(self, line: str) -> None:
        assert self._handle is not None
        if self._max_bytes is None or self._written <= self._max_bytes:
            self._written += len(line) + 1
            fits = self._max_bytes is None or self._written <= self._max_bytes
            self._handle.write((line if fits else self._cut_line) + "\n")
            self._handle.flush()
        if self._tap is not None:
            self._tap(line)
        if self._on_line is not None:
            self._on_line(line)
