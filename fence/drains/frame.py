"""A log line as drains ship it (``LogEvent``), framed as RFC 5424 syslog or as one NDJSON object."""

from __future__ import annotations

import datetime as dt
import functools
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
    # A flood is many lines of one origin: the header around the timestamp is made once per origin.
    pri, rest = _header(hostname, event.app, event.process, event.instance, event.release, event.stream)
    return b"".join((pri, _stamp(event.at), rest, event.line.encode("utf-8", errors="replace")))


@functools.lru_cache(maxsize=4096)
def _header(hostname: str, app: str, process: str, instance: int | None, release: int | None,
            stream: str) -> tuple[bytes, bytes]:
    pri = _FACILITY_USER * 8 + _SEVERITY.get(stream, 6)
    procid = process if instance is None else f"{process}.{instance}"
    params = {"app": app, "type": process, "instance": "" if instance is None else str(instance),
              "release": "" if release is None else str(release), "stream": stream}
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    rest = (f" {_field(hostname, 255)} {_field(app, 48)} {_field(procid, 128)} {_field(stream, 32)} {sd} ")
    return f"<{pri}>1 ".encode(), rest.encode()


_second: tuple[int, str] = (-1, "")  # replaced whole: threads read it without a lock


def _stamp(at: float) -> bytes:
    """``2026-12-02T00:49:09.123456Z``: the part up to the second is made once per second."""
    global _second
    whole, cached = int(at), _second
    if cached[0] != whole:
        cached = _second = (whole, dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{int((at - whole) * 1e6):06d}Z".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: ``LEN SP MESSAGE``."""
    return str(len(message)).encode() + b" " + message


def ndjson(event: LogEvent, *, hostname: str) -> bytes:
    """The event as one JSON object and a newline (the body lines of an HTTP drain's post):
    ``time`` (RFC 3339, UTC), ``node``, ``app``, ``type``, ``instance``, ``release``, ``stream``, ``line``."""
    return b"".join((b'{"time": "', _stamp(event.at), b'", ',
                     _json_origin(hostname, event.app, event.process, event.instance, event.release, event.stream),
                     json.dumps(event.line, ensure_ascii=False).encode("utf-8", errors="replace"), b"}\n"))


@functools.lru_cache(maxsize=4096)
def _json_origin(hostname: str, app: str, process: str, instance: int | None, release: int | None,
                 stream: str) -> bytes:
    fields = json.dumps({"node": hostname, "app": app, "type": process, "instance": instance, "release": release,
                         "stream": stream}, ensure_ascii=False)
    return fields[1:-1].encode() + b', "line": '


def _sd_value(value: str) -> str:
    """A PARAM-VALUE with ``"``, ``\\`` and ``]`` escaped (RFC 5424 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", value)


def _field(value: str, longest: int) -> str:
    """A header field: printable US-ASCII, no spaces, at most ``longest`` characters, ``-`` if empty."""
    return _NAME_BAD.sub("_", value)[:longest] or "-"
