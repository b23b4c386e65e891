"""A container's log as timed records, on any backend: stdout and stderr read apart, then merged by time."""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable, Iterator

from fence.backend.base import Container, LogRecord


def log_records(container: Container, *, since: float | None = None, tail: int | None = None) -> list[LogRecord]:
    """The main process's logged lines so far with their time and stream, oldest first.

    Each stream is read alone with the engine's timestamps (its multiplexed stream says which
    stream a frame came from, but the SDK drops that), both bounded by ``tail``, then merged.

    Args:
        container: any backend's container.
        since: only lines written at or after this time (seconds since the epoch).
        tail: only the last ``tail`` lines of the merged log (of those since ``since``).

    Raises:
        ContainerNotFound: the container was destroyed.
        EngineUnavailable: the engine does not answer.
    """
    if tail is not None and tail <= 0:
        return []
    per_stream = [list(_records(container.output(stream=stream, follow=False, since=since, timestamps=True,
                                                 tail=tail), stream))
                  for stream in ("stdout", "stderr")]
    merged = list(heapq.merge(*per_stream, key=lambda r: r.time))
    return merged[max(0, len(merged) - tail):] if tail is not None else merged


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
