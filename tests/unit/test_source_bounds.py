"""Uploads through the API: source checks run at most staging/concurrency at once, and a packed folder says so."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

import fence.staging.session
from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.errors import SourceRefused
from fence.home import NodeHome
from fence.staging.queue import StagingSlots
from fence.wiring import config_store, node_service


def _tar_gz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("bin/")
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    return buffer.getvalue()


class _Recorder:
    """Stands in for prepare_source: records each call and how many ran at once, then refuses."""

    def __init__(self, hold: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.now = 0
        self.most = 0
        self.hold = hold
        self._lock = threading.Lock()

    def __call__(self, origin: str, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append(kwargs)
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold)
        with self._lock:
            self.now -= 1
        raise SourceRefused(entry="'upload'", why="stopped by the test")


@pytest.fixture
def api(home: NodeHome) -> TestClient:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    yield TestClient(create_app(service, service.apps))
    service.close()


def _stage(api: TestClient, **params: str) -> list[str]:
    response = api.post("/v1/stagings", params=params, content=_tar_gz())
    assert response.status_code == 200, response.text
    return response.text.splitlines()


def test_the_cli_says_a_folder_and_a_bare_upload_is_an_archive(api: TestClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(fence.staging.session, "prepare_source", recorder)
    _stage(api, packed_folder="true")
    _stage(api)
    assert [call["packed_folder"] for call in recorder.calls] == [True, False]


def test_six_concurrent_uploads_are_checked_at_most_concurrency_at_once(api: TestClient, home: NodeHome,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config_store(home).set("fence", "staging/concurrency", "2")
    recorder = _Recorder(hold=0.3)
    monkeypatch.setattr(fence.staging.session, "prepare_source", recorder)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: "\n".join(_stage(api)), range(6)))
    assert len(recorder.calls) == 6 and recorder.most == 2
    assert all("stopped by the test" in answer for answer in answers)
    assert any("Queued: 2 sources being checked (staging/concurrency is 2)" in answer for answer in answers)


def test_the_source_gate_counts_apart_from_the_staging_slots() -> None:
    stagings = StagingSlots(limit=lambda: 1)
    sources = StagingSlots.for_sources(limit=lambda: 1)
    with stagings.slot(on_line=lambda _: None, cancelled=lambda: False):
        told: list[str] = []
        with sources.slot(on_line=told.append, cancelled=lambda: False):  # not held up by the staging
            assert sources.running == 1 and stagings.running == 1 and told == []
