"""The daemon API on the fake backend: info, images, and errors sent as typed JSON."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.home import NodeHome
from fence.wiring import node_service


@pytest.fixture
def client(home: NodeHome) -> TestClient:
    service = node_service(home, backend=FakeBackend(userns_remap=False))
    yield TestClient(create_app(service, service.apps))
    service.close()


def test_info_reports_engine_userns_stack_and_warnings(client: TestClient) -> None:
    body = client.get("/v1/info").json()
    assert body["engine"]["userns_remap"] is False
    assert body["stack"] == {"configured": "fence/stack:bookworm", "in_use": "fence/stack:bookworm",
                             "image_id": body["stack"]["image_id"], "present": True, "fallback": False}
    assert body["stack"]["image_id"].startswith("sha256:")
    assert body["apps"] == 0 and body["schema_version"] >= 1
    assert any("user-namespace remapping is off" in w for w in body["warnings"])


def test_missing_stack_uses_fallback_then_warns(client: TestClient, home: NodeHome) -> None:
    from fence.wiring import config_store
    config = config_store(home)
    config.set("fence", "docker/image", "nowhere/stack:1")
    body = client.get("/v1/info").json()
    assert body["stack"]["in_use"] is None and body["stack"]["present"] is False
    assert any("nowhere/stack:1 is not on this node" in w for w in body["warnings"])
    config.set("fence", "docker/images", '["fence/stack:bookworm"]', as_json=True)
    body = client.get("/v1/info").json()
    assert body["stack"]["in_use"] == "fence/stack:bookworm" and body["stack"]["fallback"] is True
    assert any("using fallback fence/stack:bookworm" in w for w in body["warnings"])


def test_images_lists_configured_and_missing(client: TestClient, home: NodeHome) -> None:
    from fence.wiring import config_store
    config_store(home).set("fence", "docker/images", "old/stack:1")
    images = {i["ref"]: i for i in client.get("/v1/images").json()}
    assert images["fence/stack:bookworm"]["configured"] is True
    assert images["old/stack:1"]["image_id"] is None and images["old/stack:1"]["fallback"] is True


def test_unknown_route_is_json_404(client: TestClient) -> None:
    assert client.get("/v1/nope").status_code == 404
