"""Backing services on the real engine (issue 16): push with `services:`, env, network isolation,
hardening, data across restarts, daemon kill -9 and redeploys, backups and restores, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fence import labels
from tests.integration.node_kit import Node, started_node

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "services-app"
IMAGES = ("fence/service-postgresql:bookworm", "fence/service-redis:bookworm", "fence/service-mysql:bookworm")


def _missing_images() -> list[str]:
    return [ref for ref in IMAGES
            if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    missing = _missing_images()
    if missing:
        pytest.skip(f"service images {', '.join(missing)} are not built (`make services` builds them)")
    root = tmp_path_factory.mktemp("svcnode") / "home"
    gen = started_node(root)
    node = next(gen)
    try:
        host_src = tmp_path_factory.mktemp("svcapp") / "services-app"
        shutil.copytree(EXAMPLE, host_src)
        result = node.cli("fence", "push", str(host_src), "--buildpack", "procfile", timeout=600)
        assert result.exit_code == 0, result.stdout[-2000:] + result.stderr
        node.host_src = host_src  # type: ignore[attr-defined]
        yield node
    finally:  # also when the first push fails: the services it made have volumes and networks
        node_id = node.home.node_id
        try:
            next(gen)  # stops the daemon, removes the node's containers and networks
        except StopIteration:
            pass
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label={labels.NODE}={node_id}"],
                                 capture_output=True, text=True).stdout.split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)


def _json(node: Node, *args: str) -> object:
    result = node.cli("fence", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _get(node: Node, path: str, app: str = "services-app") -> object:
    status, body = node.url_get(app, path, timeout=30)
    assert status == 200, body
    return json.loads(body)


def _service_container(node: Node, name: str) -> dict:
    ids = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={labels.NODE}={node.home.node_id}",
                          "--filter", f"label={labels.SERVICE}={name}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert len(ids) == 1, ids
    return json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True,
                                     check=True).stdout)[0]


def test_push_creates_and_binds_the_services_and_the_app_writes_and_reads_back(node: Node) -> None:
    services = {s["name"]: s for s in _json(node, "services")}  # type: ignore[union-attr]
    assert {n: (s["type"], s["state"], s["bound"]) for n, s in services.items()} == {
        "db": ("postgresql", "running", ["services-app"]), "cache": ("redis", "running", ["services-app"])}
    assert _get(node, "/rows?add=first") == ["first"]
    assert _get(node, "/cache?set=v1") == "v1"
    assert _get(node, "/env") == ["CACHE_URL", "DATABASE_URL", "DB_URL", "REDIS_URL", "STACKATO_SERVICES",
                                  "VCAP_SERVICES"]


def test_credentials_are_hidden_from_fence_env_unless_show_secrets_and_kept_0600(node: Node) -> None:
    plain = node.cli("fence", "env", "services-app")
    assert plain.exit_code == 0 and "DATABASE_URL" not in plain.stdout and "VCAP_SERVICES" not in plain.stdout
    shown = node.cli("fence", "env", "services-app", "--show-secrets")
    assert shown.exit_code == 0 and "DATABASE_URL" in shown.stdout
    creds = json.loads((node.home.host_service_credentials("db")).read_text())
    assert creds["password"] in shown.stdout and f"@db:5432/{creds['database']}" in shown.stdout
    assert "credentials" in shown.stdout and "uri" in shown.stdout
    assert node.home.host_service_credentials("db").stat().st_mode & 0o777 == 0o600
    assert node.home.host_services.stat().st_mode & 0o777 == 0o700
    assert creds["password"] not in (node.root / "daemon.log").read_text()


def test_a_service_container_is_hardened_and_has_no_host_port(node: Node) -> None:
    for name, port in (("db", 5432), ("cache", 6379)):
        attrs = _service_container(node, name)
        host = attrs["HostConfig"]
        assert attrs["Config"]["User"] == "1001:1001"
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"]
        assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"] and host["PidsLimit"] > 0
        assert not host.get("PortBindings") and not attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp")
        assert [m["Type"] for m in attrs["Mounts"]] == ["volume"]
        assert not host.get("Binds")


def test_an_unbound_app_cannot_connect_to_the_service(node: Node, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(EXAMPLE, other)
    (other / "stackato.yml").write_text("name: other-app\nmem: 128M\n")
    result = node.cli("fence", "push", str(other), "--buildpack", "procfile")
    assert result.exit_code == 0, result.stderr
    addresses = [n["IPAddress"] for n in _service_container(node, "db")["NetworkSettings"]["Networks"].values()]
    assert addresses
    for address in addresses:
        assert str(_get(node, f"/connect?host={address}&port=5432", app="other-app")).startswith("closed")
        assert str(_get(node, f"/connect?host={address}&port=6379", app="other-app")).startswith("closed")
    assert str(_get(node, "/connect?host=db&port=5432", app="other-app")).startswith("closed")
    assert _get(node, "/connect?host=db&port=5432") == "open"
    assert node.cli("fence", "delete", "other-app").exit_code == 0


def test_data_survives_service_restart_daemon_kill_and_redeploy(node: Node) -> None:
    _get(node, "/rows?clear=1&add=kept")
    assert node.cli("fence", "service", "restart", "db").exit_code == 0
    assert _get(node, "/rows") == ["kept"]
    before = _service_container(node, "db")
    node.kill_daemon()
    node.start()
    after = _service_container(node, "db")
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert _json(node, "service", "db")["state"] == "running"  # type: ignore[index]
    assert _get(node, "/rows") == ["kept"]
    result = node.cli("fence", "push", str(node.host_src), "--buildpack", "procfile")  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.stderr
    assert _get(node, "/rows") == ["kept"]


def test_a_crashed_service_is_restarted_by_the_daemon_with_its_data(node: Node) -> None:
    before = _service_container(node, "db")
    subprocess.run(["docker", "kill", before["Id"]], capture_output=True, check=True)
    deadline = time.monotonic() + 120  # the first crashes restart at once; the daemon looks every 5 s
    while time.monotonic() < deadline:
        attrs = _service_container(node, "db")
        if attrs["State"]["Running"] and attrs["State"]["StartedAt"] != before["State"]["StartedAt"]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the daemon did not restart the killed service in 120 s")
    deadline = time.monotonic() + 60
    while _json(node, "service", "db")["state"] != "running" and time.monotonic() < deadline:  # type: ignore[index]
        time.sleep(0.5)
    assert _get(node, "/rows") == ["kept"]
    assert _json(node, "service", "db")["restarts"] >= 1  # type: ignore[index]


def test_backup_then_restore_brings_deleted_rows_back_and_a_truncated_backup_is_refused(node: Node) -> None:
    _get(node, "/rows?clear=1&add=one")
    assert _get(node, "/rows?add=two") == ["one", "two"]
    made = _json(node, "service", "backup", "db")
    host_dump = node.home.host_service_backups("db") / f"{made['id']}.dump"  # type: ignore[index]
    assert host_dump.stat().st_mode & 0o777 == 0o600 and host_dump.read_bytes()[:5] == b"PGDMP"
    assert [b["id"] for b in _json(node, "service", "backups", "db")] == [made["id"]]  # type: ignore[index, union-attr]
    assert node.cli("kato", "gc").exit_code == 0  # gc never takes a backup or a service volume
    assert host_dump.exists() and subprocess.run(
        ["docker", "volume", "inspect", f"fence-{node.home.node_id}-svcdata-db"], capture_output=True).returncode == 0
    assert _get(node, "/rows?clear=1") == []
    result = node.cli("fence", "service", "restore", "db", made["id"])  # type: ignore[index]
    assert result.exit_code == 0, result.stderr
    assert _get(node, "/rows") == ["one", "two"]
    _get(node, "/rows?add=three")
    data = host_dump.read_bytes()
    host_dump.write_bytes(data[: len(data) // 2])
    refused = node.cli("fence", "service", "restore", "db", made["id"])  # type: ignore[index]
    assert refused.exit_code != 0 and "truncated" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert _get(node, "/rows") == ["one", "two", "three"]
    assert _json(node, "service", "db")["last_backup"] == made["id"]  # type: ignore[index]


def test_redis_backup_and_restore(node: Node) -> None:
    assert _get(node, "/cache?set=before") == "before"
    made = _json(node, "service", "backup", "cache")
    assert _get(node, "/cache?set=after") == "after"
    result = node.cli("fence", "service", "restore", "cache", made["id"])  # type: ignore[index]
    assert result.exit_code == 0, result.stderr
    assert _get(node, "/cache") == "before"


def test_mysql_lifecycle_backup_restore_and_delete_data(node: Node) -> None:
    created = node.cli("fence", "service", "create", "mysql", "mdb", "--mem", "256M")
    assert created.exit_code == 0, created.stderr
    view = _json(node, "service", "mdb")
    assert view["type"] == "mysql" and view["state"] == "running" and view["size_bytes"] > 0  # type: ignore[index]
    made = _json(node, "service", "backup", "mdb")
    host_dump = node.home.host_service_backups("mdb") / f"{made['id']}.dump"  # type: ignore[index]
    assert b"-- fence mysql dump" in host_dump.read_bytes()[:40]
    assert node.cli("fence", "service", "restore", "mdb", made["id"]).exit_code == 0  # type: ignore[index]
    # another type's backup is refused
    pg = _json(node, "service", "backups", "db")[-1]["id"]  # type: ignore[index]
    shutil.copy(node.home.host_service_backups("db") / f"{pg}.dump", node.home.host_service_backups("mdb") / f"{pg}.dump")
    meta = json.loads((node.home.host_service_backups("db") / f"{pg}.json").read_text())
    (node.home.host_service_backups("mdb") / f"{pg}.json").write_text(json.dumps({**meta, "service": "mdb"}))
    refused = node.cli("fence", "service", "restore", "mdb", pg)
    assert refused.exit_code != 0 and "postgresql backup" in refused.stderr
    assert node.cli("fence", "service", "delete", "mdb", "--delete-data").exit_code == 0
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label={labels.SERVICE}=mdb",
                              "--filter", f"label={labels.NODE}={node.home.node_id}"],
                             capture_output=True, text=True).stdout.split()
    assert volumes == []


def _mysql(node: Node, service: str, sql: str) -> str:
    """Run SQL in a MySQL service's container as its server's own user (over the socket)."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label={labels.SERVICE}={service}",
                          "--filter", f"label={labels.NODE}={node.home.node_id}"],
                         capture_output=True, text=True).stdout.split()
    assert len(ids) == 1, ids
    done = subprocess.run(["docker", "exec", ids[0], "bash", "-c",
                           f'. /etc/fence-service/credentials && mysql --socket=/tmp/mysqld.sock -ufence-svc -N '
                           f'"$SVC_DB" -e "{sql}"'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_mysql_restore_that_fails_half_way_leaves_the_data_as_it_was(node: Node) -> None:
    """Issue 16: a MySQL dump is DDL (no transaction holds it), so fence loads it aside and swaps it
    in only when it loaded whole: a dump that breaks after its first tables changes nothing."""
    import hashlib

    assert node.cli("fence", "service", "create", "mysql", "mhalf", "--mem", "256M").exit_code == 0
    try:
        _mysql(node, "mhalf", "CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('before')")
        made = _json(node, "service", "backup", "mhalf")
        backups = node.home.host_service_backups("mhalf")
        dump = (backups / f"{made['id']}.dump").read_bytes()  # type: ignore[index]
        _mysql(node, "mhalf", "INSERT INTO kept VALUES ('after')")
        # A well-formed, checksummed backup whose load fails after it replaced `kept`.
        broken = dump + b"\nCREATE TABLE partial (x INT);\nINSERT INTO no_such_table VALUES (1);\n"
        meta = json.loads((backups / f"{made['id']}.json").read_text())  # type: ignore[index]
        bad_id = made["id"][:-1] + ("0" if made["id"][-1] != "0" else "1")  # type: ignore[index]
        (backups / f"{bad_id}.dump").write_bytes(broken)
        (backups / f"{bad_id}.dump").chmod(0o600)
        (backups / f"{bad_id}.json").write_text(json.dumps({**meta, "id": bad_id, "size": len(broken),
                                                            "sha256": hashlib.sha256(broken).hexdigest()}))
        refused = node.cli("fence", "service", "restore", "mhalf", bad_id)
        assert refused.exit_code != 0 and "\n" not in refused.stderr.strip(), refused.stderr
        assert _mysql(node, "mhalf", "SELECT v FROM kept ORDER BY v").split() == ["after", "before"]
        assert _mysql(node, "mhalf", "SHOW TABLES").split() == ["kept"]
        # and the good backup still restores
        assert node.cli("fence", "service", "restore", "mhalf", made["id"]).exit_code == 0  # type: ignore[index]
        assert _mysql(node, "mhalf", "SELECT v FROM kept").split() == ["before"]
    finally:
        node.cli("fence", "service", "delete", "mhalf", "--delete-data")


def test_a_mysql_app_writes_and_reads_back_through_the_router(node: Node, tmp_path: Path) -> None:
    app = tmp_path / "mysql-app"
    shutil.copytree(EXAMPLE, app)
    (app / "stackato.yml").write_text("name: mysql-app\nmem: 128M\nservices:\n  mydb: mysql\n")
    result = node.cli("fence", "push", str(app), "--buildpack", "procfile")
    assert result.exit_code == 0, result.stdout[-1500:] + result.stderr
    assert _get(node, "/rows?add=from-mysql", app="mysql-app") == ["from-mysql"]
    assert _get(node, "/rows?add=again", app="mysql-app") == ["from-mysql", "again"]
    assert "MYDB_URL" in _get(node, "/env", app="mysql-app")  # type: ignore[operator]
    assert node.cli("fence", "delete", "mysql-app").exit_code == 0
    assert node.cli("fence", "service", "unbind", "mysql-app", "mydb").exit_code == 0
    assert node.cli("fence", "service", "delete", "mydb", "--delete-data").exit_code == 0


def test_bind_and_unbind_each_make_a_release_with_the_env_changed(node: Node) -> None:
    """Issue 16: binding or unbinding a running app makes a new release (release phase, then a
    zero-downtime restart) whose instances see the service's env, or no longer see it."""
    assert node.cli("fence", "service", "create", "redis", "extra", "--mem", "64M").exit_code == 0
    try:
        bound = node.cli("fence", "service", "bind", "services-app", "extra", timeout=300)
        assert bound.exit_code == 0, bound.stdout[-1500:] + bound.stderr
        releases = _json(node, "releases", "services-app")
        assert releases[0]["note"] == "bind service extra", releases[:2]  # type: ignore[index]
        assert "EXTRA_URL" in _get(node, "/env")  # type: ignore[operator]
        unbound = node.cli("fence", "service", "unbind", "services-app", "extra", timeout=300)
        assert unbound.exit_code == 0, unbound.stdout[-1500:] + unbound.stderr
        releases = _json(node, "releases", "services-app")
        assert releases[0]["note"] == "unbind service extra", releases[:2]  # type: ignore[index]
        assert "EXTRA_URL" not in _get(node, "/env")  # type: ignore[operator]
    finally:
        node.cli("fence", "service", "unbind", "services-app", "extra", timeout=300)
        node.cli("fence", "service", "delete", "extra", "--delete-data")


@pytest.mark.parametrize("args, message", [
    (("service", "create", "mongodb", "x"), "unknown service type 'mongodb'"),
    (("service", "create", "redis", "Bad_Name"), "is not allowed"),
    (("service", "bind", "no-such-app", "db"), "no app named 'no-such-app'"),
    (("service", "bind", "services-app", "nosuch"), "no service named 'nosuch'"),
    (("service", "delete", "db"), "bound to services-app"),
    (("service", "restore", "db", "not-an-id"), "malformed"),
    (("service", "create", "redis", "r1", "--mem", "lots"), "lots"),
])
def test_bad_input_gets_one_line_errors(node: Node, args: tuple[str, ...], message: str) -> None:
    result = node.cli("fence", *args)
    assert result.exit_code != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_services_list_in_the_manifest_is_refused_with_its_line(node: Node, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(EXAMPLE, bad)
    (bad / "stackato.yml").write_text("name: bad-app\nservices:\n  - db\n")
    result = node.cli("fence", "push", str(bad), "--buildpack", "procfile")
    assert result.exit_code != 0 and "line 3" in result.stderr and "must be a mapping" in result.stderr


def test_kato_status_counts_services_and_node_info_shows_their_memory_and_disk(node: Node) -> None:
    status = node.cli("kato", "status")
    assert status.exit_code == 0 and "services:      2 running" in status.stdout, status.stdout
    info = node.cli("kato", "node", "info")
    assert info.exit_code == 0, info.stderr
    lines = [line for line in info.stdout.splitlines() if line.startswith("service:")]
    assert len(lines) == 2 and all("MiB of" in line and "disk" in line and "?" not in line for line in lines), lines
    images = node.cli("kato", "image", "list")
    assert images.exit_code == 0 and "fence/service-postgresql:bookworm" in images.stdout


def test_periodic_backups_are_made_and_only_backup_keep_are_kept(node: Node) -> None:
    """Issue 16: `services/backup_interval` makes backups on its own (the daemon's services loop
    looks every 5 s), `services/backup_keep` prunes the oldest, and `kato status` shows the period.
    Last in the module: it prunes the backups earlier tests made."""
    assert node.cli("kato", "config", "set", "fence", "services/backup_keep", "2").exit_code == 0
    assert node.cli("kato", "config", "set", "fence", "services/backup_interval", "1").exit_code == 0
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(seen) < 3:
            seen.update(b["id"] for b in _json(node, "service", "backups", "cache"))  # type: ignore[union-attr, index]
            time.sleep(1)
        assert len(seen) >= 3, seen
        kept = _json(node, "service", "backups", "cache")
        assert 1 <= len(kept) <= 2, kept  # type: ignore[arg-type]
        status = node.cli("kato", "status")
        assert "periodic backups every 1 s" in status.stdout, status.stdout
    finally:
        node.cli("kato", "config", "set", "fence", "services/backup_interval", "0")
        node.cli("kato", "config", "set", "fence", "services/backup_keep", "7")
