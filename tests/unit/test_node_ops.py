"""Node operations without an engine: new config keys, node info and gc through the API, status warnings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.config.types import BadValue, FloatType
from fence.home import NodeHome
from fence.models import DiskUsage, GcItem, GcReport, InstanceView
from fence.node import crash_loop_warnings, disk_warnings
from fence.wiring import node_service
from kato.gc_cmd import gc_text


@pytest.mark.parametrize(("key", "bad"), [
    ("node/memory_overcommit", "-1"), ("node/memory_overcommit", "0"), ("node/memory_overcommit", "lots"),
    ("node/memory_overcommit", "nan"), ("node/memory_overcommit", "1e3"), ("node/memory_overcommit", "101"),
    ("gc/interval", "-5"), ("gc/interval", "1h"), ("gc/interval", "604801"),
])
def test_new_keys_refuse_bad_values_with_one_line(kato, key: str, bad: str) -> None:  # noqa: ANN001
    before = kato("config", "get", "fence", key).stdout
    result = kato("config", "set", "fence", key, bad)
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: fence {key}: {bad!r} is not allowed")
    assert kato("config", "get", "fence", key).stdout == before


def test_new_keys_defaults_and_good_values(kato) -> None:  # noqa: ANN001
    assert kato("config", "get", "fence", "node/memory_overcommit").stdout == "1.0\n"
    assert kato("config", "get", "fence", "gc/interval").stdout == "3600\n"
    assert kato("config", "set", "fence", "node/memory_overcommit", "1.5").stdout == "1.5\n"
    assert kato("config", "set", "fence", "node/memory_overcommit", "2").stdout == "2.0\n"
    assert kato("config", "set", "fence", "gc/interval", "0").stdout == "0\n"


def test_rollout_flag_only_goes_with_the_stack_keys(kato) -> None:  # noqa: ANN001
    result = kato("config", "set", "fence", "router/port", "8081", "--rollout")
    assert result.exit_code == 2 and "--rollout goes with fence docker/image" in result.stderr
    assert kato("config", "get", "fence", "router/port").stdout == "8080\n"


def test_float_type() -> None:
    kind = FloatType(0.1, 100.0)
    assert kind.parse(" 1.25 ") == 1.25 and kind.check(3) == 3.0
    for bad in ("", "1,5", "inf", "0.05"):
        with pytest.raises(BadValue):
            kind.parse(bad)
    with pytest.raises(BadValue):
        kind.check(True)


@pytest.fixture
def client(home: NodeHome) -> TestClient:
    service = node_service(home, backend=FakeBackend(), router=None)
    yield TestClient(create_app(service, service.apps))
    service.close()


def test_node_info_and_gc_through_the_api(client: TestClient, home: NodeHome) -> None:
    info = client.get("/v1/node").json()
    assert info["cpus"] >= 1 and info["memory_total"] > 0 and len(info["load"]) == 3
    assert info["memory_promised_mib"] == 0 and info["memory_limit_mib"] == info["memory_total"] // 2**20
    assert info["disks"][0]["label"] == "FENCE_HOME" and info["disks"][0]["path"] == str(home.host_root)
    assert info["containers"] == {} and info["engine"]["version"] == "fake"
    (home.host_root / "caches").mkdir()
    (home.host_root / "caches" / "gone.tar").write_bytes(b"12345")
    dry = client.post("/v1/gc", params={"dry_run": "true"}).json()
    assert dry["dry_run"] is True and [(i["kind"], i["name"], i["size"]) for i in dry["items"]] == [("cache", "gone", 5)]
    assert (home.host_root / "caches" / "gone.tar").exists()
    real = client.post("/v1/gc").json()
    assert real["items"] == dry["items"] and not (home.host_root / "caches" / "gone.tar").exists()


def test_images_list_apps_per_image(client: TestClient) -> None:
    images = {i["ref"]: i for i in client.get("/v1/images").json()}
    assert images["fence/stack:bookworm"]["apps"] == [] and images["fence/stack:bookworm"]["in_use"] is True


def test_status_warnings_for_full_disks_and_crash_loops() -> None:
    disks = [DiskUsage(label="FENCE_HOME", path="/var/lib/fence", total=100, used=95, free=5, percent=95.0),
             DiskUsage(label="engine data root", path="/var/lib/docker", total=100, used=50, free=50, percent=50.0)]
    [warning] = disk_warnings(disks)
    assert warning.startswith("disk of FENCE_HOME (/var/lib/fence) is 95 % full") and "kato gc" in warning
    views = {"web": [InstanceView(index=0, state="running", container="c", host_port=1, restarts=1, release=1),
                     InstanceView(index=1, state="crashed", container="d", host_port=None, restarts=4, release=1,
                                  reason="exited 1")],
             "fine": [InstanceView(index=0, state="running", container="e", host_port=2, restarts=2, release=1)]}
    assert crash_loop_warnings(views) == [
        "app web is crash-looping: instance 1 restarted 4 times (last: exited 1); "
        "see `fence app web` and `fence logs web`"]


def test_gc_text() -> None:
    report = GcReport(dry_run=True, items=(GcItem(kind="droplet", name="ab" * 32, size=2_500_000, detail="old"),
                                           GcItem(kind="container", name="0123456789ab", detail="stopped")))
    assert gc_text(report).splitlines() == [
        f"would remove droplet {'ab' * 32} (2.5 MB): old",
        "would remove container 0123456789ab: stopped",
        "would free 2.5 MB in 2 items (1 droplet, 1 container)"]
    assert gc_text(GcReport(dry_run=False)) == "freed 0 B in 0 items"


def test_one_rollout_at_a_time_and_restage_needs_a_kept_source(home: NodeHome) -> None:
    from fence.errors import NoRelease, RolloutBusy, SourceNotKept
    from fence.models import AppRecord

    service = node_service(home, backend=FakeBackend(), router=None)
    try:
        with service._rollout_lock:  # noqa: SLF001 - what a running rollout holds
            with pytest.raises(RolloutBusy):
                service.rollout(restage=False, on_line=print)
        assert service.rollout(restage=False, on_line=print).apps == ()
        service.store.put_app(AppRecord(name="web", instances=1, memory_mib=64, env={}, started=True, release=None,
                                        health_timeout=None, urls=(), created_at="t"))
        with pytest.raises(NoRelease):
            service.restage("web", print)
        service.store.add_release("web", "f" * 64, "t", "push")
        with pytest.raises(SourceNotKept) as missing:
            service.restage("web", print)
        assert missing.value.message.startswith("cannot restage web: fence keeps the source of droplets staged")
        assert missing.value.exit_code == 4
    finally:
        service.close()


def test_the_daemon_collects_garbage_every_gc_interval(home: NodeHome) -> None:
    import time

    service = node_service(home, backend=FakeBackend(), router=None)
    service.config.set("fence", "gc/interval", "1")
    ghost = home.host_root / "caches" / "ghost.tar"
    ghost.parent.mkdir()
    ghost.write_bytes(b"x")
    service.start()
    try:
        deadline = time.monotonic() + 10
        while ghost.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ghost.exists()
    finally:
        service.close()
