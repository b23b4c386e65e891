"""Garbage collection on the fake engine: what goes, what stays, and dry run equal to the real run."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from fence import labels
from fence.backend.fake import FakeBackend
from fence.errors import EngineError
from fence.models import AppRecord, DropletRecord, ImageInfo, PreparedSource, Manifest
from fence.home import NodeHome
from fence.running.images import DropletImages
from fence.wiring import node_service

DAY = 86400


class Fixture:
    """A node service on the fake engine with helpers to make garbage."""

    def __init__(self, home: NodeHome, tmp_path: Path) -> None:
        self.backend = FakeBackend(images=("fence/stack:bookworm",))
        self.service = node_service(home, backend=self.backend, router=None)
        self.home = home.host_root
        self.tmp = tmp_path
        self.node_id = home.node_id
        self.n = 0

    def droplet(self, app: str) -> DropletRecord:
        self.n += 1
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("app")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        digest, size = self.service.droplets.write(app_tar=[buffer.getvalue()],
                                                   extra_files={"n": str(self.n).encode()}, uid=1000)
        record = DropletRecord(id=digest, app=app, size=size, buildpacks=(), start_command="serve",
                               process_types={}, config_vars={}, stack_image="fence/stack:bookworm",
                               stack_image_id="sha256:x", commit=None, staged_at=f"t{self.n}", staging_id="s")
        self.service.store.add_droplet(record)
        return record

    def release(self, app: str) -> DropletRecord:
        store = self.service.store
        if store.app(app) is None:
            store.put_app(AppRecord(name=app, instances=1, memory_mib=64, env={}, started=False, release=None,
                                    health_timeout=None, urls=(), created_at="t"))
        record = self.droplet(app)
        store.add_release(app, record.id, "t", "push")
        return record

    def stack_image(self, ref: str) -> ImageInfo:
        host_tar = self.tmp / f"{ref.replace('/', '_')}.tar"
        with tarfile.open(host_tar, "w") as tar:
            data = ref.encode()
            info = tarfile.TarInfo("marker")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return self.backend.import_image(host_tar, ref, changes=("LABEL fence.stack=test",))

    def old(self, host_path: Path, days: float) -> None:
        then = time.time() - days * DAY
        os.utime(host_path, (then, then))


@pytest.fixture
def node(home: NodeHome, tmp_path: Path) -> Fixture:
    fixture = Fixture(home, tmp_path)
    yield fixture
    fixture.service.close()


def test_dry_run_lists_exactly_what_the_real_run_removes_and_keeps_what_is_needed(node: Fixture) -> None:
    store, backend = node.service.store, node.backend
    web = [node.release("web") for _ in range(7)]  # releases 1-2 fall out of the last five
    kept = {r.droplet for r in store.releases("web")}
    assert kept == {d.id for d in web[2:]}
    stage_only = node.droplet("web")  # `fence stage`: in no release
    in_use = node.droplet("gone")  # a task container of this node still runs it
    task = backend.create(_spec(node.node_id, labels.ROLE_TASK, app="gone", droplet=in_use.id))
    task.start()
    exited = backend.create(_spec(node.node_id, labels.ROLE_STAGING, app="web"))
    exited.start()
    exited.stop()
    theirs = backend.create(_spec("n-other", labels.ROLE_STAGING, app="web"))
    theirs.start()
    theirs.stop()
    (node.home / "caches").mkdir()
    (node.home / "caches" / "web.tar").write_bytes(b"x" * 10)
    (node.home / "caches" / "gone.tar").write_bytes(b"y" * 100)
    logs = node.home / "logs" / "staging" / "web"
    logs.mkdir(parents=True)
    for n in range(7):
        (logs / f"s{n}.log").write_text(f"log {n}\n")
        node.old(logs / f"s{n}.log", days=7 - n)
    checkout = node.home / "buildpack-cache" / "git" / "bp-0123" / ("a" * 40)
    fresh = node.home / "buildpack-cache" / "git" / "bp-0123" / ("b" * 40)
    for host_dir in (checkout, fresh):
        (host_dir / "bin").mkdir(parents=True)
        (host_dir / "bin" / "detect").write_text("#!/bin/sh\n")
    for host_path in (checkout / "bin" / "detect", checkout / "bin", checkout):
        node.old(host_path, days=8)
    left = node.stack_image("fence/stack:left")  # this node ran on it, then moved on
    store.note_stack(left.id, "fence/stack:left", "t")
    configured = node.stack_image("fence/stack:fallback")
    store.note_stack(configured.id, "fence/stack:fallback", "t")
    node.service.config.set("fence", "docker/images", "fence/stack:fallback")
    node.stack_image("fence/stack:never-used")  # built here, never run on: not this node's to drop
    other_node = node.stack_image("fence/stack:theirs")
    store.note_stack(other_node.id, "fence/stack:theirs", "t")
    backend.create(_spec("n-other", labels.ROLE_INSTANCE, app="x", image="fence/stack:theirs"))
    node.service.sources.save(app="gone", droplet="c" * 64, source=_source(node.tmp), buildpacks=())

    dry = node.service.gc(dry_run=True)
    expected = {
        ("container", exited.id[:12]),
        ("image", left.id),
        ("droplet", web[0].id), ("droplet", web[1].id), ("droplet", stage_only.id),
        ("source", "gone/" + "c" * 64),
        ("cache", "gone"),
        ("staging-log", "logs/staging/web/s0.log"), ("staging-log", "logs/staging/web/s1.log"),
        ("buildpack", f"buildpack-cache/git/bp-0123/{'a' * 40}"),
    }
    assert {(i.kind, i.name) for i in dry.items} == expected
    assert dry.dry_run and dry.freed > 0 and dry.errors == ()
    assert backend.image_info(left.id) is not None and (node.home / "caches" / "gone.tar").exists()

    real = node.service.gc(dry_run=False)
    assert real.items == dry.items and real.errors == () and not real.dry_run
    for droplet in web[2:]:
        assert store.droplet(droplet.id) is not None and node.service.droplets.host_path(droplet.id).is_file()
    assert store.droplet(in_use.id) is not None and store.droplet(web[0].id) is None
    assert backend.image_info(left.id) is None and left.id not in store.stacks_used()
    for ref in ("fence/stack:fallback", "fence/stack:never-used", "fence/stack:theirs", "fence/stack:bookworm"):
        assert backend.image_info(ref) is not None, ref
    assert backend.lookup(theirs.id) and backend.lookup(task.id)
    assert sorted(p.name for p in logs.iterdir()) == [f"s{n}.log" for n in range(2, 7)]
    assert (node.home / "caches" / "web.tar").exists() and fresh.is_dir() and not checkout.exists()
    assert node.service.gc(dry_run=True).items == ()


def test_droplet_images_go_with_their_release_or_their_stack_and_then_the_stack_can_go(node: Fixture) -> None:
    store, backend, config = node.service.store, node.backend, node.service.config
    images = DropletImages(backend=backend, config=config, droplets=node.service.droplets, node_id=node.node_id,
                           app_user=node.service.session.app_user)
    web = [node.release("web") for _ in range(6)]  # release 1 falls out of the last five
    old = node.stack_image("fence/stack:old")
    store.note_stack(old.id, "fence/stack:old", "t")
    config.set("fence", "docker/image", "fence/stack:old")
    on_old = images.ensure(web[5], memory_mib=64)  # the current release, on the stack before
    config.set("fence", "docker/image", "fence/stack:bookworm")
    dropped = images.ensure(web[0], memory_mib=64)
    current = images.ensure(web[5], memory_mib=64)
    rollback = images.ensure(web[4], memory_mib=64)
    running = images.ensure(web[0], memory_mib=64)  # same droplet and stack: the same image
    assert running == dropped and len({on_old.ref, dropped.ref, current.ref, rollback.ref}) == 4
    assert dropped.made and not running.made
    assert backend.image_info(current.ref).labels[labels.STACK_ID] == current.stack_id  # type: ignore[union-attr]
    assert backend.list({labels.NODE: node.node_id, labels.ROLE: labels.ROLE_IMAGE}) == []
    with pytest.raises(EngineError):
        backend.remove_image(old.id)  # its droplet image still stands on it

    dry = node.service.gc(dry_run=True)
    assert {(i.kind, i.name) for i in dry.items} == {
        ("droplet-image", dropped.ref), ("droplet-image", on_old.ref), ("image", old.id), ("droplet", web[0].id)}
    real = node.service.gc(dry_run=False)
    assert real.items == dry.items and real.errors == ()
    assert backend.image_info(dropped.ref) is None and backend.image_info(on_old.ref) is None
    assert backend.image_info(old.id) is None
    assert backend.image_info(current.ref) is not None and backend.image_info(rollback.ref) is not None
    # Once its release falls out, an image stays while a container uses it, and goes after.
    task = backend.create(_spec(node.node_id, labels.ROLE_TASK, image=rollback.ref, app="web", droplet=web[4].id))
    for _ in range(5):
        store.add_release("web", web[5].id, "t", "push")
    assert web[4].id not in {r.droplet for r in store.releases("web")}
    assert ("droplet-image", rollback.ref) not in {(i.kind, i.name) for i in node.service.gc(dry_run=True).items}
    task.destroy()
    assert ("droplet-image", rollback.ref) in {(i.kind, i.name) for i in node.service.gc(dry_run=True).items}


def test_a_staging_in_flight_protects_fresh_droplets_caches_and_checkouts(node: Fixture) -> None:
    with node.service.session.in_flight():  # what a push holds while it stages and deploys
        fresh = node.droplet("new-app")
        (node.home / "caches").mkdir()
        (node.home / "caches" / "new-app.tar").write_bytes(b"x")
        report = node.service.gc(dry_run=True)
        assert report.items == ()
        assert report.notes == ("git buildpack checkouts were left alone: a staging is running",)
    assert {(i.kind, i.name) for i in node.service.gc(dry_run=True).items} == {
        ("droplet", fresh.id), ("cache", "new-app")}


def test_kept_source_round_trip(node: Fixture, tmp_path: Path) -> None:
    source = _source(tmp_path)
    node.service.sources.save(app="web", droplet="d" * 64, source=source, buildpacks=("python",))
    kept = node.service.sources.load(app="web", droplet="d" * 64, host_workdir=tmp_path / "work")
    assert kept.buildpacks == ("python",)
    assert kept.source.host_tar.read_bytes() == source.host_tar.read_bytes()
    assert kept.source.manifest == source.manifest and kept.source.origin == source.origin
    from fence.errors import SourceNotKept
    with pytest.raises(SourceNotKept) as missing:
        node.service.sources.load(app="web", droplet="e" * 64, host_workdir=tmp_path / "work2")
    assert "push the app again" in missing.value.message


def _source(tmp_path: Path) -> PreparedSource:
    host_tar = tmp_path / "app-source.tar"
    with tarfile.open(host_tar, "w") as tar:
        info = tarfile.TarInfo("app")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    return PreparedSource(host_tar=host_tar, files=1, size=0, origin="upload.tar.gz", commit=None,
                          manifest=Manifest(name="web", mem_mib=128), procfile={"web": "serve"})


def _spec(node_id: str, role: str, *, image: str = "fence/stack:bookworm", **extra: str):  # noqa: ANN202
    from fence.models import ContainerSpec
    return ContainerSpec(image=image, labels=labels.owned(node_id, role, **extra), user="1000")
