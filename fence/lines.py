"""Splits a container's output bytes into text lines of bounded length, cutting over-long ones."""

# Container output is untrusted: a process that prints gigabytes without a newline must cost the
# daemon at most one line of memory, however the engine chunks the stream.

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator

# The longest line passed on whole; the rest of a longer line is dropped up to its newline.
MAX_LINE = 64 * 1024


def cut_marker(max_line: int = MAX_LINE) -> str:
    """What ends a line that was cut (after its first ``max_line`` bytes)."""
    return f"… [line cut at {max_line} bytes]"


class LineSplitter:
    """Hands out whole lines as they complete, decoded as UTF-8 (bad bytes replaced).

    At most ``max_line`` bytes of an unfinished line are held: a line longer than that is passed
    on cut (its first ``max_line`` bytes and ``cut_marker()``) as soon as it passes the limit,
    and its remaining bytes are skipped up to the next newline.

    Args:
        on_line: receives each line without its newline (and without a trailing ``\\r``).
        keep: how many of the last lines ``tail`` keeps.
        max_line: the longest line, in bytes, passed on whole.
    """

    def __init__(self, *, on_line: Callable[[str], None] | None, keep: int,
                 max_line: int = MAX_LINE) -> None:
        self._on_line = on_line
        self._max_line = max_line
        self._pending = bytearray()
        self._skipping = False
        self.tail: deque[str] = deque(maxlen=keep)

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream (any size), passing on the lines they complete."""
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if self._skipping:
                pass  # the rest of a line already passed on cut
            elif len(self._pending) + end - start > self._max_line:
                self._pending += chunk[start:start + self._max_line - len(self._pending)]
                self._emit(self._pending, cut=True)
                self._pending.clear()
                self._skipping = True
            else:
                self._pending += chunk[start:end]
            if newline < 0:
                return
            if not self._skipping:
                self._emit(self._pending, cut=False)
            self._pending.clear()
            self._skipping = False
            start = newline + 1

    def finish(self) -> None:
        """The stream ended: pass on a last line that had no newline (it is output too)."""
        if self._pending and not self._skipping:
            self._emit(self._pending, cut=False)
        self._pending.clear()
        self._skipping = False

    def _emit(self, raw: bytearray, *, cut: bool) -> None:
        line = bytes(raw).decode("utf-8", errors="replace")
        if cut:
            line += cut_marker(self._max_line)
        elif line.endswith("\r"):
            line = line[:-1]
        self.tail.append(line)
        if self._on_line is not None:
            self._on_line(line)


def bounded_lines(chunks: Iterable[bytes], *, max_line: int = MAX_LINE) -> Iterator[str]:
    """The lines of a byte stream, each at most ``max_line`` bytes (longer ones cut with a marker).

    Args:
        chunks: the stream, in chunks of any size.
        max_line: the longest line, in bytes, passed on whole.

    Yields:
        Each line without its newline, as soon as it is complete (or cut).
    """
    ready: deque[str] = deque()
    splitter = LineSplitter(on_line=ready.append, keep=0, max_line=max_line)
    for chunk in chunks:
        splitter.feed(chunk)
        while ready:
            yield ready.popleft()
    splitter.finish()
    while ready:
        yield ready.popleft()
