"""An app's instance logs as records (time, type, instance, release, stream), filtered by time, count, type and instance."""

from __future__ import annotations

import datetime as dt
import heapq
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module for parse_since: no backend at its start
    from fence.backend.base import ContainerBackend

# The most lines one request returns (the newest): a --since over a chatty app's whole log must
# not hold the daemon's memory.
MAX_LINES = 100_000
# Without --tail: each instance's last lines, as `fence logs` always showed.
DEFAULT_TAIL = 100

_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PROCESS_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class LogQuery:
    """Which lines of an app's instance logs are asked for.

    Attributes:
        since: only lines written at or after this time (epoch seconds).
        tail: only the last ``tail`` lines of the merged log (``None``: each instance's last 100).
        process: only instances of this process type.
        instance: only instances with this index.
    """

    since: float | None = None
    tail: int | None = None
    process: str | None = None
    instance: int | None = None


@dataclass(frozen=True)
class LogEntry:
    """One line of an app's instance log, as ``fence logs --json`` prints it.

    Attributes:
        time: when it was written (RFC 3339, UTC, microseconds).
        app: the app.
        type: the instance's process type.
        instance: the instance index.
        release: the release the instance runs.
        stream: ``stdout`` or ``stderr``.
        line: the line.
    """

    time: str
    app: str
    type: str
    instance: int
    release: int
    stream: str
    line: str

    @property
    def tag(self) -> str:
        """``TYPE.INDEX`` as plain `fence logs` prefixes lines (``web.0``)."""
        return f"{self.type}.{self.instance}"


def parse_since(text: str, *, now: float | None = None) -> float:
    """Epoch seconds of a ``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``)
    or a time (``2026-12-02T00:50:00Z``; without a zone, UTC).

    Raises:
        ValueError: neither, said in one line.
    """
    value = text.strip()
    found = _DURATION.fullmatch(value)
    if found:
        return (time.time() if now is None else now) - int(found.group(1)) * _UNIT[found.group(2)]
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {text[:40]!r}: give a duration (30s, 10m, 2h, 1d) or a time "
                         "(2026-12-02T00:50:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def check_query(query: LogQuery) -> LogQuery:
    """The query, or a one-line ValueError naming the bad filter."""
    if query.tail is not None and not 0 <= query.tail <= MAX_LINES:
        raise ValueError(f"--tail must be from 0 to {MAX_LINES}, not {query.tail}")
    if query.instance is not None and not 0 <= query.instance <= 10_000:
        raise ValueError(f"--instance must be an instance index (0, 1, …), not {query.instance}")
    if query.process is not None and not _PROCESS_TYPE.fullmatch(query.process):
        raise ValueError(f"--type {query.process[:40]!r} is not a process type name (like web or worker)")
    if query.since is not None and not 0 <= query.since < 1e11:
        raise ValueError(f"--since {query.since} is not a time")
    return query


def app_log_entries(*, backend: ContainerBackend, node_id: str, app: str, query: LogQuery) -> list[LogEntry]:
    """The app's instance log lines that match ``query``, oldest first (all instances merged by time).

    Args:
        backend: the engine.
        node_id: this node (its instances' label).
        app: the app (already known to exist).
        query: the filters (checked).
    """
    from fence import labels
    from fence.backend.log_records import log_records
    from fence.errors import FenceError

    per_instance = []
    for info in backend.list_info({labels.NODE: node_id, labels.ROLE: labels.ROLE_INSTANCE, labels.APP: app}):
        process = info.labels.get(labels.PROCESS) or "web"
        index = _int(info.labels.get(labels.INSTANCE))
        if (query.process is not None and process != query.process) or \
                (query.instance is not None and index != query.instance):
            continue
        tail = query.tail if query.tail is not None else DEFAULT_TAIL if query.since is None else MAX_LINES
        try:
            records = log_records(backend.lookup(info.id), since=query.since, tail=tail)
        except FenceError:
            continue  # removed since it was listed: it has no log any more
        release = _int(info.labels.get(labels.RELEASE))
        per_instance.append([LogEntry(time=_stamp(r.time), app=app, type=process, instance=index, release=release,
                                      stream=r.stream, line=r.line) for r in records])
    # The stamps are fixed-width RFC 3339 in UTC, so text order is time order.
    merged = list(heapq.merge(*per_instance, key=lambda e: e.time))
    keep = query.tail if query.tail is not None else MAX_LINES
    return merged[max(0, len(merged) - keep):] if keep > 0 else []


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else -1


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
