"""The daemon API on the fake backend: info, images, and errors sent as typed JSON."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.errors import EXIT_USAGE, RequestInvalid, from_wire
from fence.models import AppView
from fence.home import NodeHome
from fence.wiring import node_service


@pytest.fixture
def client(home: NodeHome) -> TestClient:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
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


def test_unknown_paths_methods_and_unreadable_bodies_answer_the_one_line_shape(client: TestClient) -> None:
    for response, status, message in (
            (client.get("/v1/nope"), 404, "bad request: GET /v1/nope: Not Found"),
            (client.put("/v1/info"), 405, "bad request: PUT /v1/info: Method Not Allowed"),
            (client.post("/v1/apps/web/env", content=b"\xff", headers={"content-type": "application/json"}), 400,
             "bad request: POST /v1/apps/web/env: There was an error parsing the body")):
        assert response.status_code == status
        error = from_wire(response.json()["error"])
        assert isinstance(error, RequestInvalid) and error.message == message


@pytest.mark.parametrize(("path", "send", "where"), [
    ("/v1/apps/web/env", {"json": {"set": "A=1"}}, "body field set"),
    ("/v1/apps/web/env", {"json": {"set": {"A": 1}}}, "body field set.A"),
    ("/v1/apps/web/env", {"json": {"unset": "A"}}, "body field unset"),
    ("/v1/apps/web/env", {"json": {"sett": {"A": "1"}}}, "body field sett"),
    ("/v1/apps/web/env", {"json": []}, "body"),
    ("/v1/apps/web/env", {"content": b"{not json", "headers": {"content-type": "application/json"}}, "body"),
    ("/v1/apps/web/run", {"json": {"argv": "id"}}, "body field argv"),
    ("/v1/apps/web/run", {"json": {"argv": [1, 2]}}, "body field argv.0"),
    ("/v1/apps/web/run", {}, "body"),
    ("/v1/apps/web/routes", {"json": {"add": "a.test", "remove": "b.test"}}, "body"),
    ("/v1/apps/web/routes", {"json": {}}, "body"),
    ("/v1/apps/web/routes", {"json": {"add": ["a.test"]}}, "body field add"),
    ("/v1/apps/web/scale", {"params": {"instances": "many"}}, "query parameter instances"),
    ("/v1/apps/web/rollback", {"params": {"release": "1.5"}}, "query parameter release"),
])
def test_a_request_that_does_not_fit_its_endpoint_is_a_one_line_422(client: TestClient, path: str,
                                                                     send: dict, where: str) -> None:
    response = client.post(path, **send)
    assert response.status_code == 422, response.text  # checked before the unknown app is looked up
    error = from_wire(response.json()["error"])
    assert isinstance(error, RequestInvalid) and error.exit_code == EXIT_USAGE and error.user_error
    assert error.message.startswith(f"bad request: {where}: "), error.message
    assert "\n" not in error.message and len(error.message) < 200, error.message


def test_the_error_names_one_problem_counts_the_rest_and_cuts_what_it_echoes(client: TestClient) -> None:
    error = from_wire(client.post("/v1/apps/web/env", json={"set": {"A": "x" * 3000, "B": 1, "C": [2]}}).json()["error"])
    assert error.message == "bad request: body field set.B: Input should be a valid string (got 1); and 1 more problem"
    error = from_wire(client.post("/v1/apps/web/run", json={"argv": ["\n" + "y" * 3000, 7]}).json()["error"])
    assert error.message.startswith("bad request: body field argv.1: ") and len(error.message) < 200


def test_a_body_that_fits_reaches_the_app(client: TestClient) -> None:
    for path, body in (("/v1/apps/web/env", {"set": {"A": "1"}}), ("/v1/apps/web/env", {}),
                       ("/v1/apps/web/routes", {"add": "web.example.com"}),
                       ("/v1/apps/web/routes", {"remove": "web.example.com"})):
        response = client.post(path, json=body)
        assert response.status_code == 404 and response.json()["error"]["type"] == "AppNotFound", (path, body)
    # A task streams from the start: the unknown app is its stream's error event.
    events = [json.loads(line) for line in client.post("/v1/apps/web/run", json={"argv": ["id"]}).text.splitlines()]
    assert events[-1]["event"] == "error" and events[-1]["error"]["type"] == "AppNotFound"


def test_openapi_describes_bodies_answers_and_the_error_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 shape is never sent
    ref = "#/components/schemas/"

    def body(path: str) -> str:
        return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]

    def answer(path: str, method: str = "get", status: str = "200") -> dict:
        return spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert body("/v1/apps/{name}/env") == ref + "EnvChange"
    assert body("/v1/apps/{name}/run") == ref + "TaskOrder"
    assert body("/v1/apps/{name}/routes") == ref + "RouteChange"
    assert answer("/v1/apps")["items"]["$ref"] == ref + "AppView"
    assert answer("/v1/apps/{name}")["$ref"] == ref + "AppView"
    assert answer("/v1/info")["$ref"] == ref + "NodeStatus"
    assert answer("/v1/gc", "post")["$ref"] == ref + "GcReport"
    assert answer("/v1/apps/{name}", status="default")["$ref"] == ref + "ErrorAnswer"
    assert set(schemas["InstanceView"]["required"]) >= {"index", "state", "container", "release"}



def test_bodies_reach_the_app_operations_as_typed_values(home: NodeHome, monkeypatch: pytest.MonkeyPatch) -> None:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    seen: list[tuple] = []
    view = AppView(name="web", url="u", urls=("u",), state="started", instances=1, running=1, memory_mib=64,
                   release=1, droplet=None, stack_image=None, env={})
    monkeypatch.setattr(service.apps, "app", lambda name: None)
    monkeypatch.setattr(service.apps, "set_env",
                        lambda name, changes, removals, out: seen.append(("env", name, changes, removals)) or view)
    monkeypatch.setattr(service.apps, "run_task", lambda name, argv, out, task_id: seen.append(("run", name, argv)) or 7)
    monkeypatch.setattr(service.apps, "add_route", lambda name, host: seen.append(("add", name, host)) or view)
    monkeypatch.setattr(service.apps, "remove_route", lambda name, host: seen.append(("remove", name, host)) or view)
    try:
        client = TestClient(create_app(service, service.apps))
        assert '"event": "result"' in client.post("/v1/apps/web/env", json={"set": {"A": "1"}, "unset": ["B"]}).text
        assert '"exit_code": 7' in client.post("/v1/apps/web/run", json={"argv": ["id", "-u"]}).text
        assert client.post("/v1/apps/web/routes", json={"add": "w.example.com"}).json()["name"] == "web"
        assert client.post("/v1/apps/web/routes", json={"remove": "w.example.com"}).status_code == 200
    finally:
        service.close()
    assert seen == [("env", "web", {"A": "1"}, ("B",)), ("run", "web", ("id", "-u")),
                    ("add", "web", "w.example.com"), ("remove", "web", "w.example.com")]
