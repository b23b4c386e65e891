"""HTTP/1.1 over the daemon's Unix socket for FenceClient: one request, its answer's head, NDJSON lines, the errors.

Hand-written over ``socket`` rather than the stdlib's ``http.client``: every ``fence`` CLI call imports
this module, and ``http.client`` pulls in ``email.parser``/``email.feedparser`` and ``ssl``. Measured
here (2-CPU box, Python 3.11): ``http.client`` was 46-48 ms of ``import fence.client``'s 81-88 ms under
``-X importtime`` (48-49 ms without it); as whole processes, 21 runs each, ``python -c 'import
fence.client'`` took a median 150 ms (max 188) with it and 109 ms (max 128) without, against 54 ms
(max 80) for ``python -c pass``: ~40 ms off every CLI call, whose floor (``fence --version``) is
~95 ms. Besides ``socket``, ``select``, ``json`` and ``os`` this needs only ``urllib.parse.urlencode``
(already loaded at start-up by the editable install's path finder; ~3-6 ms otherwise) and ``re``.

What it supports, and only for our own daemon: HTTP/1.1 requests with a bytes or binary-file body
and a Content-Length; answers with a Content-Length, chunked (extensions and trailers skipped), or
read until the connection closes; keep-alive (``Connection: close`` and HTTP/1.0 without keep-alive
end it); interim 1xx heads skipped. Not supported: TLS, proxies, redirects, ``Expect: 100-continue``,
compression, pipelining, trailers beyond skipping them.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
from pathlib import Path
from typing import Any, BinaryIO, Iterator
from urllib.parse import urlencode

from fence.errors import DaemonNotRunning, DaemonPermissionDenied, FenceError, InternalError, from_wire

BLOCK = 1024 * 1024  # bytes read or written at once
MAX_LINE = 64 * 1024  # the longest status, header or chunk-size line accepted
MAX_HEADERS = 100  # the most header lines accepted in one head
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # not in a method or a request target
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")  # not in a header value
_WITH_BODY = ("PATCH", "POST", "PUT")  # methods that say "Content-Length: 0" when they send no body


class AnswerBroken(ConnectionError):
    """The daemon's answer was not HTTP/1.x or broke off: a bad status line, the connection closed
    before the head or in the body, or a chunked body cut off."""


def send(conn: UnixConnection, method: str, path: str, *, params: list[tuple[str, str]] | None,
         content: bytes | BinaryIO | None, timeout: float, read_timeout: float | None) -> Response:
    """Send one request (``timeout`` for each write) and return the answer once its head has arrived
    (``read_timeout`` for each read; ``None``: as long as the work takes).

    Raises:
        ConnectionError: the daemon went away before answering (``AnswerBroken``: its answer broke off
            or was not HTTP).
    """
    headers = {"Host": "fence", "Accept": "application/json"}
    if isinstance(content, bytes):
        headers["Content-Length"] = str(len(content))
        if content:
            headers["Content-Type"] = "application/json"
    elif content is not None:
        headers["Content-Length"] = str(os.fstat(content.fileno()).st_size)
        headers["Content-Type"] = "application/octet-stream"
    elif method in _WITH_BODY:
        headers["Content-Length"] = "0"
    url = f"{path}?{urlencode(params)}" if params else path
    assert conn.sock is not None
    conn.sock.settimeout(timeout)
    try:
        conn.request(method, url, body=content, headers=headers)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon stopped reading the body (an upload over its limit): its answer says why
    if conn.sock is not None:
        conn.sock.settimeout(read_timeout)
    return conn.getresponse()


class UnixConnection:
    """An HTTP/1.1 connection over a Unix socket (one request at a time; kept alive between them).

    Args:
        host_socket: the daemon's Unix socket.
        timeout: seconds to wait for the connection (``send`` sets the timeouts of each request).
    """

    def __init__(self, host_socket: Path, *, timeout: float) -> None:
        self._host_socket = host_socket
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._pending = bytearray()  # received, not yet consumed

    def connect(self) -> None:
        """Connect to the socket.

        Raises:
            OSError: nothing listens there, or it may not be used.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._host_socket))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._pending.clear()

    def close(self) -> None:
        """Close the connection (again is fine)."""
        sock, self.sock = self.sock, None
        self._pending.clear()
        if sock is not None:
            sock.close()

    def request(self, method: str, url: str, *, body: bytes | BinaryIO | None, headers: dict[str, str]) -> None:
        """Send the request line, ``headers`` and ``body`` (bytes, or a binary file sent in ``BLOCK``
        pieces); the caller sets Content-Length.

        Raises:
            ValueError: a method, target or header that would break the request's syntax.
            OSError: the socket could not be written to.
        """
        if _UNSAFE.search(method) or _UNSAFE.search(url) or not url:
            raise ValueError(f"cannot send {method!r} {url!r}: it has spaces or control characters")
        lines = [f"{method} {url} HTTP/1.1"]
        for name, value in headers.items():
            if _UNSAFE.search(name) or ":" in name or _UNSAFE_VALUE.search(value):
                raise ValueError(f"cannot send the header {name!r}: {value!r}")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock = self._socket()
        self._pending.clear()  # nothing is pipelined: bytes past the last answer were never one
        if isinstance(body, bytes):
            sock.sendall(head + body)
            return
        sock.sendall(head)
        if body is not None:
            while piece := body.read(BLOCK):
                sock.sendall(piece)

    def getresponse(self) -> Response:
        """The answer, once its head has arrived.

        Raises:
            AnswerBroken: the connection closed before the head, or the head is not HTTP/1.x.
        """
        return Response(self)

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise AnswerBroken("the connection to the daemon is closed")
        return self.sock

    def _fill(self) -> bool:
        """Receive what has arrived into the pending bytes; ``False`` at the end of the stream."""
        data = self._socket().recv(BLOCK)
        self._pending += data
        return bool(data)

    def _readline(self) -> bytes:
        """One line with its ``\\n`` (without it: the stream ended first)."""
        searched = 0
        while (end := self._pending.find(b"\n", searched)) < 0:
            if len(self._pending) > MAX_LINE:
                raise AnswerBroken(f"the daemon sent a line longer than {MAX_LINE} bytes")
            searched = len(self._pending)
            if not self._fill():
                line = bytes(self._pending)
                self._pending.clear()
                return line
        line = bytes(self._pending[:end + 1])
        del self._pending[:end + 1]
        return line

    def _read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes: the pending ones, else what one receive brings (``b""`` at the end)."""
        if not self._pending:
            return self._socket().recv(min(limit, BLOCK))
        data = bytes(self._pending[:limit])
        del self._pending[:limit]
        return data


class Response:
    """An answer whose head has been read; its body is read with ``read`` or ``read1``.

    Attributes:
        status: the status code.
        version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
        headers: header values by lower-case name (repeated headers joined with ``", "``).
        chunked: whether the body comes in chunks.
        length: body bytes still to come by the Content-Length (``None``: chunked or until close).
        will_close: whether the daemon ends the connection after this answer.
    """

    def __init__(self, conn: UnixConnection) -> None:
        self._conn = conn
        while True:
            self.version, self.status = self._status_line()
            self.headers = self._header_lines()
            if not (100 <= self.status < 200) or self.status == 101:
                break  # an interim answer (100 Continue, 103 Early Hints) is followed by the real one
        connection = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        encodings = [token.strip().lower() for token in self.headers.get("transfer-encoding", "").split(",")]
        self.chunked = encodings[-1] == "chunked"
        self.length: int | None = None
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        elif not self.chunked:
            try:
                self.length = int(self.headers["content-length"])
            except (KeyError, ValueError):
                self.length = None
            if self.length is not None and self.length < 0:
                self.length = None
        if self.version == "HTTP/1.0":
            self.will_close = "keep-alive" not in connection and "keep-alive" not in self.headers
        else:
            self.will_close = "close" in connection
        if not self.chunked and self.length is None:
            self.will_close = True  # the body ends when the connection does
        self._chunk_left: int | None = None  # of the current chunk; 0: its CRLF is next, None: a size line
        self._done = self.length == 0  # the body was read whole
        self._cut = False  # the stream ended before the Content-Length: ``length`` says how much is missing

    def getheader(self, name: str, default: str | None = None) -> str | None:
        """A header's value (any case of ``name``), else ``default``."""
        return self.headers.get(name.lower(), default)

    def isclosed(self) -> bool:
        """Whether the body was read whole (the connection can then carry another request)."""
        return self._done

    def read(self) -> bytes:
        """The whole (remaining) body.

        Raises:
            AnswerBroken: the connection closed before the body's end.
        """
        parts = []
        while piece := self.read1(BLOCK):
            parts.append(piece)
        if self._cut:
            raise AnswerBroken(f"the daemon's answer ended {self.length} bytes short of its Content-Length")
        return b"".join(parts)

    def read1(self, n: int = BLOCK) -> bytes:
        """What has arrived of the body, up to ``n`` bytes, waiting only if nothing has (chunked bodies
        decoded); ``b""`` at the body's end, or when the stream ended before the Content-Length
        (``length`` then stays above 0).

        Raises:
            AnswerBroken: a chunked body broken off (cut mid-chunk, or no last chunk).
        """
        if self._done or self._cut or n <= 0:
            return b""
        if self.chunked:
            return self._read1_chunked(n)
        data = self._conn._read_some(n if self.length is None else min(n, self.length))
        if not data:
            if self.length is None:
                self._done = True  # read until close: this is the end
            else:
                self._cut = True
            return b""
        if self.length is not None:
            self.length -= len(data)
            self._done = self.length == 0
        return data

    def _read1_chunked(self, n: int) -> bytes:
        while not self._chunk_left:
            if self._chunk_left == 0 and self._conn._readline() not in (b"\r\n", b"\n"):
                raise AnswerBroken("the daemon's chunked answer broke off after a chunk")
            self._chunk_left = size = self._chunk_size()
            if size == 0:
                self._skip_trailers()
                self._done = True
                return b""
        data = self._conn._read_some(min(n, self._chunk_left))
        if not data:
            raise AnswerBroken("the daemon's chunked answer broke off mid-chunk")
        self._chunk_left -= len(data)
        return data

    def _chunk_size(self) -> int:
        line = self._conn._readline()
        if not line.endswith(b"\n"):
            raise AnswerBroken("the daemon's chunked answer broke off before its last chunk")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise AnswerBroken(f"the daemon sent a bad chunk size {line[:40]!r}") from None
        if size < 0:
            raise AnswerBroken(f"the daemon sent a bad chunk size {line[:40]!r}")
        return size

    def _skip_trailers(self) -> None:
        for _ in range(MAX_HEADERS + 1):
            line = self._conn._readline()
            if line in (b"\r\n", b"\n", b""):
                return
        raise AnswerBroken(f"the daemon sent more than {MAX_HEADERS} trailer lines")

    def _status_line(self) -> tuple[str, int]:
        line = self._conn._readline()
        if not line:
            raise AnswerBroken("the daemon closed the connection before answering")
        parts = line.decode("latin-1").split(None, 2)
        if (not line.endswith(b"\n") or len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0")
                or not (len(parts[1]) == 3 and parts[1].isdigit())):
            raise AnswerBroken(f"the daemon sent a bad status line {line[:80]!r}")
        return parts[0], int(parts[1])

    def _header_lines(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        name = ""
        for _ in range(MAX_HEADERS + 1):
            line = self._conn._readline()
            if not line.endswith(b"\n"):
                raise AnswerBroken("the daemon closed the connection in the middle of an answer's head")
            if line in (b"\r\n", b"\n"):
                return headers
            text = line.decode("latin-1").strip()
            if line[:1] in (b" ", b"\t") and name:  # an obsolete folded continuation of the last header
                headers[name] = f"{headers[name]} {text}"
                continue
            name, colon, value = text.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise AnswerBroken(f"the daemon sent a bad header line {line[:80]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise AnswerBroken(f"the daemon sent more than {MAX_HEADERS} header lines")


def read_lines(response: Response) -> Iterator[bytes]:
    """The answer's lines as they arrive; a chunked answer broken off raises ``AnswerBroken``."""
    pending = b""
    while chunk := response.read1(BLOCK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed by the daemon (it reads as ready, at EOF)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def json_body(body: Any) -> bytes | None:
    """A request body as JSON bytes (``None``: no body)."""
    return None if body is None else json.dumps(body).encode()


def unreachable(exc: BaseException, host_socket: Path) -> FenceError:
    """The error for a socket that cannot be used: permission, or nothing listening."""
    if isinstance(exc, PermissionError) or "Permission denied" in str(exc) or "Errno 13" in str(exc):
        return DaemonPermissionDenied(socket=host_socket)
    return DaemonNotRunning(socket=host_socket)


def payload(status: int, data: bytes) -> Any:
    """The JSON of a whole answer.

    Raises:
        FenceError: the error the daemon answered with, as the same class.
        InternalError: an answer without JSON, or an error without fence's error shape.
    """
    try:
        body = json.loads(data)
    except ValueError:
        raise InternalError(detail=f"daemon answered {status} without JSON") from None
    if status >= 400:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            raise from_wire(body["error"])
        raise InternalError(detail=f"daemon answered {status}: {body!r}"[:300])
    return body
