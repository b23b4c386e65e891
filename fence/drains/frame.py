"""A log line as drains ship it (``LogEvent``), framed as RFC 5424 syslog or as one NDJSON object."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

# The private enterprise number RFC 5612 reserves for examples: fence has none of its own.
SD_ID = "fence@32473"
_FACILITY_USER = 1
_SEVERITY = {"stdout": 6, "stderr": 3}  # informational, error
_NAME_BAD = re.compile(r"[^\x21-\x7e]")
_SD_ESCAPE = re.compile(r'(["\\\]])')


@dataclass(frozen=True)
class LogEvent:
    """One line for the drains.

    Attributes:
        app: the app it belongs to.
        process: the process type (``web``, ``worker`` …), or the phase that wrote it:
            ``staging``, ``release``, ``cron``.
        instance: the instance index, ``None`` outside instances.
        release: the release number, ``None`` when there is none yet (staging).
        stream: ``stdout`` or ``stderr``.
        line: the text, without its newline.
        at: seconds since the epoch when fence read it.
    """

    app: str
    process: str
    instance: int | None
    release: int | None
    stream: str
    line: str
    at: float


def rfc5424(event: LogEvent, *, hostname: str) -> bytes:
    """The event as one RFC 5424 message (no framing).

    APP-NAME is the app, PROCID ``TYPE.INDEX`` (``web.0``; ``staging`` alone), MSGID the stream;
    structured data ``[fence@32473 app= type= instance= release= stream=]`` carries them all
    for receivers that parse SD. Severity: 6 (info) for stdout, 3 (err) for stderr.
    """
    pri = _FACILITY_USER * 8 + _SEVERITY.get(event.stream, 6)
    stamp = dt.datetime.fromtimestamp(event.at, dt.timezone.utc).isoformat(timespec="microseconds")
    procid = event.process if event.instance is None else f"{event.process}.{event.instance}"
    params = {"app": event.app, "type": event.process,
              "instance": "" if event.instance is None else str(event.instance),
              "release": "" if event.release is None else str(event.release), "stream": event.stream}
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    head = (f"<{pri}>1 {stamp.replace('+00:00', 'Z')} {_field(hostname, 255)} {_field(event.app, 48)} "
            f"{_field(procid, 128)} {_field(event.stream, 32)} {sd} ")
    return head.encode() + event.line.encode("utf-8", errors="replace")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: ``LEN SP MESSAGE``."""
    return str(len(message)).encode() + b" " + message


def ndjson(event: LogEvent, *, hostname: str) -> bytes:
    """The event as one JSON object and a newline (the body lines of an HTTP drain's post)."""
    return json.dumps({"time": dt.datetime.fromtimestamp(event.at, dt.timezone.utc).isoformat(),
                       "node": hostname, "app": event.app, "type": event.process,
                       "instance": event.instance, "release": event.release, "stream": event.stream,
                       "line": event.line}, ensure_ascii=False).encode() + b"\n"


def _sd_value(value: str) -> str:
    """A PARAM-VALUE with ``"``, ``\\`` and ``]`` escaped (RFC 5424 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", value)


def _field(value: str, longest: int) -> str:
    """A header field: printable US-ASCII, no spaces, at most ``longest`` characters, ``-`` if empty."""
    return _NAME_BAD.sub("_", value)[:longest] or "-"
