"""The apps list (``GET /v1/apps``): batched store reads give what the per-app reads give, and the
wire decoding that the daemon and the client share."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from fastapi.testclient import TestClient

from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.home import NodeHome
from fence.models import AppRecord, AppView, BuildpackUse, DropletRecord, InstanceView, ReleaseRecord
from fence.service import NodeService
from fence.store import KEEP_RELEASES, StateStore
from fence.wire import from_wire, to_wire
from fence.wiring import config_store, node_service


def _droplet(app: str, n: int) -> DropletRecord:
    return DropletRecord(id=f"{n:064x}", app=app, size=100 + n,
                         buildpacks=(BuildpackUse(name="python", version=f"v{n}", origin="builtin:python"),),
                         start_command="serve", process_types={"web": "serve"}, config_vars={"A": "1"},
                         stack_image=f"fence/stack:{n}", stack_image_id=f"sha256:{n}", commit=None,
                         staged_at=f"2024-01-01T00:00:{n % 60:02d}+00:00", staging_id=f"s{n}")


def _app(name: str, *, urls: tuple[str, ...] = (), started: bool = False) -> AppRecord:
    return AppRecord(name=name, instances=1, memory_mib=128, env={"K": name}, started=started, release=None,
                     health_timeout=None, urls=urls, created_at="t")


def _fill(store: StateStore) -> None:
    """Apps with no release, one release, more releases than are kept, a shared droplet, a droplet
    whose record is gone, and extra host names."""
    store.put_app(_app("a-none"))
    store.put_app(_app("b-one", urls=("b.example.com", "www.b.example.com")))
    store.add_droplet(_droplet("b-one", 1))
    store.add_release("b-one", _droplet("b-one", 1).id, "t1", "push")
    store.put_app(_app("c-many", started=True))
    for n in range(2, 2 + KEEP_RELEASES + 2):
        store.add_droplet(_droplet("c-many", n))
        store.add_release("c-many", _droplet("c-many", n).id, f"t{n}", f"push {n}")
    store.put_app(_app("d-shared"))
    store.add_release("d-shared", _droplet("b-one", 1).id, "t", "push")
    store.put_app(_app("e-gone"))
    store.add_release("e-gone", "f" * 64, "t", "push")  # its droplet record was never written


@pytest.fixture
def service(home: NodeHome) -> NodeService:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    _fill(service.store)
    yield service
    service.close()


def test_releases_by_app_equals_each_apps_releases(service: NodeService) -> None:
    store = service.store
    batched = store.releases_by_app()
    assert set(batched) == {"b-one", "c-many", "d-shared", "e-gone"}
    for app in store.apps():
        assert batched.get(app.name, []) == store.releases(app.name)
    assert [r.number for r in batched["c-many"]] == list(range(KEEP_RELEASES + 2, 2, -1))


def test_droplets_by_id_equals_one_by_one_and_leaves_unknown_ids_out(service: NodeService) -> None:
    store = service.store
    ids = [d.id for d in store.droplets()]
    batched = store.droplets_by_id([*ids, *ids, "f" * 64])
    assert batched == {i: store.droplet(i) for i in ids}
    assert store.droplets_by_id([]) == {}


def test_droplets_by_id_reads_more_ids_than_one_query_takes(tmp_path: Path) -> None:
    store = StateStore(host_db=tmp_path / "state.db")
    for n in range(1200):
        store.add_droplet(_droplet(f"app{n}", n))
    wanted = [f"{n:064x}" for n in range(0, 1200, 1)]
    assert sorted(store.droplets_by_id(wanted)) == sorted(wanted)
    store.close()


@pytest.mark.parametrize("port", ["80", "8081"])
def test_views_equal_each_apps_view(service: NodeService, home: NodeHome, port: str) -> None:
    config_store(home).set("fence", "router/port", port)
    views = service.apps.views()
    assert [v.name for v in views] == ["a-none", "b-one", "c-many", "d-shared", "e-gone"]
    assert views == [service.apps.view(v.name) for v in views]
    by_name = {v.name: v for v in views}
    suffix = "" if port == "80" else f":{port}"
    assert by_name["b-one"].urls == (f"http://b-one.localhost{suffix}/", f"http://b.example.com{suffix}/",
                                     f"http://www.b.example.com{suffix}/")
    assert by_name["b-one"].url == service.apps.url("b-one")
    assert by_name["a-none"].droplet is None and by_name["a-none"].releases == ()
    assert by_name["c-many"].stack_image == f"fence/stack:{1 + KEEP_RELEASES + 2}"
    assert by_name["d-shared"].stack_image == "fence/stack:1"
    assert by_name["e-gone"].droplet == "f" * 64 and by_name["e-gone"].stack_image is None


def test_apps_route_sends_the_views_as_the_client_reads_them(service: NodeService) -> None:
    body = TestClient(create_app(service, service.apps)).get("/v1/apps").json()
    assert body == to_wire(service.apps.views())
    assert [from_wire(AppView, item) for item in body] == service.apps.views()


def test_wire_round_trip_of_nested_optional_and_mapping_fields() -> None:
    view = AppView(name="a", url="u", urls=("u", "v"), state="started", instances=2, running=1, memory_mib=64,
                   release=None, droplet=None, stack_image=None, env={"K": "v"},
                   instance_list=(InstanceView(index=0, state="running", container="c", host_port=None,
                                               restarts=1, release=3, reason="r"),),
                   releases=(ReleaseRecord(app="a", number=3, droplet="d", created_at="t"),))
    wire = to_wire(view)
    assert wire["urls"] == ["u", "v"] and wire["instance_list"][0]["host_port"] is None
    for _ in range(2):  # the second decode uses the decoders made by the first
        assert from_wire(AppView, wire) == view
    assert to_wire({"p": PurePosixPath("/x"), 1: (True, 1.5)}) == {"p": "/x", "1": [True, 1.5]}


def test_wire_refuses_a_non_object_for_a_dataclass() -> None:
    with pytest.raises(ValueError, match="expected an object for ReleaseRecord"):
        from_wire(AppView, {**to_wire(AppView(name="a", url="u", urls=(), state="s", instances=0, running=0,
                                               memory_mib=1, release=None, droplet=None, stack_image=None,
                                               env={})), "releases": ["nope"]})
