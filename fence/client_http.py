"""HTTP/1.1 over the daemon's Unix socket for FenceClient: one request, its answer's head, NDJSON lines, the errors."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
from pathlib import Path
from typing import Any, BinaryIO, Iterator
from urllib.parse import urlencode

from fence.errors import DaemonNotRunning, DaemonPermissionDenied, FenceError, InternalError, from_wire

BLOCK = 1024 * 1024  # bytes read or written at once


def send(conn: UnixConnection, method: str, path: str, *, params: list[tuple[str, str]] | None,
         content: bytes | BinaryIO | None, timeout: float, read_timeout: float | None) -> http.client.HTTPResponse:
    """Send one request (``timeout`` for each write) and return the answer once its head has arrived
    (``read_timeout`` for each read; ``None``: as long as the work takes).

    Raises:
        http.client.HTTPException, ConnectionError: the daemon went away before answering.
    """
    headers = {"Host": "fence", "Accept": "application/json"}
    if isinstance(content, bytes):
        headers["Content-Length"] = str(len(content))
        if content:
            headers["Content-Type"] = "application/json"
    elif content is not None:
        headers["Content-Length"] = str(os.fstat(content.fileno()).st_size)
        headers["Content-Type"] = "application/octet-stream"
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


class UnixConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection over a Unix socket."""

    def __init__(self, host_socket: Path, *, timeout: float) -> None:
        super().__init__("fence", timeout=timeout, blocksize=BLOCK)
        self._host_socket = host_socket

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._host_socket))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def read_lines(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The answer's lines as they arrive; a chunked answer broken off raises ``IncompleteRead``
    (``read1`` says so, where ``readline`` would end quietly)."""
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
