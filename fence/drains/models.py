"""The drain records and health figures that cross modules and the wire (stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DrainRecord:
    """One app's drain, as the store keeps it.

    Attributes:
        app: the app whose lines it receives.
        name: its name, unique per app.
        url: where the lines go (``fence.drains.urls.parse_drain_url`` accepted it).
        created_at: when it was added (ISO).
        origin: ``cli`` (``fence drain add``) or ``manifest`` (stackato.yml ``drain:``).
    """

    app: str
    name: str
    url: str
    created_at: str
    origin: str = "cli"


@dataclass(frozen=True)
class DrainHealth:
    """How one drain is doing, for ``fence drain list`` and ``kato status``.

    Attributes:
        name: the drain's name (a node-wide drain: ``node-N``, N its place in ``logs/drains``).
        app: its app, ``None`` for a node-wide drain.
        url: its URL without credentials.
        state: ``up`` (the last send worked), ``down`` (it failed; retrying with backoff) or
            ``idle`` (nothing sent yet).
        sent: lines delivered since the daemon started.
        dropped: lines dropped since the daemon started (the buffer was full while it was down,
            or a line could not be framed).
        queued: lines waiting in its buffer.
        error: the last send's error, ``None`` once a send works again.
        error_at: when that error happened (ISO).
    """

    name: str
    app: str | None
    url: str
    state: str
    sent: int = 0
    dropped: int = 0
    queued: int = 0
    error: str | None = None
    error_at: str | None = None
