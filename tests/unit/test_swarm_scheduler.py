"""The Swarm scheduler (issue 17) on the fake swarm: the service spec, the digest, the mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from fence import labels
from fence.backend.fake_swarm import FakeSwarm, FakeSwarmWorld
from fence.backend.swarm_services import service_body
from fence.cluster.scheduler import TASK_PORTS, SwarmScheduler, service_name, shards
from fence.cluster_models import ServiceSpec
from fence.errors import UsageError
from fence.models import AppRecord, Limits
from fence.node import crash_loop_warnings
from fence.running.script import SLOT_ENV
from fence.running.starter import SCRIPT_ENV
from tests.unit.test_instance_manager import Node, RecordedRoutes

REGISTRY = "127.0.0.1:5999"


class _AnyImage(dict):
    """The controller engine's images, as the fake swarm sees them: every droplet image is there."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return f"id-of-{key}"


class ClusterNode(Node):
    def __init__(self, tmp_path: Path, workers: int = 2) -> None:
        super().__init__(tmp_path)
        world = FakeSwarmWorld()
        world.start_registry(REGISTRY)
        self.swarm = FakeSwarm(world=world, hostname="controller")
        self.swarm.images = _AnyImage()
        self.swarm.swarm_init(listen_addr="127.0.0.1:2377", advertise_addr="127.0.0.1:2377")
        token = self.swarm.join_tokens().worker
        for i in range(workers):
            FakeSwarm(world=world, hostname=f"worker{i}").swarm_join(
                token=token, remote_addr="127.0.0.1:2377", listen_addr=f"127.0.0.{2 + i}:2377",
                advertise_addr=f"127.0.0.{2 + i}:2377")
        self.config.set("fence", "cluster/registry_address", REGISTRY)
        self.config.set("fence", "cluster/role", "controller")
        self.healthy = True
        self.manager = SwarmScheduler(cluster=self.swarm, store=self.store, config=self.config,
                                      starter=self.manager._starter, node_id=self.node_id,
                                      routes=RecordedRoutes(self.routes), probe=lambda a, p: self.healthy,
                                      drain_seconds=0)

    def settle(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            self.manager.tick()
            self.manager.drain_jobs(10)
        self.manager.tick()

    def services(self) -> list:
        return self.swarm.list_services({labels.NODE: self.node_id})


@pytest.fixture
def cnode(tmp_path: Path) -> ClusterNode:
    return ClusterNode(tmp_path)


def test_three_instances_are_one_service_spread_one_per_node_and_routed(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=3)
    cnode.settle()
    [service] = cnode.services()
    assert service.name == "fence-web-web-r1-s0" and service.replicas == 3 and service.max_per_node == 1
    assert len({t.node_id for t in service.tasks}) == 3
    assert [v.state for v in cnode.manager.instances("web")] == ["running"] * 3
    [route] = cnode.routes[-1]
    assert sorted((u.address, u.port) for u in route.upstreams) == sorted(
        (t.node_address, t.published_port) for t in service.tasks)
    assert cnode.manager.routed("web", 1) == 3


def test_the_service_spec_carries_every_hardening_and_the_image_by_digest(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=2)
    cnode.settle()
    body = cnode.swarm.service_body("fence-web-web-r1-s0")
    template = body["TaskTemplate"]
    container = template["ContainerSpec"]
    assert container["User"] == "1000:1000" and container["CapabilityDrop"] == ["ALL"] and container["Init"] is True
    assert container["Mounts"] == [] and container["ReadOnly"] is False
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 16384, "Hard": 16384}]
    assert container["Image"].startswith(f"{REGISTRY}/fence/droplet@sha256:")
    assert container["Labels"][labels.APP] == "web" and body["Labels"][labels.RELEASE] == "1"
    assert template["Resources"]["Limits"] == {"MemoryBytes": 64 * 1024 * 1024, "Pids": 512}
    assert template["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}}
    assert template["RestartPolicy"]["Condition"] == "any" and template["RestartPolicy"]["MaxAttempts"] == 5
    assert template["RestartPolicy"]["Delay"] == 5_000_000_000
    assert template["Placement"]["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.id"}}]
    assert template["Placement"]["MaxReplicas"] == 1
    assert body["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host",
                                              "PublishedPort": TASK_PORTS.start}]
    assert body["UpdateConfig"]["Order"] == "start-first" and body["UpdateConfig"]["FailureAction"] == "rollback"


