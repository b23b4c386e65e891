"""A Docker container's log as timed records: stdout and stderr read apart, then merged by time."""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from fence.backend.base import LogRecord
from fence.lines import bounded_lines


def log_records(api: Any, container_id: str, *, since: float | None, tail: int | None,
                chunks_of: Any) -> list[LogRecord]:
    """The container's log lines with the engine's timestamps, oldest first.

    The engine's multiplexed stream says which stream each frame came from, but the SDK drops
    that; asking for each stream alone keeps it (two calls, both bounded by ``tail``).

    Args:
        api: the SDK's low-level client.
        container_id: the container.
        since: only lines at or after this time (epoch seconds).
        tail: only the last ``tail`` lines of the merged log.
        chunks_of: wraps the SDK's chunk iterator (turns engine errors into fence errors).
    """
    per_stream = []
    for stream in ("stdout", "stderr"):
        chunks = api.logs(container_id, stream=True, follow=False, timestamps=True,
                          stdout=stream == "stdout", stderr=stream == "stderr",
                          tail="all" if tail is None else tail, **({"since": since} if since else {}))
        per_stream.append(list(_records(bounded_lines(chunks_of(chunks)), stream)))
    merged = list(heapq.merge(*per_stream, key=lambda r: r.time))
    if tail is not None:
        return merged[max(0, len(merged) - tail):] if tail > 0 else []
    return merged


def _records(lines: Iterable[str], stream: str) -> Iterator[LogRecord]:
    last = 0.0
    for line in lines:
        stamp, _, text = line.partition(" ")
        when = parse_engine_time(stamp)
        if when is None:  # the rest of a line cut for its length carries no timestamp
            yield LogRecord(time=last, stream=stream, line=line)
            continue
        last = when
        yield LogRecord(time=when, stream=stream, line=text)


def parse_engine_time(stamp: str) -> float | None:
    """Epoch seconds of the engine's RFC 3339 timestamp (nanoseconds kept to the microsecond)."""
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    whole, _, fraction = stamp[:-1].partition(".")
    try:
        base = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC)
        return base.timestamp() + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)
    except ValueError:
        return None
