"""The instance reconciler on the fake backend, with a fake clock and a fake health check."""

from __future__ import annotations

import concurrent.futures
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fence import labels
from fence.backend.fake import FakeBackend, FakeProcess
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.layout import AppUser
from fence.errors import RouterConfigRefused
from fence.models import AppRecord, DropletRecord, Route
from fence.running.health import Probe
from fence.running.manager import InstanceManager
from fence.running.images import DropletImages
from fence.running.starter import InstanceStarter
from fence.store import StateStore


@dataclass
class FakeClock:
    t: float = 1000.0

    def now(self) -> float:
        return self.t


@dataclass
class FakeHealth:
    ready_addresses: set[str] = field(default_factory=set)
    all_ready: bool = True
    checks: list[tuple[str, str]] = field(default_factory=list)  # (address, probe type) of each check

    def check(self, address: str, port: int, probe: Probe, timeout: float) -> str | None:
        self.checks.append((address, probe.type))
        return None if self.all_ready or address in self.ready_addresses else "connection refused"


class InlineExecutor(concurrent.futures.Executor):
    """Runs each health check at once, in the caller's thread (the pass sees its outcome)."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the future, as a pool would
            future.set_exception(exc)
        return future


@dataclass
class RecordedRoutes:
    """A route sink that keeps every publish (the router's side in these tests); ``refuse``
    makes it refuse, as nginx does, while it keeps serving the routes it last took."""

    published: list[list[Route]]
    refuse: bool = False
    serving: list[Route] | None = field(default_factory=list)
    anticipated: list[list[Route]] = field(default_factory=list)

    def publish(self, routes: list[Route]) -> list[Route]:
        self.published.append(list(routes))
        if self.refuse:
            raise RouterConfigRefused(detail="nginx -t failed")
        self.serving = list(routes)
        return list(routes)

    def served(self) -> list[Route] | None:
        return self.serving

    def anticipate(self, routes: list[Route]) -> None:
        self.anticipated.append(list(routes))


def _keeps_running(proc: FakeProcess) -> int:
    proc.sleep(float("inf"))
    return 0


class Node:
    """A node with the fake engine: store, droplet, manager."""

    def __init__(self, tmp_path: Path, *, node_id: str = "n-test", backend: FakeBackend | None = None) -> None:
        self.backend = backend or FakeBackend()
        self.backend.programs["/bin/bash"] = _keeps_running
        self.config = ConfigStore(host_file=tmp_path / "config.yml")
        self.store = StateStore(host_db=tmp_path / f"{node_id}.db")
        self.droplets = DropletStore(host_dir=tmp_path / "droplets")
        self.clock = FakeClock()
        self.health = FakeHealth()
        self.routes: list[list[Route]] = []
        self.node_id = node_id
        app_user = AppUser(config=self.config, backend=self.backend, host_file=tmp_path / "app-uid")
        starter = InstanceStarter(backend=self.backend, config=self.config, node_id=node_id, app_user=app_user,
                                  images=DropletImages(backend=self.backend, config=self.config,
                                                       droplets=self.droplets, node_id=node_id,
                                                       app_user=app_user))
        self.manager = InstanceManager(backend=self.backend, store=self.store, config=self.config, starter=starter,
                                       node_id=node_id, routes=RecordedRoutes(self.routes), clock=self.clock,
                                       health=self.health, drain_seconds=0, workers=2,
                                       health_executor=InlineExecutor())

    def droplet(self, app: str) -> DropletRecord:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("app")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        digest, size = self.droplets.write(app_tar=[buffer.getvalue()], extra_files={"staging_info.yml": b"{}"},
                                           uid=1000)
        record = DropletRecord(id=digest, app=app, size=size, buildpacks=(), start_command="serve",
                               process_types={"web": "serve"}, config_vars={}, stack_image="fence/stack:bookworm",
                               stack_image_id="sha256:x", commit=None, staged_at="t", staging_id="s")
        self.store.add_droplet(record)
        return record

    def deploy(self, app: str, instances: int = 1) -> int:
        existing = self.store.app(app)
        self.store.put_app(AppRecord(name=app, instances=instances, memory_mib=64, env={}, started=True,
                                     release=existing.release if existing else None, health_timeout=10,
                                     urls=(), created_at="t"))
        release, _ = self.store.add_release(app, self.droplet(app).id, "t", "push")
        return release.number

    def settle(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            self.manager.tick()
            self.manager.drain_jobs(10)
        self.manager.tick()
        self.manager.drain_jobs(10)  # the stops the last pass let go of (a loaded machine is slow)

    def states(self, app: str) -> list[tuple[int, str, int]]:
        return [(i.index, i.state, i.release) for i in self.manager.instances(app)]

    def container(self, app: str, index: int):  # noqa: ANN201
        return next(c for c in self.backend.list({labels.APP: app, labels.INSTANCE: str(index)})
                    if c.info().running)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_starts_the_desired_instances_and_routes_only_healthy_ones(node: Node) -> None:
    node.health.all_ready = False
    node.deploy("web", instances=2)
    node.settle()
    assert node.states("web") == [(0, "starting", 1), (1, "starting", 1)]
    assert node.routes[-1] == [Route(app="web", hosts=("web.localhost",), upstreams=())]
    # While they boot the router is told the routes their readiness will bring (its precheck).
    anticipated = node.manager._route_sink.anticipated  # noqa: SLF001
    assert anticipated and len(anticipated[-1][0].upstreams) == 2
    node.health.all_ready = True
    node.settle()
    assert node.states("web") == [(0, "running", 1), (1, "running", 1)]
    assert len(node.routes[-1][0].upstreams) == 2
    assert node.routes[-1] == anticipated[-1]  # what was prechecked is what got published
    spec = node.backend.created[-1]
    # Each app on its own network (issue 13 item 6), never the engine's shared default bridge.
    assert spec.user == "1000:1000" and spec.network == "fence-n-test-web" and spec.ports[0].host_ip == "127.0.0.1"
    assert spec.limits.memory_bytes == 64 * 1024 * 1024


def test_crash_restarts_immediately_three_times_then_backs_off(node: Node) -> None:
    node.deploy("web")
    node.settle()
    for crash in (1, 2, 3):
        node.container("web", 0).exit(1)
        node.settle()
        [view] = [v for v in node.manager.instances("web") if v.state != "crashed"] or [None]
        assert view is not None and view.state == "running" and view.restarts == crash
    node.container("web", 0).exit(1)
    node.settle()
    [crashed] = node.manager.instances("web")
    assert crashed.state == "crashed" and crashed.restarts == 4 and crashed.reason == "exited 1"
    node.clock.t += 29
    node.settle()
    assert node.states("web") == [(0, "crashed", 1)]
    node.clock.t += 1
    node.settle()
    assert node.states("web") == [(0, "running", 1)]


def test_out_of_memory_is_reported(node: Node) -> None:
    node.deploy("web")
    node.settle()
    node.container("web", 0).exit(137, oom=True)
    node.settle()
    [view] = node.manager.instances("web")
    assert view.state == "running" and view.restarts == 1
    assert view.last_crash == "out of memory (killed at its memory limit)"


def test_unhealthy_instance_is_killed_and_counted(node: Node) -> None:
    node.health.all_ready = False
    node.deploy("web")
    node.settle()
    first = node.container("web", 0).id
    node.clock.t += 11
    node.settle()
    [new] = node.manager.instances("web")
    assert new.state == "starting" and new.container != first[:12] and new.restarts == 1
    assert new.last_crash.startswith("unhealthy: nothing accepted connections on $PORT within 10 s")
    with pytest.raises(Exception):
        node.backend.lookup(first)


def test_scale_down_and_stop(node: Node) -> None:
    node.deploy("web", instances=3)
    node.settle()
    app = node.store.app("web")
    node.store.put_app(AppRecord(**{**app.__dict__, "instances": 1}))
    node.settle()
    assert node.states("web") == [(0, "running", 1)]
    node.store.put_app(AppRecord(**{**app.__dict__, "instances": 1, "started": False}))
    node.settle()
    assert node.states("web") == [] and node.backend.list({labels.APP: "web"}) == []


def test_redeploy_keeps_old_instance_until_new_is_healthy(node: Node) -> None:
    node.deploy("web")
    node.settle()
    old = node.container("web", 0).id
    node.health.all_ready = False
    node.deploy("web")
    node.settle()
    assert sorted(node.states("web")) == [(0, "running", 1), (0, "starting", 2)]
    assert node.backend.lookup(old).info().running
    node.health.all_ready = True
    node.settle()
    assert node.states("web") == [(0, "running", 2)]


def test_restarted_manager_adopts_running_instances_without_restarting(tmp_path: Path, node: Node) -> None:
    node.deploy("web", instances=2)
    node.settle()
    before = sorted(c.id for c in node.backend.list({labels.APP: "web"}))
    created = len(node.backend.created)
    again = Node(tmp_path, node_id=node.node_id, backend=node.backend)
    again.settle()
    assert sorted(c.id for c in node.backend.list({labels.APP: "web"})) == before
    assert len(node.backend.created) == created
    assert [(v.state, v.restarts) for v in again.manager.instances("web")] == [("running", 0), ("running", 0)]


def test_deleted_app_is_removed_but_other_nodes_are_untouched(tmp_path: Path, node: Node) -> None:
    other = Node(tmp_path / "other", node_id="n-other", backend=node.backend) if (tmp_path / "other").mkdir() is None else None
    assert other is not None
    other.deploy("theirs")
    other.settle()
    node.deploy("web")
    node.settle()
    node.store.delete_app("web")
    node.settle()
    assert node.backend.list({labels.APP: "web"}) == []
    assert len(node.backend.list({labels.APP: "theirs"})) == 1
