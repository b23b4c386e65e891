"""Backing services without an engine (issue 16): config keys, manifest `services:`, credentials,
records, env shapes, lifecycle rules and crash restarts on the FakeBackend, backup ids, the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fence import labels
from fence.backend.fake import FakeBackend
from fence.config.store import ConfigStore
from fence.errors import (
    AppNotFound,
    InvalidConfigValue,
    ManifestInvalid,
    ServiceConflict,
    ServiceNotFound,
    UsageError,
)
from fence.home import NodeHome
from fence.running.backoff import BackoffPolicy
from fence.services.backup_ids import check_backup_id
from fence.services.credentials import CredentialStore, generate
from fence.services.env import service_env
from fence.services.kinds import KINDS, check_service_name, kind_of
from fence.services.lifecycle import ServiceManager
from fence.services.records import ServiceRecord, ServiceRecords
from fence.staging.manifest import parse_manifest
from fence.store import StateStore

IMAGES = ("fence/stack:bookworm", *(k.image_ref for k in KINDS.values()))


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def _serve(proc) -> int:  # noqa: ANN001 - the fake's FakeProcess: a server that keeps running
    proc.sleep(float("inf"))
    return 0


@pytest.fixture
def parts(tmp_path: Path):  # noqa: ANN201
    home = NodeHome(host_root=tmp_path / "home")
    home.ensure()
    StateStore(host_db=home.host_db).close()
    backend = FakeBackend(images=IMAGES)
    backend.programs["run"] = _serve
    backend.programs["pg_isready"] = lambda proc: 0
    backend.programs["bash"] = lambda proc: 0
    backend.programs["mysqladmin"] = lambda proc: 0
    config = ConfigStore(host_file=home.host_config)
    config.set("fence", "services/health_timeout", "5")
    records = ServiceRecords(host_db=home.host_db)
    clock = FakeClock()
    manager = ServiceManager(backend=backend, config=config, records=records,
                             credentials=CredentialStore(home=home), node_id="n1",
                             app_exists=lambda app: app in {"shop", "blog"}, clock=clock,
                             policy=BackoffPolicy())
    return home, backend, config, records, manager, clock


@pytest.mark.parametrize("key, value", [
    ("services/backup_interval", "-1"), ("services/backup_interval", "soon"),
    ("services/backup_keep", "0"), ("services/backup_keep", "1001"),
    ("services/memory", "1K"), ("services/health_timeout", "0"), ("services/max_backup", "0"),
])
def test_bad_service_config_values_are_refused(tmp_path: Path, key: str, value: str) -> None:
    config = ConfigStore(host_file=tmp_path / "config.yml")
    with pytest.raises(InvalidConfigValue):
        config.set("fence", key, value)


def test_manifest_services_map_names_to_types() -> None:
    manifest = parse_manifest(b"services:\n  db: postgresql\n  cache: redis\n", source_name="stackato.yml")
    assert dict(manifest.services) == {"db": "postgresql", "cache": "redis"}


@pytest.mark.parametrize("text, message", [
    (b"services:\n  - db\n", "line 2, column 3: services must be a mapping"),
    (b"services: postgresql\n", "services must be a mapping"),
    (b"services:\n  db: mongodb\n", "unknown service type 'mongodb'"),
    (b"services:\n  Db!: redis\n", "service name 'Db!' is not allowed"),
    (b"services:\n  db: [postgresql]\n", "services.db must be a service type"),
    (b"services:\n  db:\n", "services.db must be a service type"),
])
def test_bad_manifest_services_get_one_line_errors(text: bytes, message: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(text, source_name="stackato.yml")
    assert message in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize("name", ["", "Db", "1db", "db-", "a" * 33, "db;rm", "../db", "db_1"])
def test_bad_service_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="not allowed"):
        check_service_name(name)


def test_unknown_type_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown service type 'mongo'"):
        kind_of("mongo")


@pytest.mark.parametrize("backup", ["", "x", "20260101T000000Z-XYZ123", "../20260101T000000Z-0a1b2c"])
def test_bad_backup_ids_are_refused(backup: str) -> None:
    with pytest.raises(UsageError, match="malformed"):
        check_backup_id(backup)


def test_credentials_are_strong_kept_0600_and_never_shown_by_repr(tmp_path: Path) -> None:
    home = NodeHome(host_root=tmp_path)
    store = CredentialStore(home=home)
    made = store.ensure("db", "postgresql")
    assert store.ensure("db", "postgresql") == made  # made once
    assert len(made.password) == 32 and made.password.isalnum() and made.database == "db_db"
    assert stat.S_IMODE(home.host_service_credentials("db").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.host_services.stat().st_mode) == 0o700
    assert made.password not in repr(made) and made.password not in str(made)
    assert generate("db", "postgresql").password != made.password


def test_env_has_cloud_foundrys_and_stackatos_shapes_and_the_first_of_a_kind_wins() -> None:
    creds = generate("x", "postgresql")
    pg1 = ServiceRecord(name="db", type="postgresql", memory_mib=256, created_at="t", image="i")
    pg2 = ServiceRecord(name="other-db", type="postgresql", memory_mib=256, created_at="t", image="i")
    cache = ServiceRecord(name="cache", type="redis", memory_mib=128, created_at="t", image="i")
    env = service_env([(pg1, creds), (pg2, creds), (cache, creds)])
    vcap = json.loads(env["VCAP_SERVICES"])
    assert [s["name"] for s in vcap["postgresql"]] == ["db", "other-db"]
    assert vcap["postgresql"][0]["credentials"]["uri"] == env["DATABASE_URL"] == env["DB_URL"]
    assert env["DATABASE_URL"].startswith(f"postgres://{creds.user}:{creds.password}@db:5432/")
    assert env["OTHER_DB_URL"].endswith("@other-db:5432/" + creds.database)
    assert env["REDIS_URL"] == env["CACHE_URL"] == f"redis://:{creds.password}@cache:6379/0"
    assert json.loads(env["STACKATO_SERVICES"])["cache"]["port"] == 6379
    assert service_env([]) == {}


def test_create_runs_one_hardened_container_with_a_labelled_volume_and_no_port(parts) -> None:  # noqa: ANN001
    home, backend, _, records, manager, _ = parts
    view = manager.create(kind="postgresql", name="db")
    assert view.state == "running" and view.healthy and view.port == 5432
    [spec] = [s for s in backend.created if s.labels.get(labels.ROLE) == labels.ROLE_SERVICE]
    assert spec.user == "1001:1001" and spec.ports == () and spec.network == "fence-n1-svcnet-db"
    assert [m.volume for m in spec.volumes] == ["fence-n1-svcdata-db"]
    assert backend.volume_info("fence-n1-svcdata-db").labels[labels.SERVICE] == "db"
    assert "SVC_PASSWORD" not in "".join(spec.env)  # credentials travel as a file
    with pytest.raises(ServiceConflict, match="exists"):
        manager.create(kind="redis", name="db")


def test_bind_joins_the_apps_network_unbind_leaves_it_and_delete_is_refused_while_bound(parts) -> None:  # noqa: ANN001
    _, backend, _, records, manager, _ = parts
    manager.create(kind="redis", name="cache")
    assert manager.bind("cache", "shop") and not manager.bind("cache", "shop")
    [container] = backend.list({labels.SERVICE: "cache"})
    assert "fence-n1-shop" in container.networks()
    with pytest.raises(AppNotFound):
        manager.bind("cache", "nosuch")
    with pytest.raises(ServiceNotFound):
        manager.bind("nosuch", "shop")
    with pytest.raises(ServiceConflict, match="bound to shop"):
        manager.delete("cache")
    assert manager.unbind("cache", "shop")
    assert "fence-n1-shop" not in container.networks()
    manager.delete("cache")
    assert backend.volume_info("fence-n1-svcdata-cache") is not None  # data kept without --delete-data
    assert records.get("cache") is None


def test_delete_data_removes_the_volume_and_credentials(parts) -> None:  # noqa: ANN001
    home, backend, _, _, manager, _ = parts
    manager.create(kind="redis", name="cache")
    manager.delete("cache", delete_data=True)
    assert backend.volume_info("fence-n1-svcdata-cache") is None
    assert not home.host_service_credentials("cache").exists()


def test_a_crashed_service_restarts_with_the_instances_backoff(parts) -> None:  # noqa: ANN001
    _, backend, _, _, manager, clock = parts
    manager.create(kind="redis", name="cache")
    [container] = backend.list({labels.SERVICE: "cache"})
    for _ in range(3):  # the first crashes restart at once
        container.exit(1)
        manager.reconcile()
        assert container.info().running
    container.exit(1)
    manager.reconcile()  # the fourth waits 30 s
    assert not container.info().running
    clock.t += 31
    manager.reconcile()
    assert container.info().running
    assert manager.show("cache").restarts == 4


def test_a_daemon_restart_adopts_the_running_container(parts) -> None:  # noqa: ANN001
    home, backend, config, records, manager, clock = parts
    manager.create(kind="postgresql", name="db")
    [before] = backend.list({labels.SERVICE: "db"})
    again = ServiceManager(backend=backend, config=config, records=records, credentials=CredentialStore(home=home),
                           node_id="n1", clock=clock)
    again.reconcile()
    assert [c.id for c in backend.list({labels.SERVICE: "db"})] == [before.id] and before.info().running


def test_fence_service_cli_refuses_bad_input_before_calling_the_daemon(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from fence.cli import fence

    monkeypatch.setenv("FENCE_HOME", str(tmp_path))  # no daemon there: a call would fail differently
    runner = CliRunner()
    for args, message in ((["service", "create", "mongodb", "x"], "unknown service type"),
                          (["service", "create", "redis", "Bad"], "not allowed"),
                          (["service", "create", "redis", "r", "--mem", "lots"], "lots"),
                          (["service", "restore", "db", "nope"], "malformed"),
                          (["service", "bind", "bad app", "db"], "bad app")):
        result = runner.invoke(fence, args)
        assert result.exit_code != 0 and message in result.output + str(result.exception), (args, result.output)


def test_a_binding_of_a_deleted_app_does_not_keep_the_service(parts) -> None:  # noqa: ANN001
    _, _, _, records, manager, _ = parts
    manager.create(kind="redis", name="cache")
    manager.bind("cache", "gone-app", require_app=False)  # as a push does before its app is recorded
    manager.delete("cache", delete_data=True)
    assert records.get("cache") is None
