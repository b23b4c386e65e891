"""fence.client_http against a raw socket server on a Unix socket: bodies by length, chunked and until close,
kept-alive connections, broken answers as AnswerBroken, file uploads."""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from fence.client import FenceClient
from fence.client_http import AnswerBroken, Response, UnixConnection, read_lines, send
from fence.errors import DaemonNotRunning, InternalError


@dataclass(frozen=True)
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# Writes the answer to a request on the socket; returns whether the connection carries another request.
Answer = Callable[[socket.socket, Request], bool]


class RawServer:
    """A listener on a Unix socket that reads HTTP/1.1 requests by hand and lets ``answer`` write raw bytes."""

    def __init__(self, host_socket: Path, answer: Answer) -> None:
        self.host_socket = host_socket
        self.answer = answer
        self.connections = 0
        self.requests: list[Request] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(host_socket))
        self._listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop listening."""
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        pending = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, pending = pending.split(b"\r\n\r\n", 1)
                first, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = first.split(" ")
                headers = {name.strip().lower(): value.strip()
                           for name, _, value in (line.partition(":") for line in lines)}
                size = int(headers.get("content-length", "0"))
                while len(pending) < size:
                    data = conn.recv(1024 * 1024)
                    if not data:
                        return
                    pending += data
                request = Request(method, target, headers, pending[:size])
                pending = pending[size:]
                self.requests.append(request)
                if not self.answer(conn, request):
                    return


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        server = RawServer(tmp_path / f"raw{len(servers)}.sock", answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _connect(server: RawServer) -> UnixConnection:
    conn = UnixConnection(server.host_socket, timeout=10)
    conn.connect()
    return conn


def _get(conn: UnixConnection, path: str = "/x") -> Response:
    return send(conn, "GET", path, params=None, content=None, timeout=10, read_timeout=10)


def _fixed(raw: bytes, *, keep: bool = True) -> Answer:
    def answer(conn: socket.socket, request: Request) -> bool:
        conn.sendall(raw)
        return keep
    return answer


def test_a_content_length_answer_is_read_whole(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(_fixed(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Two: a\r\nx-two: b\r\n"
                          b"Content-Length: 11\r\n\r\n{\"a\": true}"))
    conn = _connect(server)
    response = send(conn, "GET", "/v1/apps", params=[("q", "a b&c")], content=None, timeout=10, read_timeout=10)
    assert (response.status, response.length, response.will_close, response.isclosed()) == (201, 11, False, False)
    assert response.getheader("content-TYPE") == "application/json" and response.getheader("x-two") == "a, b"
    assert response.getheader("nope", "-") == "-"
    assert response.read() == b'{"a": true}'
    assert (response.length, response.isclosed(), response.read(), response.read1(10)) == (0, True, b"", b"")
    conn.close()
    request = server.requests[0]
    assert (request.method, request.target) == ("GET", "/v1/apps?q=a+b%26c")
    assert request.headers["host"] == "fence" and request.headers["accept"] == "application/json"
    assert "content-length" not in request.headers


def _chunked(*pieces: bytes, last: bytes = b"0\r\n\r\n") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + last)


def test_a_chunked_answer_is_read_whole_skipping_extensions_and_trailers(
        serve: Callable[[Answer], RawServer]) -> None:
    server = serve(_fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
                          b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    conn = _connect(server)
    response = _get(conn)
    assert response.chunked and response.length is None and not response.will_close
    assert response.read() == b"abcde" and response.isclosed()
    second = conn.getresponse()  # the bytes after the trailers are the next answer
    assert second.read() == b"ok"


def test_a_chunked_stream_is_read_line_by_line_as_it_arrives(serve: Callable[[Answer], RawServer]) -> None:
    go_on = threading.Event()

    def answer(conn: socket.socket, request: Request) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\none\nt\r\n")
        go_on.wait(10)  # the rest only once the client has the first line
        conn.sendall(b"4\r\nwo\nt\r\n6\r\nhree\n\n\r\n0\r\n\r\n")
        return True

    conn = _connect(_server := serve(answer))
    response = _get(conn)
    assert response.read1(1) == b"o"
    assert response.read1() == b"ne\nt"  # what has arrived, not a whole chunk
    go_on.set()
    assert list(read_lines(response)) == [b"wo", b"three", b""]
    assert response.isclosed()
    assert _server.connections == 1


def test_two_requests_go_on_one_kept_alive_connection(serve: Callable[[Answer], RawServer]) -> None:
    def answer(conn: socket.socket, request: Request) -> bool:
        body = f'{{"path": "{request.target}"}}'.encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True

    server = serve(answer)
    conn = _connect(server)
    assert _get(conn, "/one").read() == b'{"path": "/one"}'
    assert _get(conn, "/two").read() == b'{"path": "/two"}'
    conn.close()
    client = FenceClient(host_socket=server.host_socket, timeout=10)
    try:
        assert client.service_env("a") == {"path": "/v1/apps/a/service-env"}
        kept = client._idle
        assert kept is not None
        assert client.service_env("b") == {"path": "/v1/apps/b/service-env"}
        assert client._idle is kept
    finally:
        client.close()
    assert server.connections == 2  # one for the raw requests, one for the client's two calls


def test_connection_close_and_http_1_0_end_the_connection(serve: Callable[[Answer], RawServer]) -> None:
    answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.1 200 OK\r\n\r\n{\"until\": \"close\"}"]

    def answer(conn: socket.socket, request: Request) -> bool:
        raw = answers.pop(0)
        conn.sendall(raw)
        return b"keep-alive" in raw

    server = serve(answer)
    seen = []
    for _ in range(4):
        conn = _connect(server)
        response = _get(conn)
        seen.append((response.will_close, response.read()))
        assert response.isclosed()
        conn.close()
    assert seen == [(True, b"{}"), (True, b"{}"), (False, b"{}"), (True, b'{"until": "close"}')]
    client = FenceClient(host_socket=server.host_socket, timeout=10)
    answers.append(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert client.service_env("a") == {} and client._idle is None  # not kept for the next call


def test_a_chunked_stream_cut_off_mid_chunk_is_answer_broken(serve: Callable[[Answer], RawServer]) -> None:
    line = b'{"event": "log", "line": "a"}\n'
    server = serve(_fixed(_chunked(line, last=b'20\r\n{"event": "lo'), keep=False))
    response = _get(_connect(server))
    assert response.read1() == line
    assert response.read1() == b'{"event": "lo'
    with pytest.raises(AnswerBroken, match="mid-chunk"):
        response.read1()
    assert not response.isclosed()
    with pytest.raises(AnswerBroken):
        _get(_connect(server)).read()
    lines: list[str] = []
    with pytest.raises(InternalError, match="the daemon closed the stream .*mid-chunk"):
        FenceClient(host_socket=server.host_socket, timeout=10).logs("a", follow=True, staging=False,
                                                                      on_line=lines.append)
    assert lines == ["a"]


def test_a_body_shorter_than_its_length_is_answer_broken(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(_fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", keep=False))
    with pytest.raises(AnswerBroken, match="7 bytes short"):
        _get(_connect(server)).read()
    response = _get(_connect(server))
    assert response.read1() == b"abc" and response.read1() == b""
    assert response.length == 7 and not response.isclosed()


def test_a_connection_closed_before_the_head_is_answer_broken(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(_fixed(b"", keep=False))
    with pytest.raises(AnswerBroken, match="before answering"):
        _get(_connect(server))
    half = serve(_fixed(b"HTTP/1.1 200 OK\r\nContent-Le", keep=False))
    with pytest.raises(AnswerBroken, match="middle of an answer's head"):
        _get(_connect(half))
    with pytest.raises(DaemonNotRunning):  # the client's one error for a daemon that went away
        FenceClient(host_socket=server.host_socket, timeout=10).apps_data()
    assert server.connections == 3  # a GET is tried once more on a fresh connection


@pytest.mark.parametrize("line", [b"SPDY/3 200 OK\r\n", b"HTTP/1.1 2000 OK\r\n", b"HTTP/1.1\r\n", b"garbage\r\n",
                                  b"HTTP/1.1 200 OK"])
def test_a_bad_status_line_is_answer_broken(serve: Callable[[Answer], RawServer], line: bytes) -> None:
    server = serve(_fixed(line, keep=False))
    with pytest.raises(AnswerBroken):
        _get(_connect(server))


def test_a_bad_header_or_chunk_size_is_answer_broken(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(_fixed(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", keep=False))
    with pytest.raises(AnswerBroken, match="bad header line"):
        _get(_connect(server))
    server = serve(_fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", keep=False))
    with pytest.raises(AnswerBroken, match="bad chunk size"):
        _get(_connect(server)).read()


def test_an_interim_answer_is_skipped(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(_fixed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
    response = _get(_connect(server))
    assert (response.status, response.length, response.isclosed()) == (204, 0, True)


def test_a_file_body_is_sent_whole_with_its_content_length(serve: Callable[[Answer], RawServer],
                                                           tmp_path: Path) -> None:
    server = serve(_fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 5))  # over three BLOCKs
    conn = _connect(server)
    with upload.open("rb") as handle:
        response = send(conn, "POST", "/v1/stagings", params=[("name", "a")], content=handle, timeout=10,
                        read_timeout=10)
    assert response.read() == b"{}"
    send(conn, "POST", "/v1/gc", params=None, content=None, timeout=10, read_timeout=10).read()
    send(conn, "PUT", "/v1/x", params=None, content=b'{"a": 1}', timeout=10, read_timeout=10).read()
    conn.close()
    sent, empty, small = server.requests
    assert sent.headers["content-length"] == str(upload.stat().st_size)
    assert sent.headers["content-type"] == "application/octet-stream"
    assert sent.body == upload.read_bytes()
    assert (empty.headers["content-length"], empty.body) == ("0", b"")  # a POST without a body says so
    assert (small.headers["content-type"], small.body) == ("application/json", b'{"a": 1}')


class RefusingServer(RawServer):
    """Reads 64 KiB of a request, answers 413 and closes, as the daemon does past staging/max_upload."""

    refused = b'{"error": "too big"}'

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(64 * 1024)
            conn.sendall(b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(self.refused), self.refused))


def test_an_upload_the_daemon_stops_reading_still_gets_its_answer(tmp_path: Path) -> None:
    server = RefusingServer(tmp_path / "refusing.sock", _fixed(b""))
    upload = tmp_path / "big"
    upload.write_bytes(b"\0" * (16 * 1024 * 1024))
    conn = _connect(server)
    try:
        with upload.open("rb") as handle:
            response = send(conn, "POST", "/v1/stagings", params=None, content=handle, timeout=10,
                            read_timeout=10)
        assert (response.status, response.will_close, response.read()) == (413, True, RefusingServer.refused)
    finally:
        conn.close()
        server.close()


def test_a_request_that_would_break_its_syntax_is_refused(serve: Callable[[Answer], RawServer]) -> None:
    conn = _connect(serve(_fixed(b"")))
    with pytest.raises(ValueError):
        send(conn, "GET", "/a b\r\nX: y", params=None, content=None, timeout=10, read_timeout=10)
    conn.close()