def test_a_droplet_image_is_pushed_once(cnode: ClusterNode, monkeypatch: pytest.MonkeyPatch) -> None:
    pushes = []
    push = cnode.swarm.push_image
    monkeypatch.setattr(cnode.swarm, "push_image", lambda *a, **k: pushes.append(a) or push(*a, **k))
    cnode.deploy("web", instances=1)
    cnode.store.put_app(AppRecord(name="web", instances=1, memory_mib=64, env={}, started=True, release=1,
                                  health_timeout=10, urls=(), created_at="t", processes={"worker": 2}))
    cnode.settle()
    assert {s.name for s in cnode.services()} == {"fence-web-web-r1-s0", "fence-web-worker-r1-s0"}
    assert len(pushes) == 1


@pytest.mark.parametrize("image, user, why", [
    ("127.0.0.1:5000/fence/droplet:latest", "1000:1000", "not a reference by digest"),
    ("127.0.0.1:5000/fence/droplet@sha256:" + "a" * 64, "0:0", "never root"),
    ("127.0.0.1:5000/fence/droplet@sha256:" + "a" * 64, "root", "never root"),
])
def test_an_unsafe_service_spec_is_refused(image: str, user: str, why: str) -> None:
    spec = ServiceSpec(name="x", labels={}, image=image, user=user, command=None, env={}, workdir="/",
                       limits=Limits(), replicas=1)
    with pytest.raises(UsageError, match=why):
        service_body(spec)


def test_scale_updates_the_service_and_the_router(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=3)
    cnode.settle()
    first = {t.id for t in cnode.services()[0].tasks}
    cnode.store.put_app(AppRecord(name="web", instances=2, memory_mib=64, env={}, started=True, release=1,
                                  health_timeout=10, urls=(), created_at="t"))
    cnode.settle()
    [service] = cnode.services()
    assert service.replicas == 2 and len(cnode.routes[-1][0].upstreams) == 2
    assert {t.id for t in service.tasks if t.running} <= first  # scaling down restarted nothing
    cnode.store.put_app(AppRecord(name="web", instances=6, memory_mib=64, env={}, started=True, release=1,
                                  health_timeout=10, urls=(), created_at="t"))
    cnode.settle()
    services = sorted(cnode.services(), key=lambda s: s.name)
    assert [(s.name, s.replicas, s.max_per_node) for s in services] == [
        ("fence-web-web-r1-s0", 3, 1), ("fence-web-web-r1-s1", 3, 1)]  # one port per service: one task a node
    assert len({s.labels["fence.port"] for s in services}) == 2
    assert len(cnode.routes[-1][0].upstreams) == 6
    assert sorted(v.index for v in cnode.manager.instances("web")) == [0, 1, 2, 3, 4, 5]


def test_a_redeploy_keeps_the_old_service_until_the_new_one_serves(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=2)
    cnode.settle()
    cnode.healthy = False
    cnode.deploy("web", instances=2)
    cnode.settle()
    assert {s.name for s in cnode.services()} == {"fence-web-web-r1-s0", "fence-web-web-r2-s0"}
    assert len(cnode.routes[-1][0].upstreams) == 2  # the old release's tasks, answering before
    cnode.healthy = True
    cnode.settle()
    assert {s.name for s in cnode.services()} == {"fence-web-web-r2-s0"}
    assert cnode.manager.routed("web", 2) == 2


def test_a_rollback_goes_back_to_the_kept_service(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=1)
    cnode.settle()
    cnode.deploy("web", instances=1)
    cnode.manager.tick()
    cnode.manager.drain_jobs(10)
    cnode.swarm.fail_tasks("fence-web-web-r2-s0")
    cnode.settle()
    assert {s.name for s in cnode.services()} == {"fence-web-web-r1-s0", "fence-web-web-r2-s0"}
    views = cnode.manager.instances("web")
    assert [(v.release, v.state) for v in views] == [(1, "running"), (2, "crashed")]
    app = cnode.store.app("web")
    cnode.store.put_app(AppRecord(**{**app.__dict__, "release": 1}))
    cnode.settle()
    assert {s.name for s in cnode.services()} == {"fence-web-web-r1-s0"}


