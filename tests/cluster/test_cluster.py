"""Forming a cluster on extra engines with kato: init, join with checks, node list, drain, registry, leave."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from fence.backend.swarm import SwarmBackend
from tests.cluster.engines import TEST_IMAGE, EngineKit, EngineOptions, ExtraEngine
from tests.conftest import CliResult, run_cli
from tests.integration.node_kit import free_port


@dataclass
class KatoNode:
    """A fence node's FENCE_HOME pointed at one extra engine."""

    engine: ExtraEngine
    root: Path

    def kato(self, *args: str) -> CliResult:
        env = {**os.environ, "FENCE_HOME": str(self.root), "DOCKER_HOST": self.engine.docker_host}
        return run_cli("kato", *args, env=env, timeout=180)

    def configure(self, registry: str) -> None:
        for key, value in (("docker/image", TEST_IMAGE), ("cluster/listen_address", self.engine.swarm_addr),
                           ("cluster/registry_address", registry)):
            assert self.kato("config", "set", "fence", key, value).exit_code == 0


@dataclass
class Cluster:
    controller: KatoNode
    workers: list[KatoNode]
    refused: dict[str, KatoNode]
    registry: str
    join: list[str]


@pytest.fixture(scope="module")
def cluster(engine_kit: EngineKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A controller and two workers joined through kato, and two engines that must be refused."""
    registry = f"127.0.0.1:{free_port()}"
    homes = tmp_path_factory.mktemp("cluster-homes")
    nodes = [KatoNode(engine_kit.up(), homes / f"node{i}") for i in range(3)]
    refused = {"no-nnp": KatoNode(engine_kit.up(EngineOptions(no_new_privileges=False)), homes / "no-nnp"),
               "no-remap": KatoNode(engine_kit.up(EngineOptions(userns_remap=False)), homes / "no-remap")}
    for node in [*nodes, *refused.values()]:
        node.configure(registry)
    controller, *workers = nodes
    try:
        init = controller.kato("cluster", "init")
        assert init.exit_code == 0, init.stderr
        # Heartbeats every second (Swarm's default is 5 s): a node that stops is seen down sooner.
        controller.engine.docker("swarm", "update", "--dispatcher-heartbeat", "1s")
        printed = controller.kato("cluster", "join-command")
        assert printed.exit_code == 0, printed.stderr
        join = printed.stdout.split()
        assert join[:3] == ["kato", "cluster", "join"] and join[3].startswith("SWMTKN-")
        yield Cluster(controller, workers, refused, registry, join[1:])
    finally:
        for node in workers:
            node.kato("cluster", "leave")
        controller.kato("cluster", "leave", "--force")


def test_workers_join_and_node_list_shows_three_with_checks(cluster: Cluster) -> None:
    for worker in cluster.workers:
        joined = worker.kato(*cluster.join)
        assert joined.exit_code == 0, joined.stderr
        assert "Joined the cluster" in joined.stdout
    listed = cluster.controller.kato("node", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    nodes = json.loads(listed.stdout)
    assert len(nodes) == 3
    assert {n["state"] for n in nodes} == {"ready"}
    assert sorted(n["role"] for n in nodes) == ["manager", "worker", "worker"]
    for node in nodes:  # read on each node by a probe task
        assert node["checks"]["userns_remap"] and node["checks"]["no_new_privileges"], node
        assert node["checks"]["problems"] == []
    text = cluster.controller.kato("node", "list").stdout
    assert len(text.strip().splitlines()) == 4 and text.count(" ok") == 3


def test_a_node_without_daemon_wide_no_new_privileges_is_refused_in_one_line(cluster: Cluster) -> None:
    refused = cluster.refused["no-nnp"].kato(*cluster.join)
    assert refused.exit_code != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "refusing to join" in refused.stderr and "no-new-privileges" in refused.stderr
    assert cluster.refused["no-nnp"].engine.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() \
        == "inactive"


def test_a_node_without_remapping_is_refused_in_one_line(cluster: Cluster) -> None:
    refused = cluster.refused["no-remap"].kato(*cluster.join)
    assert refused.exit_code != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "refusing to join" in refused.stderr and "remapping" in refused.stderr


def test_a_node_that_cannot_reach_the_registry_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    # A well-set engine (a worker's, in a home of its own) told of a registry nobody runs.
    worker = KatoNode(cluster.workers[0].engine, tmp_path / "worker-home")
    worker.configure(f"127.0.0.1:{free_port()}")
    refused = worker.kato(*cluster.join)
    assert refused.exit_code != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "registry" in refused.stderr and "does not answer" in refused.stderr


def test_drain_and_activate_flip_a_nodes_availability(cluster: Cluster) -> None:
    from fence.backend.swarm import SwarmBackend

    manager = SwarmBackend(base_url=cluster.controller.engine.docker_host)
    try:
        worker = next(n for n in manager.list_nodes() if n.role == "worker")
        drained = cluster.controller.kato("node", "drain", worker.id[:12])
        assert drained.exit_code == 0, drained.stderr
        assert {n.id: n for n in manager.list_nodes()}[worker.id].availability == "drain"
        assert cluster.controller.kato("node", "activate", worker.id).exit_code == 0
        assert {n.id: n for n in manager.list_nodes()}[worker.id].availability == "active"
    finally:
        manager.close()
    missing = cluster.controller.kato("node", "drain", "nosuchnode")
    assert missing.exit_code != 0 and "no cluster node 'nosuchnode'" in missing.stderr


def test_an_image_pushed_by_digest_is_pulled_on_a_worker(cluster: Cluster) -> None:
    from fence.backend.swarm import SwarmBackend

    controller = SwarmBackend(base_url=cluster.controller.engine.docker_host)
    worker = SwarmBackend(base_url=cluster.workers[1].engine.docker_host)
    try:
        ref = controller.push_image(TEST_IMAGE, registry=cluster.registry, repository="fence/test-push", tag="t1")
        assert ref.startswith(f"{cluster.registry}/fence/test-push@sha256:")
        image_id = worker.pull_image(ref)
        ran = cluster.workers[1].engine.docker("run", "--rm", "--net", "none", "--user", "1000", ref,
                                               "echo", "pulled")
        assert ran.stdout.strip() == "pulled" and image_id.startswith("sha256:")
    finally:
        controller.close()
        worker.close()


def test_status_shows_the_cluster(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from kato.cluster_cmd import status_lines

    monkeypatch.setenv("FENCE_HOME", str(cluster.controller.root))
    monkeypatch.setenv("DOCKER_HOST", cluster.controller.engine.docker_host)
    lines, warnings = status_lines()
    assert lines[0].startswith("cluster:       controller")
    assert any(line.startswith("nodes:") for line in lines)
    assert warnings == []


def test_a_node_joined_around_kato_fails_its_check_in_node_list_and_status(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from kato.cluster_cmd import status_lines

    bad = cluster.refused["no-nnp"].engine
    token, address = cluster.join[2], cluster.join[3]
    bad.docker("swarm", "join", "--listen-addr", bad.swarm_addr, "--advertise-addr", bad.swarm_addr,
               "--token", token, address)
    bad_id = bad.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    try:
        nodes = {n["id"]: n for n in json.loads(cluster.controller.kato("node", "list", "--json").stdout)}
        assert nodes[bad_id]["checks"]["no_new_privileges"] is False
        assert "no-new-privileges" in nodes[bad_id]["checks"]["problems"][0]
        assert "FAILED" in cluster.controller.kato("node", "list").stdout
        monkeypatch.setenv("FENCE_HOME", str(cluster.controller.root))
        monkeypatch.setenv("DOCKER_HOST", cluster.controller.engine.docker_host)
        _, warnings = status_lines()
        assert any(bad_id[:12] in w and "fails a check" in w for w in warnings), warnings
        # Its engine dies (as a crash would; a `swarm leave` took the managers ~60 s to see):
        # with 1 s heartbeats it is down within seconds. It is this module's last use of it.
        bad.kill_hard()
        deadline = time.monotonic() + 120  # the managers see it down when its heartbeats stop
        swarm = SwarmBackend(base_url=cluster.controller.engine.docker_host)
        while time.monotonic() < deadline and any(n.id == bad_id and n.state != "down" for n in swarm.list_nodes()):
            time.sleep(0.5)  # the node list alone: status_lines also probes every node (seconds a call)
        _, warnings = status_lines()
        assert any(bad_id[:12] in w and "is down" in w for w in warnings), warnings
    finally:
        if bad.answers():
            bad.docker("swarm", "leave", "--force", check=False)
        cluster.controller.engine.docker("node", "rm", "--force", bad_id, check=False)
