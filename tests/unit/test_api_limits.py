"""The API's small holes (issue 13 item 9): JSON bodies have a size cap (413, one line) and a
`logs --follow` whose client leaves ends its threads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from fence.api import MAX_JSON_BODY, create_app
from fence.backend.base import LogLines
from fence.backend.fake import FakeBackend
from fence.follow import LogFollow
from fence.home import NodeHome
from fence.wiring import node_service


@pytest.fixture
def service(home: NodeHome):  # noqa: ANN201
    node = node_service(home, backend=FakeBackend(), router=None)
    yield node
    node.close()


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    yield b'{"set": {"A": "'
    while sent < total:
        yield b"x" * 65536
        sent += 65536
    yield b'"}}'


@pytest.mark.parametrize("path", ["/v1/apps/web/env", "/v1/apps/web/run", "/v1/apps/web/routes",
                                  "/v1/apps/web/start", "/v1/gc", "/v1/info"])
def test_a_body_over_the_cap_is_refused_with_413_in_one_line(service, path: str) -> None:  # noqa: ANN001
    client = TestClient(create_app(service, service.apps))
    method = "GET" if path == "/v1/info" else "POST"
    bodies: list[object] = [b'{"set": {"A": "' + b"x" * MAX_JSON_BODY + b'"}}']
    if path in ("/v1/apps/web/env", "/v1/apps/web/run", "/v1/apps/web/routes"):
        # A chunked body (no length given) is counted as it is read; an endpoint that takes no
        # body never reads one, so never holds one.
        bodies.append(_chunks(MAX_JSON_BODY))
    for content in bodies:
        response = client.request(method, path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 413, (path, response.text[:200])
        error = response.json()["error"]
        assert error["type"] == "RequestTooLarge"
        assert error["message"] == f"bad request: {method} {path}: the body is larger than {MAX_JSON_BODY} bytes"


def test_a_body_under_the_cap_still_reaches_the_endpoint(service) -> None:  # noqa: ANN001
    client = TestClient(create_app(service, service.apps))
    response = client.post("/v1/apps/web/env", json={"set": {"A": "x" * (MAX_JSON_BODY // 2)}})
    assert response.status_code == 404 and response.json()["error"]["type"] == "AppNotFound"


def test_uploads_are_capped_by_staging_max_upload_not_by_the_json_cap(service) -> None:  # noqa: ANN001
    service.config.set("fence", "staging/max_upload", "1")
    client = TestClient(create_app(service, service.apps))
    response = client.post("/v1/stagings?filename=app.tar.gz", content=b"\0" * (MAX_JSON_BODY + 10))
    assert response.status_code == 400, response.text[:200]
    assert "staging/max_upload (1 MiB)" in response.json()["error"]["message"]


class _Blocking:
    """A container whose followed log waits for a line that never comes, until it is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def logs(self, *, follow: bool = False, tail: int | None = None) -> LogLines:
        def lines() -> Iterator[str]:
            yield "started"
            self.closed.wait(timeout=120)  # like a read on the engine's socket
            raise OSError("connection shut down")
        return LogLines(lines(), close=self.closed.set)


def _serve(service, host_socket: Path) -> tuple[uvicorn.Server, threading.Thread]:  # noqa: ANN001
    server = uvicorn.Server(uvicorn.Config(create_app(service, service.apps), uds=str(host_socket), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, thread


def _threads_settle(baseline: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def test_a_follow_whose_client_leaves_ends_its_threads(service, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    containers = [_Blocking(), _Blocking()]
    monkeypatch.setattr(service.apps, "_instances_by_index", lambda name: list(zip(("web.0", "web.1"), containers)))
    server, thread = _serve(service, tmp_path / "api.sock")
    transport = httpx.HTTPTransport(uds=str(tmp_path / "api.sock"))
    try:
        with httpx.Client(transport=transport, base_url="http://fence", timeout=10) as client:
            client.get("/v1/info")
            baseline = None
            for _ in range(6):  # each follow and leave; nothing may pile up
                with client.stream("GET", "/v1/apps/web/logs", params={"follow": "true"}) as response:
                    lines = response.iter_lines()  # kept: dropping it would close the stream already
                    assert json.loads(next(lines))["line"].endswith("] started")
                    time.sleep(0.2)
                    assert not any(c.closed.is_set() for c in containers)  # followed while connected
                    pumps = {t.name for t in threading.enumerate() if t.name.startswith("follow-")}
                    assert pumps == {"follow-web.0", "follow-web.1"}
                # leaving the block closes the connection: the client is gone
                if baseline is None:  # the first round also starts the server's worker pools
                    time.sleep(1)
                    baseline = threading.active_count()
                assert _threads_settle(baseline) == baseline, [t.name for t in threading.enumerate()]
                assert not [t for t in threading.enumerate() if t.name.startswith("follow-")]
                assert all(c.closed.is_set() for c in containers)
                for c in containers:
                    c.closed.clear()
            assert client.get("/v1/info").status_code == 200  # and the API still answers
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_follower_waits_for_room_and_ends_when_closed() -> None:
    async def run() -> None:
        endless = LogLines(iter(lambda: "line", None))
        follow = LogFollow(sources=[("web.0", lambda: endless)], loop=asyncio.get_running_loop(), max_queued=3).start()
        assert await follow.next_line() == "[web.0] line"
        await asyncio.sleep(0.3)
        assert follow._queue.qsize() <= 3  # noqa: SLF001 - bounded while nobody reads
        follow.close()
        await asyncio.to_thread(follow.threads[0].join, 5)
        assert not follow.threads[0].is_alive()

    asyncio.run(run())