def test_a_service_whose_tasks_keep_failing_is_reported_as_crash_looping(cnode: ClusterNode) -> None:
    cnode.deploy("bad", instances=1)
    cnode.settle()
    for _ in range(3):
        cnode.swarm.fail_tasks("fence-bad-web-r1-s0")
        service = next(s for s in cnode.swarm.swarm.services.values() if s.body["Name"] == "fence-bad-web-r1-s0")
        cnode.swarm._place(cnode.swarm.swarm, service)  # Swarm starts a new task in the slot
    cnode.swarm.fail_tasks("fence-bad-web-r1-s0")
    cnode.settle()
    [view] = cnode.manager.instances("bad")
    assert view.state == "crashed" and view.restarts == 4 and view.reason == "exited 1"
    [warning] = crash_loop_warnings({"bad": cnode.manager.instances("bad")})
    assert "crash-looping" in warning
    cnode.healthy = False  # Swarm's next try, starting: still crashed until it answers
    cnode.swarm._place(cnode.swarm.swarm, service)
    cnode.settle()
    [view] = cnode.manager.instances("bad")
    assert view.state == "crashed" and view.restarts == 4 and view.reason == "exited 1"
    cnode.healthy = True
    cnode.settle()
    assert [v.state for v in cnode.manager.instances("bad")] == ["running"]


