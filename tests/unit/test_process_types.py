"""Process types on the fake backend: scale parsing, per-type slots and counts, the process check, a type that disappears."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fence import labels
from fence.errors import ManifestInvalid, UsageError
from fence.models import AppRecord, DeploySettings, DropletRecord, ProcessScale
from fence.rules import parse_scale
from fence.running.processes import counts_for, long_running, scaled
from fence.running.starter import SCRIPT_ENV
from fence.staging.manifest import parse_manifest
from fence.store import SCHEMA_VERSION, StateStore
from tests.unit.test_instance_manager import Node

TABLE = {"web": "serve", "worker": "python worker.py", "release": "python migrate.py"}


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def _droplet(node: Node, app: str, table: dict[str, str]) -> DropletRecord:
    record = dataclasses.replace(node.droplet(app), process_types=table)
    node.store.add_droplet(record)
    return record


def _deploy(node: Node, app: str, *, web: int = 1, table: dict[str, str] = TABLE,
            scale: dict[str, ProcessScale] | None = None) -> tuple[int, tuple[str, ...]]:
    existing = node.store.app(app)
    droplet = _droplet(node, app, table)
    types = counts_for(droplet, existing, scale)
    node.store.put_app(AppRecord(name=app, instances=web, memory_mib=64, env={}, started=True,
                                 release=existing.release if existing else None, health_timeout=10, urls=(),
                                 created_at="t", processes=types.processes, process_memory=types.process_memory))
    release, _ = node.store.add_release(app, droplet.id, "t", "push")
    return release.number, types.warnings


def _running(node: Node, app: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for container in node.backend.list({labels.APP: app, labels.ROLE: labels.ROLE_INSTANCE}):
        info = container.info()
        if info.running:
            found.setdefault(info.labels.get(labels.PROCESS, "?"), []).append(info.labels[labels.INSTANCE])
    return {kind: sorted(indexes) for kind, indexes in found.items()}


# --- scale arguments ---------------------------------------------------------------------------

def test_scale_arguments() -> None:
    assert parse_scale(["3"]) == {"web": 3}
    assert parse_scale(["web=3", "worker=2"]) == {"web": 3, "worker": 2}
    assert parse_scale(["worker=0"]) == {"worker": 0}


@pytest.mark.parametrize(("specs", "says"), [
    ([], "give instance counts"),
    (["-1"], "whole number from 0 to 100"),
    (["web=-1"], "whole number from 0 to 100"),
    (["web=two"], "whole number from 0 to 100"),
    (["web=101"], "whole number from 0 to 100"),
    (["web="], "gives no count after '='"),
    (["Web=1"], "is not allowed"),
    (["=2"], "is not allowed"),
    (["web"], "whole number"),
    (["3", "worker=1"], "is not TYPE=COUNT"),
    (["release=1"], "release runs once per release"),
    (["web=1", "web=2"], "given twice"),
])
def test_bad_scale_arguments_get_one_line(specs: list[str], says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_scale(specs)
    assert says in caught.value.message and "\n" not in caught.value.message


def test_the_cli_refuses_bad_scale_arguments_before_calling_the_daemon(tmp_path: Path) -> None:
    env = {**os.environ, "FENCE_HOME": str(tmp_path)}  # no daemon there: a bad value must fail first
    for args in (["web="], ["-1"], ["worker=x"], ["web=1", "web=2"]):
        result = subprocess.run([sys.executable, "-m", "fence", "scale", "shop", *args], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "scale:" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unknown_type_is_refused_naming_the_types(node: Node) -> None:
    _deploy(node, "shop")
    app = node.store.app("shop")
    droplet = node.store.droplet(node.store.release("shop", app.release).droplet)
    with pytest.raises(UsageError, match=r"app shop has no process type 'clock' \(its types: web, worker\)"):
        scaled(app, droplet, {"clock": 1})
    with pytest.raises(UsageError, match="has no process type 'release'"):
        scaled(app, droplet, {"release": 1})
    assert scaled(app, droplet, {"web": 3, "worker": 0}).counts() == {"web": 3, "worker": 0}


# --- counts per type ---------------------------------------------------------------------------

def test_first_deploy_gives_every_other_type_one_unless_the_manifest_says(node: Node) -> None:
    droplet = _droplet(node, "shop", {**TABLE, "clock": "python clock.py"})
    assert long_running(droplet) == ("web", "clock", "worker")  # release never runs as instances
    assert counts_for(droplet, None).processes == {"clock": 1, "worker": 1}
    asked = counts_for(droplet, None, {"worker": ProcessScale(instances=2, memory_mib=128)})
    assert asked.processes == {"clock": 1, "worker": 2} and asked.process_memory == {"worker": 128}


def test_counts_persist_across_deploys_and_a_type_that_leaves_is_scaled_to_zero(node: Node) -> None:
    _deploy(node, "shop")
    node.store.put_app(scaled(node.store.app("shop"), node.store.droplet(node.store.release("shop", 1).droplet),
                              {"worker": 3}))
    _, warnings = _deploy(node, "shop")
    assert node.store.app("shop").processes == {"worker": 3}  # kept by the redeploy
    assert warnings == ()
    _, warnings = _deploy(node, "shop", table={"web": "serve"})
    assert node.store.app("shop").processes == {"worker": 0}
    assert len(warnings) == 1 and "process type worker is not in the new release's process table: scaled to 0" \
        in warnings[0]
    _, warnings = _deploy(node, "shop")  # it comes back: its count is 0 now, as it was left
    assert node.store.app("shop").processes == {"worker": 0} and warnings == ()


def test_the_store_keeps_counts_and_memory_per_type_and_upgrades_old_databases(tmp_path: Path) -> None:
    store = StateStore(host_db=tmp_path / "s.db")
    app = AppRecord(name="shop", instances=2, memory_mib=256, env={}, started=True, release=None,
                    health_timeout=None, urls=(), created_at="t", processes={"worker": 3, "clock": 0},
                    process_memory={"worker": 128})
    store.put_app(app)
    again = store.app("shop")
    assert again == app and again.memory_for("worker") == 128 and again.memory_for("clock") == 256
    assert again.counts() == {"web": 2, "clock": 0, "worker": 3}
    store.delete_app("shop")
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT COUNT(*) FROM app_processes").fetchone()[0] == 0
    conn.execute("DROP TABLE app_processes")
    # Back to the schema before app_processes (migration 9); the later migrations' tables go too.
    conn.execute("DROP TABLE IF EXISTS drains")
    conn.execute("DROP TABLE IF EXISTS service_bindings")
    conn.execute("DROP TABLE IF EXISTS services")
    conn.execute("PRAGMA user_version = 8")
    conn.execute("INSERT INTO apps (name, created_at, instances) VALUES ('old', 't', 2)")
    conn.commit()
    conn.close()
    store = StateStore(host_db=tmp_path / "s.db")
    assert store.schema_version == SCHEMA_VERSION
    assert store.app("old").counts() == {"web": 2}  # an app from before process types: web only
    store.close()


# --- manifest ----------------------------------------------------------------------------------

def test_manifest_processes_with_instances_and_memory() -> None:
    text = (b"name: shop\nprocesses:\n  web: python web.py\n  worker:\n    command: python worker.py\n"
            b"    instances: 2\n    mem: 128M\n")
    manifest = parse_manifest(text, source_name="stackato.yml")
    assert manifest.processes == {"web": "python web.py", "worker": "python worker.py"}
    assert manifest.process_scale == {"worker": ProcessScale(instances=2, memory_mib=128)}
    assert DeploySettings.of_push(manifest, instances=None, memory_mib=None, env={}).process_scale == \
        {"worker": ProcessScale(instances=2, memory_mib=128)}
    cf = (b"applications:\n- name: shop\n  processes:\n  - type: web\n    instances: 3\n"
          b"  - type: worker\n    command: bin/work\n    instances: 0\n    memory: 1G\n")
    manifest = parse_manifest(cf, source_name="manifest.yml")
    assert manifest.processes == {"worker": "bin/work"}
    assert manifest.process_scale == {"web": ProcessScale(instances=3), "worker": ProcessScale(0, 1024)}
    assert DeploySettings.of_push(manifest, instances=None, memory_mib=None, env={}).instances == 3


@pytest.mark.parametrize(("text", "says"), [
    (b"processes:\n  worker:\n    instances: -1\n", "line 3, column 16: processes.worker.instances: '-1' is not a whole number from 0 to 100"),
    (b"processes:\n  worker:\n    instances: many\n", "processes.worker.instances: 'many' is not a whole number"),
    (b"processes:\n  worker:\n    mem: lots\n", "processes.worker.mem: 'lots' is not"),
    (b"processes:\n  worker:\n    mem: 1M\n    memory: 1M\n", "give processes.worker.mem or processes.worker.memory"),
    (b"processes:\n  worker:\n    command: [a]\n", "processes.worker.command must be a string"),
    (b"processes:\n  Worker: x\n", "process type 'Worker' is not allowed"),
    (b"processes:\n  release:\n    instances: 2\n", "release runs once per release"),
    (b"applications:\n- processes:\n  - command: x\n", "applications[0].processes[0] must have a type: key"),
    (b"applications:\n- processes:\n  - type: worker\n  - type: worker\n", "process type 'worker' is given twice"),
    (b"applications:\n- processes:\n  - type: w!\n", "process type 'w!' is not allowed"),
])
def test_bad_manifest_processes_get_one_line_with_the_position(text: bytes, says: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(text, source_name="stackato.yml")
    assert says in caught.value.message and "\n" not in caught.value.message


def test_cron_beside_processes_is_parsed_not_warned_about() -> None:
    manifest = parse_manifest(b"processes:\n  worker: python3 w.py\ncron:\n  - '* * * * * echo hi'\n",
                              source_name="stackato.yml")
    assert [(e.schedule, e.command) for e in manifest.cron] == [("* * * * *", "echo hi")]
    assert not any("cron" in w for w in manifest.warnings)


# --- running every type ------------------------------------------------------------------------

def test_every_type_runs_workers_get_no_port_no_route_and_the_process_check(node: Node) -> None:
    node.config.set("fence", "health/grace", "5")
    _deploy(node, "shop", web=2, scale={"worker": ProcessScale(instances=2, memory_mib=32)})
    node.settle()
    assert _running(node, "shop") == {"web": ["0", "1"], "worker": ["0", "1"]}
    views = {v.name: v for v in node.manager.instances("shop")}
    assert [v.name for v in node.manager.instances("shop")] == ["web.0", "web.1", "worker.0", "worker.1"]
    assert views["web.0"].state == "running" and views["web.0"].health == "port: passing"
    assert views["worker.0"].state == "starting" and views["worker.0"].health == "process: waiting"
    worker = next(c for c in node.backend.list({labels.APP: "shop", labels.PROCESS: "worker"}))
    assert worker.spec.ports == () and worker.spec.limits.memory_bytes == 32 * 1024 * 1024
    script = worker.spec.env[SCRIPT_ENV]
    assert "python worker.py" in script and "PORT=" not in script.replace("VCAP_APP_PORT", "")
    web = next(c for c in node.backend.list({labels.APP: "shop", labels.PROCESS: "web"}))
    assert web.spec.ports and "PORT=8080" in web.spec.env[SCRIPT_ENV]
    upstreams = {u.address for u in node.routes[-1][0].upstreams}
    assert upstreams == {c.info().ip_address for c in node.backend.list({labels.APP: "shop", labels.PROCESS: "web"})}
    node.clock.t += 5
    node.settle()
    assert {v.name: v.state for v in node.manager.instances("shop")}["worker.1"] == "running"
    assert upstreams == {u.address for u in node.routes[-1][0].upstreams}  # never a worker


def test_a_worker_that_exits_before_its_grace_is_a_crash_and_is_restarted(node: Node) -> None:
    _deploy(node, "shop")
    node.settle()
    next(c for c in node.backend.list({labels.APP: "shop", labels.PROCESS: "worker"})).exit(1)
    node.settle()
    worker = [v for v in node.manager.instances("shop") if v.process == "worker"]
    assert worker and worker[0].last_crash == "exited 1" and worker[0].restarts == 1


def test_scale_per_type_and_zero_stops_a_type(node: Node) -> None:
    _deploy(node, "shop")
    node.settle()
    droplet = node.store.droplet(node.store.release("shop", 1).droplet)
    node.store.put_app(scaled(node.store.app("shop"), droplet, {"worker": 3}))
    node.settle()
    assert _running(node, "shop") == {"web": ["0"], "worker": ["0", "1", "2"]}
    node.store.put_app(scaled(node.store.app("shop"), droplet, {"worker": 0, "web": 2}))
    node.settle()
    assert _running(node, "shop") == {"web": ["0", "1"]}


def test_a_redeploy_replaces_workers_start_first(node: Node) -> None:
    node.config.set("fence", "health/grace", "5")
    _deploy(node, "shop")
    node.settle()
    node.clock.t += 5
    node.settle()
    _deploy(node, "shop")
    node.settle()
    workers = [(v.release, v.state) for v in node.manager.instances("shop") if v.process == "worker"]
    assert workers == [(1, "running"), (2, "starting")]  # the old one serves on until the new one passes
    node.clock.t += 5
    node.settle()
    workers = [(v.release, v.state) for v in node.manager.instances("shop") if v.process == "worker"]
    assert workers == [(2, "running")]


def test_a_restarted_manager_adopts_every_type_without_restarting_any(tmp_path: Path) -> None:
    first = Node(tmp_path)
    _deploy(first, "shop", scale={"worker": ProcessScale(instances=2)})
    first.settle()
    before = {c.id for c in first.backend.list({labels.APP: "shop"}) if c.info().running}
    again = Node(tmp_path, backend=first.backend)
    again.settle()
    assert {c.id for c in again.backend.list({labels.APP: "shop"}) if c.info().running} == before
    assert sorted(v.name for v in again.manager.instances("shop")) == ["web.0", "worker.0", "worker.1"]
    assert all(v.restarts == 0 for v in again.manager.instances("shop"))
