"""Host claims in the store: a host name routes to one app, whoever asks first, even when two
writers race; the default host is claimed domain-free; the migration fills claims from old apps."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from fence.backend.fake import FakeBackend
from fence.errors import HostTaken, InvalidConfigValue, UsageError
from fence.home import NodeHome
from fence.models import DeploySettings, AppRecord, DropletRecord
from fence.service import NodeService
from fence.store import _MIGRATIONS, StateStore
from fence.wiring import node_service


def _app(name: str, *urls: str, instances: int = 1) -> AppRecord:
    return AppRecord(name=name, instances=instances, memory_mib=64, env={}, started=False, release=None,
                     health_timeout=None, urls=urls, created_at=f"t-{name}")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    store = StateStore(host_db=tmp_path / "state.db")
    yield store
    store.close()


def test_a_url_another_app_holds_is_refused_in_one_line(store: StateStore) -> None:
    store.put_app(_app("shop", "www.shop.test"), domain="localhost")
    with pytest.raises(HostTaken) as caught:
        store.put_app(_app("rival", "www.shop.test"), domain="localhost")
    assert caught.value.message == "host name www.shop.test already routes to app shop"
    assert store.app("rival") is None  # nothing written: the app row went back with the claim
    assert store.host_claims() == {"shop.@": "shop", "www.shop.test": "shop"}


def test_a_url_in_the_router_domain_is_refused_when_that_app_exists(store: StateStore) -> None:
    store.put_app(_app("shop"), domain="localhost")
    with pytest.raises(HostTaken, match="^host name shop.localhost already routes to app shop$"):
        store.put_app(_app("squat", "shop.localhost"), domain="localhost")


def test_an_app_whose_default_host_is_another_apps_url_is_refused(store: StateStore) -> None:
    # The squat of issue 13 item 5: `shop.<domain>` claimed before an app named shop exists.
    store.put_app(_app("squat", "shop.localhost"), domain="localhost")
    with pytest.raises(HostTaken) as caught:
        store.put_app(_app("shop"), domain="localhost")
    assert caught.value.message == "host name shop.localhost already routes to app squat"
    assert store.app("shop") is None
    with pytest.raises(HostTaken):
        store.check_hosts("shop", (), domain="localhost")


def test_an_app_may_list_its_own_default_host(store: StateStore) -> None:
    store.put_app(_app("shop", "shop.localhost"), domain="localhost")
    store.check_hosts("shop", ("shop.localhost",), domain="localhost")


def test_the_default_host_claim_does_not_depend_on_the_domain(store: StateStore) -> None:
    store.put_app(_app("squat", "shop.localhost"), domain="localhost")
    # On another router domain, shop's default host is shop.apps.test: no clash.
    store.put_app(_app("shop"), domain="apps.test")
    with pytest.raises(HostTaken, match="shop.apps.test already routes to app shop"):
        store.put_app(_app("squat", "shop.localhost", "shop.apps.test"), domain="apps.test")


def test_urls_an_app_already_has_are_not_claimed_again(store: StateStore) -> None:
    store.put_app(_app("squat", "www.x.test"), domain="localhost")
    store.put_app(_app("shop"), domain="localhost")
    # A clash made before claims existed (or by a domain change) never blocks the app's other
    # changes: here it is forced into the apps table, as an old database could hold it.
    store._conn.execute("UPDATE apps SET urls_json = ? WHERE name = 'shop'", ('["www.x.test"]',))
    store.put_app(_app("shop", "www.x.test", instances=3), domain="localhost")
    assert store.app("shop").instances == 3
    assert store.host_claims()["www.x.test"] == "squat"


def test_a_released_url_can_be_claimed_by_another_app(store: StateStore) -> None:
    store.put_app(_app("one", "a.test", "b.test"), domain="localhost")
    store.put_app(_app("one", "b.test"), domain="localhost")
    store.put_app(_app("two", "a.test"), domain="localhost")
    store.delete_app("one")
    store.put_app(_app("three", "b.test", "one.localhost"), domain="localhost")
    store.put_app(_app("one"), domain="apps.test")  # one.localhost is three's URL, not one's host now
    assert store.host_claims() == {"a.test": "two", "b.test": "three", "one.localhost": "three",
                                   "one.@": "one", "three.@": "three", "two.@": "two"}


@pytest.mark.parametrize("contest", ["url", "default-host"])
def test_of_writers_racing_for_one_host_exactly_one_wins(tmp_path: Path, contest: str) -> None:
    # Each writer has its own connection, as two daemons or a daemon and a CLI would.
    host_db = tmp_path / "state.db"
    StateStore(host_db=host_db).close()
    writers = 8
    barrier = threading.Barrier(writers)
    won: list[str] = []
    refused: list[str] = []

    def write(n: int) -> None:
        store = StateStore(host_db=host_db)
        record = _app(f"app{n}", "race.test") if contest == "url" or n else _app("shop")
        if contest == "default-host" and n:
            record = _app(f"app{n}", "shop.localhost")
        barrier.wait()
        try:
            store.put_app(record, domain="localhost")
            won.append(record.name)
        except HostTaken as exc:
            refused.append(exc.message)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1 and len(refused) == writers - 1, (won, refused)
    host = "race.test" if contest == "url" else "shop.localhost"
    assert all(message == f"host name {host} already routes to app {won[0]}" for message in refused)


def test_the_migration_claims_the_hosts_of_existing_apps(tmp_path: Path) -> None:
    host_db = tmp_path / "state.db"
    conn = sqlite3.connect(host_db, isolation_level=None)
    for script in _MIGRATIONS[:5]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 5")
    for name, created, urls in (("late", "2024-02", '["Dup.test", "late.test"]'),
                                ("early", "2024-01", '["dup.test", "late.localhost"]')):
        conn.execute("INSERT INTO apps (name, created_at, urls_json) VALUES (?, ?, ?)", (name, created, urls))
    conn.close()
    store = StateStore(host_db=host_db)
    try:
        assert store.schema_version == len(_MIGRATIONS)
        # The older app keeps a URL both listed; early's URL late.localhost stays its (a clash
        # with late's default host, which the router leaves out and reports).
        assert store.host_claims() == {"dup.test": "early", "early.@": "early", "late.@": "late",
                                       "late.localhost": "early", "late.test": "late"}
        with pytest.raises(HostTaken, match="dup.test already routes to app early"):
            store.put_app(_app("third", "dup.test"), domain="localhost")
    finally:
        store.close()


# --- through the app operations -----------------------------------------------------------------

@pytest.fixture
def service(home: NodeHome) -> NodeService:
    service = node_service(home, backend=FakeBackend(userns_remap=False))
    yield service
    service.close()


def _droplet(app: str) -> DropletRecord:
    return DropletRecord(id="d" * 64, app=app, size=1, buildpacks=(), start_command="serve",
                         process_types={"web": "serve"}, config_vars={}, stack_image="fence/stack:bookworm",
                         stack_image_id="sha256:x", commit=None, staged_at="t", staging_id="s")


def test_a_push_of_the_squatted_name_is_refused_before_any_work(service: NodeService) -> None:
    service.store.put_app(_app("squat"), domain="localhost")
    service.apps.add_route("squat", "Shop.localhost")
    with pytest.raises(HostTaken, match="^host name shop.localhost already routes to app squat$"):
        service.apps.deploy(_droplet("shop"), DeploySettings(instances=1, memory_mib=64),
                            on_line=lambda line: None)
    assert service.store.app("shop") is None
    assert service.backend.created == []  # no droplet image was made


def test_route_add_of_another_apps_host_is_refused(service: NodeService) -> None:
    for name in ("shop", "other"):
        service.store.put_app(_app(name), domain="localhost")
    service.apps.add_route("shop", "www.shop.test")
    for taken, holder in (("www.shop.test", "shop"), ("shop.localhost", "shop")):
        with pytest.raises(HostTaken, match=f"already routes to app {holder}"):
            service.apps.add_route("other", taken)
    service.apps.remove_route("shop", "www.shop.test")
    assert service.apps.add_route("other", "www.shop.test").urls[-1].startswith("http://www.shop.test")


def test_urls_per_app_are_capped_by_router_max_urls(service: NodeService) -> None:
    service.config.set("fence", "router/max_urls", "2")
    service.store.put_app(_app("shop"), domain="localhost")
    service.apps.add_route("shop", "a.test")
    service.apps.add_route("shop", "b.test")
    with pytest.raises(UsageError) as caught:
        service.apps.add_route("shop", "c.test")
    assert caught.value.message == "app shop would have 3 URLs besides shop.localhost; router/max_urls allows 2"
    with pytest.raises(UsageError, match="router/max_urls allows 2"):
        service.apps.deploy(_droplet("new"), DeploySettings(instances=1, memory_mib=64,
                                                            urls=("x.test", "y.test", "z.test")),
                            on_line=lambda line: None)
    assert service.store.app("shop").urls == ("a.test", "b.test")


@pytest.mark.parametrize("raw", ["-1", "1001", "many"])
def test_router_max_urls_refuses_bad_values(service: NodeService, raw: str) -> None:
    with pytest.raises(InvalidConfigValue) as caught:
        service.config.set("fence", "router/max_urls", raw)
    assert "router/max_urls" in caught.value.message and "\n" not in caught.value.message
    assert service.config.fence("router/max_urls") == 16