def test_a_new_scheduler_adopts_the_services_without_touching_a_task(cnode: ClusterNode,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cnode.deploy("web", instances=3)
    cnode.settle()
    before = {t.id for t in cnode.services()[0].tasks}
    again = SwarmScheduler(cluster=cnode.swarm, store=cnode.store, config=cnode.config,
                           starter=cnode.manager._starter, node_id=cnode.node_id,
                           routes=RecordedRoutes(cnode.routes), probe=lambda a, p: True, drain_seconds=0)
    for _ in range(3):
        again.tick()
        again.drain_jobs(10)
    [service] = cnode.services()
    assert {t.id for t in service.tasks} == before and again.routed("web", 1) == 3
    pushes = []
    monkeypatch.setattr(cnode.swarm, "push_image", lambda *a, **k: pushes.append(a))
    cnode.store.put_app(AppRecord(name="web", instances=3, memory_mib=64, env={}, started=True, release=1,
                                  health_timeout=10, urls=(), created_at="t", processes={"worker": 1}))
    for _ in range(3):
        again.tick()
        again.drain_jobs(10)
    worker = next(s for s in cnode.services() if s.labels["fence.process"] == "worker")
    assert pushes == [] and worker.image == service.image  # the earlier daemon's push, by digest


def test_stopping_an_app_removes_its_service(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=2)
    cnode.settle()
    app = cnode.store.app("web")
    cnode.store.put_app(AppRecord(**{**app.__dict__, "started": False}))
    cnode.settle()
    assert cnode.services() == [] and cnode.routes[-1][0].upstreams == ()


def test_names_and_shards() -> None:
    long = service_name("n", "a" * 60, "web", 3, 2)
    assert long.endswith("-r3-s2") and len(long) <= 63
    assert shards(7, 3) == [3, 3, 1] and shards(3, 3) == [3] and shards(2, 1) == [1, 1] and shards(0, 3) == []


def test_a_stack_rollout_in_place_is_refused_with_what_to_do(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=1)
    cnode.settle()
    cnode.manager.roll("web", image_id="sha256:new")
    progress = cnode.manager.rollout_progress("web")
    assert progress is not None and "kato stack rollout --restage" in progress.failed and not progress.done
    cnode.manager.end_rollout("web")
    assert cnode.manager.rollout_progress("web") is None
    assert [s.name for s in cnode.services()] == ["fence-web-web-r1-s0"]  # nothing was touched


def test_a_drained_node_reshapes_the_layout_without_touching_running_tasks(cnode: ClusterNode) -> None:
    now = [0.0]
    cnode.manager._clock = lambda: now[0]
    cnode.deploy("web", instances=3)
    cnode.settle()
    [service] = cnode.services()
    kept = {t.id for t in service.tasks}
    worker = next(n for n in cnode.swarm.list_nodes() if n.role == "worker")
    cnode.swarm.set_availability(worker.id, "drain")
    now[0] += 10  # the active nodes are counted again
    cnode.settle()
    services = sorted(cnode.services(), key=lambda s: s.name)
    assert [(s.name, s.replicas) for s in services] == [("fence-web-web-r1-s0", 2), ("fence-web-web-r1-s1", 1)]
    assert {t.id for t in services[0].tasks if t.running} <= kept
    assert len(cnode.routes[-1][0].upstreams) == 3


def test_a_task_that_stops_answering_leaves_the_router_after_the_failures(cnode: ClusterNode) -> None:
    now = [0.0]
    cnode.manager._clock = lambda: now[0]
    cnode.deploy("web", instances=2)
    cnode.settle()
    [service] = cnode.services()
    hung = service.tasks[0]
    cnode.manager._probe = lambda address, port: port != hung.published_port or address != hung.node_address
    for _ in range(2):  # 2 misses of health/failures 3: still routed
        now[0] += 11
        cnode.manager.tick()
    assert len(cnode.routes[-1][0].upstreams) == 2
    now[0] += 11
    cnode.manager.tick()
    [left] = cnode.routes[-1][0].upstreams
    assert (left.address, left.port) != (hung.node_address, hung.published_port)
    assert sorted(v.state for v in cnode.manager.instances("web")) == ["running", "starting"]


@pytest.mark.parametrize("label, expected", [
    ({}, "192.0.2.7"), ({"fence.address": "127.0.110.2"}, "127.0.110.2"),
    ({"fence.address": "not-an-ip"}, "192.0.2.7"), ({"fence.address": "10.0.0.1; rm"}, "192.0.2.7"),
])
def test_the_node_address_label_overrides_the_observed_one_only_with_an_ip(label: dict, expected: str) -> None:
    from fence.backend.swarm_services import node_address

    assert node_address({"ID": "n1", "Spec": {"Labels": label}, "Status": {"Addr": "192.0.2.7"}}) == expected


@pytest.mark.parametrize("role, kind", [(None, "InstanceManager"), ("none", "InstanceManager"),
                                        ("worker", "InstanceManager"), ("controller", "SwarmScheduler")])
def test_the_wiring_picks_the_scheduler_by_cluster_role(tmp_path: Path, role: str | None, kind: str) -> None:
    from fence.backend.fake import FakeBackend
    from fence.home import NodeHome
    from fence.wiring import config_store, node_service

    home = NodeHome(host_root=tmp_path / "home")
    home.ensure()
    if role is not None:
        config_store(home).set("fence", "cluster/role", role)
    service = node_service(home, backend=FakeBackend(), router=None, cluster=FakeSwarm(world=FakeSwarmWorld()))
    try:
        assert type(service.manager).__name__ == kind
        assert type(service.apps._manager).__name__ == kind
    finally:
        service.manager.shutdown()


def test_shards_made_in_one_pass_publish_ports_of_their_own_and_number_their_tasks_on(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=7)  # 3 nodes: shards of 3, 3 and 1, all created in the first pass
    cnode.settle()
    bodies = [cnode.swarm.service_body(f"fence-web-web-r1-s{shard}") for shard in range(3)]
    ports = [body["EndpointSpec"]["Ports"][0]["PublishedPort"] for body in bodies]
    assert len(set(ports)) == 3, ports
    for shard, body in enumerate(bodies):
        env = dict(item.split("=", 1) for item in body["TaskTemplate"]["ContainerSpec"]["Env"])
        assert env[SLOT_ENV] == "{{.Task.Slot}}" and "INSTANCE_INDEX" not in env
        assert f"INSTANCE_INDEX=$(( {shard * 3} + ${{{SLOT_ENV}:-1}} - 1 ))" in env[SCRIPT_ENV]


def test_both_schedulers_have_every_method_of_the_seam() -> None:
    from fence.running.manager import InstanceManager
    from fence.running.scheduler import Scheduler

    seam = [name for name, member in vars(Scheduler).items() if callable(member) and not name.startswith("_")]
    assert "running_ids" in seam and "wait_pass" in seam
    for implementation in (InstanceManager, SwarmScheduler):
        assert [name for name in seam if not callable(getattr(implementation, name, None))] == [], implementation


def test_running_ids_are_the_running_tasks_on_the_controllers_own_node(cnode: ClusterNode) -> None:
    cnode.deploy("web", instances=3)
    cnode.settle()
    own = cnode.swarm.swarm_state().node_id
    [service] = cnode.services()
    expected = sorted(t.container_id for t in service.tasks if t.running and t.node_id == own)
    assert len(expected) == 1 and sorted(cnode.manager.running_ids()) == expected
