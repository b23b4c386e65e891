"""Requests per app and status, counted from the router's access log as it grows (read incrementally)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

# At most this much new log is read per look (a flood is counted over several scrapes, not
# all at once in the scraping request).
_MAX_READ = 32 * 1024 * 1024


class AccessLogCounter:
    """Counts the router's requests by app and status from nginx's ``fence`` log format.

    The first look starts at the log's end (requests are counted from the daemon's start); a
    log that was rotated or truncated (another inode, or shorter than what was read) is read
    again from its start.

    Args:
        host_log: nginx's access log.
    """

    def __init__(self, *, host_log: Path) -> None:
        self._host_log = host_log
        self._lock = threading.Lock()
        self._inode: int | None = None
        self._offset = 0
        self._pending = b""
        self._counts: Counter[tuple[str, str]] = Counter()

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests so far by ``(app, status)``; the app is ``""`` for host names no app has."""
        with self._lock:
            self._read()
            return dict(self._counts)

    def _read(self) -> None:
        try:
            fh = self._host_log.open("rb")
        except OSError:
            return
        with fh:
            info = os.fstat(fh.fileno())
            if self._inode is None:
                self._inode, self._offset = info.st_ino, info.st_size
                return
            if info.st_ino != self._inode or info.st_size < self._offset:
                self._inode, self._offset, self._pending = info.st_ino, 0, b""
            fh.seek(self._offset)
            chunk = fh.read(_MAX_READ)
        self._offset += len(chunk)
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > 64 * 1024:  # not a line of ours: never hold it
            self._pending = b""
        for line in lines:
            fields = line.split(b" ", 3)
            if len(fields) < 3 or not fields[1].isdigit():
                continue
            server = fields[0].decode("ascii", "replace")
            app = "" if server in ("_", "") else server.split(".", 1)[0]
            self._counts[(app, fields[1].decode("ascii"))] += 1
