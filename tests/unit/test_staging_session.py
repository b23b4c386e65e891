"""StagingSession (slots, cancellation, log tee and last log, kept sources, in-flight marks) with a stub stager."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from fence.backend.fake import FakeBackend
from fence.config import ConfigStore
from fence.errors import AppNotFound, FenceError, StagingFailed, UsageError
from fence.home import NodeHome
from fence.kept_sources import KeptSources
from fence.layout import AppUser
from fence.models import AppRecord, DeploySettings, DropletRecord, Manifest, ReleaseRecord
from fence.reaper import ContainerReaper
from fence.staging.session import StageOrder, StagingSession
from fence.staging.stager import StageRequest
from fence.store import StateStore
from fence.wiring import config_store
from fence.staging.gitfetch import FetchPolicy

# These tests are about checking and packing, not about where a source may come from.
ANYWHERE = FetchPolicy(local_roots=(Path("/"),))


class StubStager:
    """Stands in for the Stager: logs two lines, blocks while ``hold`` is clear, returns a droplet."""

    def __init__(self) -> None:
        self.reaper = ContainerReaper()
        self.hold = threading.Event()
        self.hold.set()
        self.inside = threading.Event()
        self.requests: list[StageRequest] = []
        self.cancelled: list[str] = []
        self.n = 0

    def stage(self, request: StageRequest, *, on_line: Callable[[str], None], staging_id: str | None = None,
              reusable: Callable[[DropletRecord], bool] | None = None,
              cancelled: Callable[[], bool] = lambda: False) -> DropletRecord:
        self.requests.append(request)
        self.inside.set()
        on_line("-----> Staging (stub)")
        if not self.hold.wait(10) or staging_id in self.cancelled:
            raise StagingFailed(phase="staging", buildpack="", detail="cancelled")
        self.n += 1
        on_line("-----> Droplet (stub)")
        return DropletRecord(id=f"{self.n:064x}", app=request.app or "", size=1, buildpacks=(), start_command="serve",
                             process_types={}, config_vars={}, stack_image="fence/stack:bookworm",
                             stack_image_id="sha256:s", commit=None, staged_at="2024-01-01T00:00:00+00:00",
                             staging_id=staging_id or "")

    def cancel(self, staging_id: str) -> bool:
        self.cancelled.append(staging_id)
        return True

    def cancel_all(self) -> int:
        return 0

    def wait_removals(self, timeout: float = 60.0) -> None:
        self.reaper.wait(timeout)


class Node:
    def __init__(self, home: NodeHome) -> None:
        self.home = home
        self.config: ConfigStore = config_store(home)
        # The apps these tests stage are folders in the test's own temporary folder.
        self.config.set("fence", "staging/local_roots", str(home.host_root.parent))
        self.store = StateStore(host_db=home.host_db)
        self.stager = StubStager()
        self.paths = home
        self.session = StagingSession(config=self.config, stager=self.stager, store=self.store,
                                      sources=KeptSources(home=home), home=home,
                                      app_user=AppUser(config=self.config, backend=FakeBackend(),
                                                       host_file=home.host_app_uid))


@pytest.fixture
def node(home: NodeHome) -> Node:
    fixture = Node(home)
    yield fixture
    fixture.store.close()


def _app_folder(tmp_path: Path, name: str = "src") -> Path:
    host_dir = tmp_path / name
    host_dir.mkdir()
    (host_dir / "app.py").write_text("print('hi')\n")
    (host_dir / "stackato.yml").write_text("name: web\ninstances: 2\nmem: 128M\nenv:\n  A: manifest\n")
    return host_dir


def test_a_staging_tees_its_log_keeps_its_source_and_leaves_no_scratch(node: Node, tmp_path: Path) -> None:
    lines: list[str] = []
    staged = node.session.stage(StageOrder(origin=str(_app_folder(tmp_path)), env={"B": "flag"}),
                                staging_id="s1", on_line=lines.append)
    assert staged.droplet.app == "web" and staged.manifest.instances == 2
    assert lines[0] == "-----> Checking the app source" and lines[-1] == "-----> Droplet (stub)"
    logged = node.paths.host_staging_log("web", "s1").read_text().splitlines()
    assert logged == ["-----> Staging (stub)", "-----> Droplet (stub)"]  # the stager's lines, as sent
    assert node.session.sources.has(app="web", droplet=staged.droplet.id)
    assert node.store.stacks_used() == {"sha256:s": "fence/stack:bookworm"}
    assert not (node.paths.host_work / "s1").exists()
    assert node.stager.requests[0].env == {"B": "flag"}
    restaged = node.session.restage(_app(), _release(staged.droplet.id), force=True, on_line=lines.append)
    request = node.stager.requests[1]
    assert request.force and request.app == "web" and request.env == {"A": "app"}
    assert any(line.startswith("-----> Restaging web from the source of release 1") for line in lines)
    assert node.session.sources.has(app="web", droplet=restaged.id)
    assert list(node.paths.host_work.iterdir()) == []
    assert list(node.session.last_log("web")) == ["-----> Staging (stub)", "-----> Droplet (stub)"]
    with pytest.raises(AppNotFound):
        node.session.last_log("other")


def test_a_source_that_is_not_there_leaves_no_scratch_and_no_staging(node: Node, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        node.session.stage(StageOrder(origin=str(tmp_path / "missing")), staging_id="s2", on_line=lambda _: None)
    assert node.stager.requests == [] and not (node.paths.host_work / "s2").exists()


def test_a_queued_staging_waits_says_so_and_is_cancelled_while_it_waits(node: Node, tmp_path: Path) -> None:
    node.config.set("fence", "staging/concurrency", "1")
    node.stager.hold.clear()
    first = threading.Thread(target=lambda: node.session.stage(StageOrder(origin=str(_app_folder(tmp_path, "a"))),
                                                               staging_id="first", on_line=lambda _: None))
    first.start()
    assert node.stager.inside.wait(10)
    lines: list[str] = []
    errors: list[Exception] = []

    def second() -> None:
        try:
            node.session.stage(StageOrder(origin=str(_app_folder(tmp_path, "b"))), staging_id="second",
                               on_line=lines.append)
        except StagingFailed as exc:
            errors.append(exc)

    waiter = threading.Thread(target=second)
    waiter.start()
    deadline = time.monotonic() + 10
    while not any("Queued" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(line.startswith("-----> Queued: 1 stagings running") for line in lines)
    node.session.cancel("second")
    waiter.join(10)
    assert errors and "cancelled while waiting" in errors[0].message
    assert len(node.stager.requests) == 1 and "second" in node.stager.cancelled
    assert not (node.paths.host_work / "second").exists()
    node.stager.hold.set()
    first.join(10)
    # the queued one's log holds what it was told, up to its cancellation
    assert "Queued" in node.paths.host_staging_log("web", "second").read_text()


def test_in_flight_marks_the_oldest_start_until_the_work_ends(node: Node) -> None:
    assert node.session.busy_since() is None
    before = time.time()
    with node.session.in_flight():
        outer = node.session.busy_since()
        with node.session.in_flight():
            assert node.session.busy_since() == outer
        assert outer is not None and outer >= before
    assert node.session.busy_since() is None


def test_clear_scratch_removes_what_an_unclean_stop_left(node: Node) -> None:
    node.session.new_workdir("left")
    assert node.session.clear_scratch() == ["scratch folder left"]
    assert list(node.paths.host_work.iterdir()) == []


def test_push_settings_take_flags_over_the_manifest_and_leave_the_rest_unset() -> None:
    manifest = Manifest(instances=2, mem_mib=128, env={"A": "m", "B": "m"}, urls=("x.example",), timeout=30)
    assert DeploySettings.of_push(manifest, instances=None, memory_mib=None, env={"B": "flag"}) == DeploySettings(
        instances=2, memory_mib=128, env={"A": "m", "B": "flag"}, urls=("x.example",), health_timeout=30)
    assert DeploySettings.of_push(manifest, instances=0, memory_mib=256, env={}).instances == 0
    assert DeploySettings.of_push(Manifest(), instances=None, memory_mib=None, env={}) == DeploySettings()


def test_the_store_finds_one_kept_release(home: NodeHome) -> None:
    store = StateStore(host_db=home.host_db)
    try:
        store.put_app(_app())
        store.add_release("web", "d" * 64, "t1", "push")
        store.add_release("web", "e" * 64, "t2", "push")
        assert store.release("web", 2) == ReleaseRecord(app="web", number=2, droplet="e" * 64, created_at="t2",
                                                        note="push")
        assert store.release("web", 3) is None and store.release("web", None) is None
        assert store.release("other", 1) is None
    finally:
        store.close()


def _app() -> AppRecord:
    return AppRecord(name="web", instances=1, memory_mib=64, env={"A": "app"}, started=True, release=1,
                     health_timeout=None, urls=(), created_at="t")


def _release(droplet: str) -> ReleaseRecord:
    return ReleaseRecord(app="web", number=1, droplet=droplet, created_at="t", note="push")


def test_a_staging_leaves_lines_in_the_daemon_log_and_a_plan_makes_no_container(
        node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from fence.backend.fake import FakeBackend
    from fence.droplets import DropletStore
    from fence.staging.buildpacks import BuildpackResolver, builtin_dir
    from fence.staging.sources import prepare_source
    from fence.staging.stager import Stager

    backend = FakeBackend()
    droplets = DropletStore(host_dir=tmp_path / "droplets")
    stager = Stager(backend=backend, config=node.config, droplets=droplets, store=node.store, home=node.paths,
                    node_id=node.home.node_id,
                    app_user=AppUser(config=node.config, backend=backend, host_file=tmp_path / "app-uid"),
                    resolver=BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "bp-cache"))
    source = prepare_source(str(_app_folder(tmp_path)), policy=ANYWHERE, host_workdir=tmp_path / "work",
                            limits=node.session.source_limits(), uid=1000, gid=1000)
    request = StageRequest(source=source, buildpacks=("python",))
    plan = stager.plan(request, staging_id="p1")
    assert backend.created == [] and plan.name == "web" and plan.inputs_key and plan.reused is None
    caplog.set_level("INFO", logger="fence.staging")
    with pytest.raises(FenceError):  # the fake engine runs no buildpack: the run fails, and says so
        stager.stage(request, on_line=lambda _: None, staging_id="p2")
    messages = [(r.message, getattr(r, "app", None)) for r in caplog.records if r.name == "fence.staging"]
    assert messages[0] == ("staging started", "web") and messages[-1][0] == "staging failed"
    assert getattr(caplog.records[-1], "seconds") >= 0
    # a droplet recorded for the same inputs is reused: no container, and a line saying so
    digest, size = droplets.write(app_tar=iter([source.host_tar.read_bytes()]), extra_files={}, uid=1000)
    node.store.add_droplet(DropletRecord(id=digest, app="web", size=size, buildpacks=(), start_command="serve",
                                         process_types={}, config_vars={}, stack_image=plan.image,
                                         stack_image_id=plan.image_id, commit=None, staged_at="t",
                                         staging_id="p1", inputs_key=plan.inputs_key))
    created = len(backend.created)
    caplog.clear()
    assert stager.stage(request, on_line=lambda _: None).id == digest
    assert len(backend.created) == created
    reused = [r.message for r in caplog.records if r.name == "fence.staging"]
    assert reused == ["staging inputs unchanged: droplet reused"]
    stager.wait_removals()
