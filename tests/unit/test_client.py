"""FenceClient over a real Unix socket: typed answers, errors as fence classes, streams, uploads, kept-alive links."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import tarfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.client import FenceClient
from fence.errors import AppNotFound, DaemonNotRunning, InternalError, SourceRefused
from fence.home import NodeHome
from fence.models import BuildpackUse, DropletRecord, NodeStatus
from fence.service import StageOrder
from fence.wiring import node_service


@pytest.fixture
def daemon(home: NodeHome) -> Iterator[tuple[FenceClient, object]]:
    """The real API on the fake backend, served by uvicorn on the node's socket in a thread."""
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    # A short keep-alive, so a test can see the client replace a connection the daemon closed.
    server = uvicorn.Server(uvicorn.Config(create_app(service, service.apps), uds=str(home.host_socket), log_config=None,
                                           access_log=False, lifespan="off", timeout_keep_alive=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    client = FenceClient(host_socket=home.host_socket)
    try:
        yield client, service
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=20)
        service.close()


def test_answers_are_typed_and_errors_keep_their_class(daemon: tuple[FenceClient, object]) -> None:
    client, _ = daemon
    assert isinstance(client.info(), NodeStatus)
    assert client.apps() == [] and client.droplets() == []
    with pytest.raises(AppNotFound) as caught:
        client.app("nope")
    assert caught.value.exit_code == 3
    with pytest.raises(AppNotFound):  # a stream refused before it starts
        client.scale("nope", 2, on_line=lambda line: None)
    with pytest.raises(AppNotFound):
        client.delete("nope")


def test_a_connection_the_daemon_closed_is_replaced(daemon: tuple[FenceClient, object]) -> None:
    client, _ = daemon
    client.info()
    kept = client._idle
    assert kept is not None  # kept alive for the next call
    client.apps()
    assert client._idle is kept
    time.sleep(1.6)  # past the daemon's keep-alive: it closes the idle connection
    assert client.apps() == []
    assert client._idle is not kept


def test_a_folder_is_packed_and_uploaded(daemon: tuple[FenceClient, object], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client, service = daemon
    seen: dict[str, object] = {}

    def stage(order: StageOrder, **_: object) -> DropletRecord:
        with tarfile.open(order.origin) as archive:
            seen["names"] = sorted(archive.getnames())
        seen["order"] = order
        return DropletRecord(id="e" * 64, app="my-app", size=1, buildpacks=(BuildpackUse("P", "v", "p"),),
                             start_command=None, process_types={}, config_vars={}, stack_image="s",
                             stack_image_id="i", commit=None, staged_at="2024-01-01", staging_id="x", inputs_key="")

    monkeypatch.setattr(service, "stage", stage)
    app = tmp_path / "My App"
    app.mkdir()
    (app / "Procfile").write_text("web: run\n")
    lines: list[str] = []
    record = client.stage(source=str(app), app=None, buildpacks=("procfile",), env_pairs=("A=1",),
                          on_line=lines.append)
    assert record.id == "e" * 64
    assert any(name.endswith("Procfile") for name in seen["names"])  # type: ignore[union-attr]
    order = seen["order"]
    assert isinstance(order, StageOrder)
    assert (order.fallback_name, order.buildpacks, dict(order.env)) == ("my-app", ("procfile",), {"A": "1"})


def test_no_daemon_and_a_stale_socket_are_one_error(tmp_path: Path) -> None:
    host_socket = tmp_path / "fence.sock"
    with pytest.raises(DaemonNotRunning):
        FenceClient(host_socket=host_socket).apps()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(host_socket))
    stale.close()  # the file stays, nothing listens
    with pytest.raises(DaemonNotRunning):
        FenceClient(host_socket=host_socket).info()


class _Stub(http.server.BaseHTTPRequestHandler):
    """A daemon that streams, refuses an upload part-way, or breaks off a stream."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/v1/stagings"):
            self.rfile.read(64 * 1024)  # then refuse the rest, as the daemon does past staging/max_upload
            error = SourceRefused(entry="upload.tar.gz", why="the upload is larger than staging/max_upload (1 MiB)")
            self._send(400, json.dumps({"error": error.to_wire()}).encode(), close=True)
            return
        events = [{"event": "log", "line": "-----> one"}, {"event": "log", "line": "-----> two"}]
        if self.path.endswith("/scale?instances=2"):
            view = {"name": "web", "url": "u", "urls": ["u"], "state": "started", "instances": 2, "running": 2,
                    "memory_mib": 256, "release": 1, "droplet": None, "stack_image": None, "env": {}}
            events.append({"event": "result", "app": view})
        body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        if self.path.endswith("/stop"):  # broken off: promised more than it sends
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in body.splitlines(keepends=True):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        if self.path.endswith("/restart"):  # broken off as a killed daemon does: no last chunk
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _send(self, status: int, body: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = close


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[FenceClient]:
    host_socket = tmp_path / "stub.sock"
    server = _UnixServer(str(host_socket), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = FenceClient(host_socket=host_socket, timeout=10)
    try:
        yield client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_stream_lines_are_passed_on_and_the_result_is_typed(stub: FenceClient) -> None:
    lines: list[str] = []
    view = stub.scale("web", 2, on_line=lines.append)
    assert lines == ["-----> one", "-----> two"] and (view.running, view.instances) == (2, 2)
    with pytest.raises(InternalError, match="ended the start stream without a result"):
        stub.start("web", on_line=lines.append)


def test_a_broken_stream_is_one_internal_error(stub: FenceClient) -> None:
    for broken in (stub.restart, stub.stop):
        with pytest.raises(InternalError, match="the daemon closed the stream"):
            broken("web", on_line=lambda line: None)
    assert stub.scale("web", 2, on_line=lambda line: None).running == 2  # the next call connects afresh


def test_an_upload_refused_part_way_reports_the_daemons_reason(stub: FenceClient, tmp_path: Path) -> None:
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(b"\0" * (8 * 1024 * 1024))
    with pytest.raises(SourceRefused, match="larger than staging/max_upload"):
        stub.stage(source=str(archive), app="web", buildpacks=(), env_pairs=(), on_line=lambda line: None)

