"""The staging-input key and what reuse leans on: source digests, the droplet-by-key lookup,
touching droplets and kept sources, and --force from the CLIs through the API."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from fence import cli, cli_apps, cli_droplets
from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.droplets import DropletStore
from fence.home import NodeHome
from fence.kept_sources import KeptSources
from fence.models import AppView, BuildpackUse, DropletRecord, Manifest, PreparedSource, ResolvedBuildpack
from fence.service import StageOrder
from fence.staging.inputs import StagingInputs, buildpack_identity, manifest_digest, source_digest
from fence.store import _MIGRATIONS, SCHEMA_VERSION, StateStore
from fence.wiring import node_service


def _tar(host_tar: Path, files: dict[str, bytes], *, mtime: int = 0, mode: int = 0o644) -> Path:
    with tarfile.open(host_tar, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"app/{name}")
            info.size, info.mtime, info.mode = len(data), mtime, mode
            tar.addfile(info, io.BytesIO(data))
    return host_tar


def test_source_digest_follows_content_not_modification_times(tmp_path: Path) -> None:
    base = source_digest(_tar(tmp_path / "a.tar", {"x.py": b"print(1)\n"}, mtime=100))
    assert source_digest(_tar(tmp_path / "b.tar", {"x.py": b"print(1)\n"}, mtime=999_999)) == base
    assert source_digest(_tar(tmp_path / "c.tar", {"x.py": b"print(2)\n"}, mtime=100)) != base
    assert source_digest(_tar(tmp_path / "d.tar", {"y.py": b"print(1)\n"}, mtime=100)) != base
    assert source_digest(_tar(tmp_path / "e.tar", {"x.py": b"print(1)\n"}, mode=0o755)) != base


def _inputs(**changes: object) -> StagingInputs:
    base = StagingInputs(app="web", source="s" * 64, commit=None, manifest=manifest_digest(Manifest()),
                         buildpack_specs=("python",), explicit=False, buildpacks=("python builtin-1 d1",),
                         stack_image_id="sha256:aaa", env={"HOME": "/home/stackato", "MEMORY_LIMIT": "1024m"},
                         container=("user=1000:1000", "network=none", "memory=1073741824"))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"app": "other"}, {"source": "t" * 64}, {"commit": "c" * 40},
    {"manifest": manifest_digest(Manifest(hooks=dataclasses.replace(Manifest().hooks, pre_staging=("echo",))))},
    {"buildpack_specs": ("nodejs",)}, {"explicit": True}, {"buildpacks": ("python builtin-1 d2",)},
    {"stack_image_id": "sha256:bbb"}, {"env": {"HOME": "/home/stackato", "MEMORY_LIMIT": "2048m"}},
    {"container": ("user=1000:1000", "network=bridge", "memory=1073741824")}, {"logic_version": 99},
])
def test_every_input_changes_the_key(change: dict[str, object]) -> None:
    assert _inputs().key() == _inputs().key() and len(_inputs().key()) == 64
    assert _inputs(**change).key() != _inputs().key()


def test_buildpack_identity_uses_the_full_digest(tmp_path: Path) -> None:
    pack = ResolvedBuildpack(name="python", host_dir=tmp_path, version="builtin-abc", origin="python", digest="f" * 64)
    assert buildpack_identity(pack) == f"python builtin-abc {'f' * 64}"


def _record(droplet_id: str, key: str, staged_at: str) -> DropletRecord:
    return DropletRecord(id=droplet_id, app="web", size=1, buildpacks=(BuildpackUse("P", "v", "p"),),
                         start_command=None, process_types={}, config_vars={}, stack_image="s", stack_image_id="i",
                         commit=None, staged_at=staged_at, staging_id="x", inputs_key=key)


def test_store_finds_the_newest_droplet_of_a_key_and_upgrades_old_databases(tmp_path: Path) -> None:
    host_db = tmp_path / "state.db"
    conn = sqlite3.connect(host_db)
    # A real schema-4 database (later migrations may alter any of its tables, not only droplets).
    conn.executescript("".join(_MIGRATIONS[:4]))
    old = json.dumps({"id": "a" * 64, "app": "web", "size": 1, "buildpacks": [], "start_command": None,
                      "process_types": {}, "config_vars": {}, "stack_image": "s", "stack_image_id": "i",
                      "commit": None, "staged_at": "2024-01-01", "staging_id": "x"})
    conn.execute("INSERT INTO droplets VALUES (?, 'web', 1, '2024-01-01', ?)", ("a" * 64, old))
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    store = StateStore(host_db=host_db)
    assert store.schema_version == SCHEMA_VERSION
    assert store.droplet("a" * 64).inputs_key == ""  # type: ignore[union-attr]
    assert store.droplet_staged_from("") is None  # a droplet from before keys is never reused
    store.add_droplet(_record("b" * 64, "k" * 64, "2024-01-02"))
    store.add_droplet(_record("c" * 64, "k" * 64, "2024-01-03"))
    store.add_droplet(_record("d" * 64, "z" * 64, "2024-01-04"))
    assert store.droplet_staged_from("k" * 64).id == "c" * 64  # type: ignore[union-attr]
    assert store.droplet_staged_from("q" * 64) is None
    store.close()


def test_touch_says_whether_droplet_and_kept_source_are_there(tmp_path: Path) -> None:
    droplets = DropletStore(host_dir=tmp_path / "droplets")
    app_tar = _tar(tmp_path / "app.tar", {"a": b"b"}).read_bytes()
    digest, _ = droplets.write(app_tar=iter([app_tar]), extra_files={"staging_info.yml": b"x"}, uid=1000)
    os.utime(droplets.host_path(digest), (1, 1))
    assert droplets.touch(digest) and droplets.host_path(digest).stat().st_mtime > 1
    droplets.delete(digest)
    assert not droplets.touch(digest) and not droplets.touch("not-a-digest")

    sources = KeptSources(home=NodeHome(host_root=tmp_path))
    source = PreparedSource(host_tar=_tar(tmp_path / "s.tar", {"a": b"b"}), files=1, size=1, origin="x",
                            commit=None, manifest=Manifest(), procfile=None)
    assert not sources.touch(app="web", droplet=digest)
    sources.save(app="web", droplet=digest, source=source, buildpacks=())
    assert sources.touch(app="web", droplet=digest)
    assert not sources.touch(app="web", droplet="../../etc")


class _StubClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def stage(self, **kwargs: object) -> DropletRecord:
        self.calls.append(("stage", kwargs))
        return _record("e" * 64, "", "2024-01-01")

    def restage(self, name: str, **kwargs: object) -> AppView:
        self.calls.append(("restage", kwargs))
        return AppView(name=name, state="started", instances=1, running=1, memory_mib=256, url="", urls=(),
                       release=1, droplet=None, stack_image=None, env={}, instance_list=(), releases=())


@pytest.mark.parametrize("forced", [False, True])
def test_stage_and_restage_pass_force_on(monkeypatch: pytest.MonkeyPatch, forced: bool) -> None:
    stub = _StubClient()
    monkeypatch.setattr(cli_droplets, "client", lambda: stub)  # `fence stage` lives there now
    monkeypatch.setattr(cli_apps, "client", lambda: stub)
    runner = CliRunner()
    extra = ["--force"] if forced else []
    assert runner.invoke(cli.fence, ["stage", ".", *extra]).exit_code == 0
    assert runner.invoke(cli.fence, ["restage", "web", *extra]).exit_code == 0
    assert stub.calls[0][1]["force"] is forced
    assert stub.calls[1][0] == "restage" and stub.calls[1][1]["force"] is forced


def test_api_passes_force_to_stage_and_restage(home: NodeHome, monkeypatch: pytest.MonkeyPatch) -> None:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    seen: list[object] = []

    def stage(order: StageOrder, **_: object) -> DropletRecord:
        seen.append(order.force)
        return _record("e" * 64, "", "2024-01-01")

    monkeypatch.setattr(service, "stage", stage)
    monkeypatch.setattr(service, "restage", lambda name, out, *, force=False: seen.append(("restage", force)))
    monkeypatch.setattr(service.apps, "app", lambda name: None)
    monkeypatch.setattr(service.apps, "view", lambda name: None)
    try:
        client = TestClient(create_app(service, service.apps))
        for query in ("", "&force=true"):
            body = client.post(f"/v1/stagings?git=https://example.invalid/app.git{query}").text
            assert '"event": "result"' in body, body
        client.post("/v1/apps/web/restage?force=true")
        client.post("/v1/apps/web/restage")
    finally:
        service.close()
    assert seen == [False, True, ("restage", True), ("restage", False)]
