"""The ClusterBackend contract, run against FakeSwarm and SwarmBackend on extra engines alike.

The tests run in order on one small swarm per backend (a manager, a worker, and an engine without
daemon-wide no-new-privileges that never joins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pytest

from fence.backend.base import ClusterBackend
from fence.errors import ClusterError, NodeNotFound, RegistryUnavailable, UsageError
from tests.integration.node_kit import free_port

IMAGE = "fence-test/busybox:1"


@dataclass
class Swarm:
    manager: ClusterBackend
    worker: ClusterBackend
    no_nnp: ClusterBackend
    manager_addr: str
    worker_addr: str
    registry: str
    down_registry: str


def _fake() -> Swarm:
    from fence.backend.fake_swarm import FakeSwarm, FakeSwarmWorld

    world = FakeSwarmWorld()
    world.start_registry("127.0.0.1:5999")
    images = {IMAGE: "sha256:" + "b" * 64}
    return Swarm(FakeSwarm(world=world, images=images), FakeSwarm(world=world, images=images),
                 FakeSwarm(world=world, images=images, no_new_privileges=False),
                 "127.0.0.1:2377", "127.0.0.1:2378", "127.0.0.1:5999", "127.0.0.1:5998")


@pytest.fixture(scope="module", params=["fake", "docker"])
def swarm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    if request.param == "fake":
        yield _fake()
        return
    from tests.cluster.conftest import kit_problem

    if problem := kit_problem():
        pytest.skip(problem)
    from fence.backend.swarm import SwarmBackend
    from fence.cluster.registry import Registry
    from fence.home import NodeHome
    from tests.cluster.engines import EngineKit, EngineOptions

    kit = EngineKit(host_root=tmp_path_factory.mktemp("contract-engines"))
    registry = Registry(home=NodeHome(host_root=tmp_path_factory.mktemp("contract-registry")))
    backends: list[SwarmBackend] = []
    try:
        engines = [kit.up(), kit.up(), kit.up(EngineOptions(no_new_privileges=False))]
        backends = [SwarmBackend(base_url=e.docker_host) for e in engines]
        address = f"127.0.0.1:{free_port()}"
        registry.ensure(address=address)
        yield Swarm(*backends, engines[0].swarm_addr, engines[1].swarm_addr, address, f"127.0.0.1:{free_port()}")
    finally:
        for backend in backends:
            backend.close()
        registry.stop()
        kit.down()


def test_an_engine_starts_outside_any_swarm(swarm: Swarm) -> None:
    assert not swarm.manager.swarm_state().active
    assert swarm.manager.swarm_state().state == "inactive"
    with pytest.raises(ClusterError):
        swarm.manager.list_nodes()
    with pytest.raises(ClusterError, match="not a swarm manager"):
        swarm.manager.list_services({"fence.node": "contract"})


def test_init_makes_a_manager_and_a_second_init_adopts_it(swarm: Swarm) -> None:
    state = swarm.manager.swarm_init(listen_addr=swarm.manager_addr, advertise_addr=swarm.manager_addr)
    assert state.active and state.manager and state.cluster_id and state.node_id
    again = swarm.manager.swarm_init(listen_addr=swarm.manager_addr, advertise_addr=swarm.manager_addr)
    assert (again.cluster_id, again.node_id) == (state.cluster_id, state.node_id)


def test_a_bad_token_is_refused_and_a_worker_token_joins(swarm: Swarm) -> None:
    tokens = swarm.manager.join_tokens()
    assert tokens.worker.startswith("SWMTKN-") and tokens.worker != tokens.manager
    with pytest.raises(ClusterError, match="joining the swarm"):
        swarm.worker.swarm_join(token=tokens.worker[:-5] + "xxxxx", remote_addr=swarm.manager_addr,
                                listen_addr=swarm.worker_addr, advertise_addr=swarm.worker_addr)
    state = swarm.worker.swarm_join(token=tokens.worker, remote_addr=swarm.manager_addr,
                                    listen_addr=swarm.worker_addr, advertise_addr=swarm.worker_addr)
    assert state.active and not state.manager
    with pytest.raises(ClusterError, match="already in a swarm"):
        swarm.worker.swarm_join(token=tokens.worker, remote_addr=swarm.manager_addr,
                                listen_addr=swarm.worker_addr, advertise_addr=swarm.worker_addr)
    with pytest.raises(ClusterError, match="worker"):
        swarm.worker.swarm_init(listen_addr=swarm.worker_addr, advertise_addr=swarm.worker_addr)


def test_the_manager_lists_both_nodes_and_a_worker_cannot(swarm: Swarm) -> None:
    nodes = swarm.manager.list_nodes()
    assert [n.role for n in nodes] == ["manager", "worker"]
    assert nodes[0].leader and nodes[0].id == swarm.manager.swarm_state().node_id
    assert {n.availability for n in nodes} == {"active"}
    with pytest.raises(ClusterError, match="worker"):
        swarm.worker.list_nodes()


def test_availability_flips_and_bad_names_are_refused(swarm: Swarm) -> None:
    worker_id = swarm.worker.swarm_state().node_id
    assert swarm.manager.set_availability(worker_id[:10], "drain").availability == "drain"
    assert next(n for n in swarm.manager.list_nodes() if n.id == worker_id).availability == "drain"
    assert swarm.manager.set_availability(worker_id, "active").availability == "active"
    with pytest.raises(UsageError, match="availability 'away'"):
        swarm.manager.set_availability(worker_id, "away")
    with pytest.raises(NodeNotFound):
        swarm.manager.set_availability("nosuchnode", "drain")


def test_engine_checks_read_remapping_and_the_daemon_wide_no_new_privileges(swarm: Swarm) -> None:
    good = swarm.manager.engine_checks(probe_image=IMAGE)
    assert good.userns_remap and good.no_new_privileges and good.problems == ()
    bad = swarm.no_nnp.engine_checks(probe_image=IMAGE)
    assert bad.userns_remap and not bad.no_new_privileges
    [problem] = bad.problems
    assert "no-new-privileges" in problem
    with pytest.raises(UsageError, match="probe image"):
        swarm.manager.engine_checks(probe_image="fence-test/no-such-image:1")


def test_a_probe_reads_the_checks_on_every_node(swarm: Swarm) -> None:
    checks = swarm.manager.probe_nodes(probe_image=IMAGE)
    assert set(checks) == {swarm.manager.swarm_state().node_id, swarm.worker.swarm_state().node_id}
    assert all(c.userns_remap and c.no_new_privileges for c in checks.values())


def test_a_push_returns_a_digest_reference_that_a_worker_pulls(swarm: Swarm) -> None:
    ref = swarm.manager.push_image(IMAGE, registry=swarm.registry, repository="fence/contract", tag="c1")
    assert ref.startswith(f"{swarm.registry}/fence/contract@sha256:") and len(ref.split("@sha256:")[1]) == 64
    assert swarm.worker.pull_image(ref).startswith("sha256:")
    with pytest.raises(UsageError, match="not a reference by digest"):
        swarm.worker.pull_image(f"{swarm.registry}/fence/contract:c1")
    with pytest.raises(RegistryUnavailable):
        swarm.worker.pull_image(ref.split("@")[0] + "@sha256:" + "0" * 64)
    with pytest.raises(RegistryUnavailable):
        swarm.manager.push_image(IMAGE, registry=swarm.down_registry, repository="fence/contract", tag="c1")


def test_a_service_spreads_publishes_its_port_scales_and_goes(swarm: Swarm) -> None:
    from dataclasses import replace

    from fence.cluster_models import ServiceSpec
    from fence.models import Limits
    from tests.integration.node_kit import wait_for

    ref = swarm.manager.push_image(IMAGE, registry=swarm.registry, repository="fence/contract", tag="svc")
    port = free_port()
    owned = {"fence.node": "contract", "fence.role": "instance"}
    spec = ServiceSpec(name="fence-contract-web-r1-s0", labels=owned, image=ref, user="1000:1000",
                       command=("httpd", "-f", "-p", "8080", "-h", "/"), env={"A": "1"}, workdir="/", limits=Limits(),
                       replicas=2, max_per_node=1, container_port=8080, published_port=port)
    with pytest.raises(UsageError, match="not a reference by digest"):
        swarm.manager.create_service(replace(spec, image=f"{swarm.registry}/fence/contract:svc"))
    with pytest.raises(UsageError, match="never root"):
        swarm.manager.create_service(replace(spec, user="0"))
    service_id = swarm.manager.create_service(spec)
    try:
        def running() -> list:
            return [t for s in swarm.manager.list_services(owned) for t in s.tasks if t.running]

        tasks = wait_for(lambda: len(running()) == 2 and running(), timeout=120)
        [service] = swarm.manager.list_services(owned)
        assert service.id == service_id and service.image == ref and service.labels == owned
        assert service.replicas == 2 and service.max_per_node == 1
        nodes = {swarm.manager.swarm_state().node_id, swarm.worker.swarm_state().node_id}
        assert {t.node_id for t in tasks} == nodes  # one per node
        assert {t.published_port for t in tasks} == {port} and all(t.node_address and t.container_id for t in tasks)
        assert swarm.manager.list_services({"fence.node": "another"}) == []
        swarm.manager.scale_service(service_id, replicas=1, max_per_node=1)
        wait_for(lambda: len(running()) == 1, timeout=120)
        assert set(t.id for t in running()) <= {t.id for t in tasks}  # scaling down restarted nothing
    finally:
        swarm.manager.remove_service(service_id)
    assert swarm.manager.list_services(owned) == []
    swarm.manager.remove_service(service_id)  # gone already: nothing to do


def test_leaving(swarm: Swarm) -> None:
    swarm.worker.swarm_leave(force=False)
    assert swarm.worker.swarm_state().state == "inactive"
    swarm.worker.swarm_leave(force=False)  # in no swarm: nothing to do
    with pytest.raises(ClusterError):
        swarm.manager.swarm_leave(force=False)
    swarm.manager.swarm_leave(force=True)
    assert swarm.manager.swarm_state().state == "inactive"


def test_probe_results_are_read_from_log_details() -> None:
    from fence.backend.swarm import _probe_results

    text = ("com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s NoNewPrivs:\t1\n"
            "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s          0     100000      65536\n"
            "com.docker.swarm.node.id=n2,com.docker.swarm.service.id=s NoNewPrivs:\t0\n"
            "com.docker.swarm.node.id=n2,com.docker.swarm.service.id=s          0          0 4294967295\n")
    found = _probe_results(text, version={"n1": "20.10"})
    assert found["n1"].userns_remap and found["n1"].no_new_privileges and found["n1"].version == "20.10"
    assert not found["n2"].userns_remap and not found["n2"].no_new_privileges

