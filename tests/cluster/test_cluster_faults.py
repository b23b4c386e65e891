"""Node faults on a 3-engine cluster (issue 17, 5): a drained node's tasks move with 0 failed
requests, and a worker engine killed hard (SIGKILL, as a crash would) gets its tasks rescheduled
and routed elsewhere while a poller of idempotent requests through the router sees no failure.

The cluster is the tier's usual one (tests/cluster/test_instances.py: extra engines only, never
the main engine; the controller's daemon has DOCKER_HOST at the first), on an engine kit of its
own (the session kit's slot holds 9 engines, which the other modules use). Swarm's dispatcher
heartbeat is set to 1 s (its default is 5 s) so a dead node is marked down sooner; the time from
the kill to the app's full count again is printed and recorded as a test property (the figure
is measured in bench/cluster.py, not asserted here).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator

import pytest

from fence import labels
from fence.backend.swarm import SwarmBackend
from tests.cluster.conftest import kit_problem
from tests.cluster.engines import EngineKit, ExtraEngine, busybox_rootfs
from tests.cluster.test_cluster import KatoNode
from tests.cluster.test_instances import APP_IMAGE, WEB, ControllerNode, form_cluster
from tests.integration.node_kit import Poller, free_port, wait_for

APP = "faulty"
COUNT = 3


@dataclass
class FaultCluster:
    node: ControllerNode
    controller: KatoNode
    engines: list[ExtraEngine]
    swarm: SwarmBackend

    def live_tasks(self) -> list[tuple[str, str]]:
        """(task id, node id) of every running task of the app."""
        return sorted((t.id, t.node_id) for s in self.swarm.list_services({labels.NODE: self.node.home.node_id,
                                                                          labels.APP: APP})
                      for t in s.tasks if t.running)

    def node_of(self, engine: ExtraEngine) -> str:
        return json.loads(engine.docker("info", "--format", "{{json .Swarm.NodeID}}").stdout)

    def answering(self, requests: int = 12) -> set[str]:
        """The task host names that answered ``requests`` GETs through the router."""
        found = set()
        for _ in range(requests):
            status, body = self.node.url_get(APP)
            if status == 200 and len(body.split()) > 1:
                found.add(body.split()[1])
        return found

    def full(self, *, without: str) -> bool:
        """COUNT tasks run, none on node ``without``, and the router reaches COUNT of them."""
        tasks = self.live_tasks()
        return (len(tasks) == COUNT and all(node != without for _, node in tasks)
                and len(self.answering()) == COUNT)

    def tasks_text(self) -> str:
        ids = [s.id for s in self.swarm.list_services({labels.NODE: self.node.home.node_id, labels.APP: APP})]
        return self.engines[0].docker("service", "ps", "--format", "{{.Name}} {{.Node}} {{.DesiredState}} "
                                      "{{.CurrentState}} {{.Error}}", *ids).stdout if ids else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    if problem := kit_problem():
        pytest.skip(problem)
    kit = EngineKit(host_root=tmp_path_factory.mktemp("fault-engines", numbered=True))
    node = None
    kato_nodes: list[KatoNode] = []
    try:
        registry = f"127.0.0.1:{free_port()}"
        homes = tmp_path_factory.mktemp("fault-homes")
        engines = [kit.up() for _ in range(3)]
        kato_nodes = [KatoNode(engine, homes / f"node{i}") for i, engine in enumerate(engines)]
        for kato in kato_nodes:
            kato.configure(registry)
            # Advertised where it listens (its own loopback address), not on lo's 127.0.0.1.
            assert kato.kato("config", "set", "fence", "cluster/advertise_address", kato.engine.swarm_addr).exit_code == 0
        controller, *workers = kato_nodes
        with busybox_rootfs().open("rb") as host_tar:
            engines[0].docker("import", "--change", 'CMD ["sh", "-c", ' + json.dumps(WEB) + "]", "-", APP_IMAGE,
                              stdin=host_tar)
        node = ControllerNode(root=controller.root, docker_host=engines[0].docker_host)
        form_cluster(node, controller, workers, engines, heartbeat="1s")
        meta = homes / "meta"
        meta.mkdir()
        (meta / "stackato.yml").write_text(f"name: {APP}\n")
        pushed = node.cli("fence", "push", str(meta), "--name", APP, "--image", APP_IMAGE,
                          "--instances", str(COUNT), timeout=300)
        assert pushed.exit_code == 0, pushed.stdout[-2000:] + pushed.stderr[-2000:]
        yield FaultCluster(node=node, controller=controller, engines=engines,
                           swarm=SwarmBackend(base_url=engines[0].docker_host))
    finally:
        if node is not None:
            node.cli("fence", "delete", APP, timeout=120)
            node.close()
        for worker in kato_nodes[1:]:
            if worker.engine.answers():
                worker.kato("cluster", "leave")
        if kato_nodes:
            kato_nodes[0].kato("cluster", "leave", "--force")
        kit.down()


def test_draining_a_node_moves_its_tasks_with_no_failed_request(cluster: FaultCluster) -> None:
    wait_for(lambda: len({node for _, node in cluster.live_tasks()}) == COUNT, timeout=120)
    drained = cluster.node_of(cluster.engines[1])
    try:
        with Poller(cluster.node, APP) as poller:
            drained_at = time.monotonic()
            done = cluster.controller.kato("node", "drain", drained)
            assert done.exit_code == 0, done.stderr
            try:
                wait_for(lambda: cluster.full(without=drained), timeout=180, interval=1)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{cluster.tasks_text()}") from None
            moved = time.monotonic() - drained_at
            time.sleep(1)  # requests on the new layout too
        assert poller.failures == [] and poller.total > 20, (poller.outcomes, poller.failures[:5])
        print(f"\n-----> node drained -> {COUNT} instances running and routed elsewhere in {moved:.1f} s; "
              f"{poller.total} requests through the router, {len(poller.failures)} failed")
        assert not [task for task, node in cluster.live_tasks() if node == drained]
    finally:
        assert cluster.controller.kato("node", "activate", drained).exit_code == 0


def test_a_worker_engine_killed_hard_has_its_tasks_rescheduled_with_no_failed_request(
        cluster: FaultCluster, record_property: pytest.RecordProperty) -> None:
    # A worker that runs a task, while another node runs one too (2+ instances on different nodes).
    tasks = wait_for(lambda: (found := cluster.live_tasks()) and len(found) == COUNT and found, timeout=120)
    assert len({node for _, node in tasks}) >= 2
    busy = {node for _, node in tasks}
    victim = next(e for e in cluster.engines[1:] if cluster.node_of(e) in busy)
    victim_node = cluster.node_of(victim)
    with Poller(cluster.node, APP) as poller:
        killed_at = time.monotonic()
        victim.kill_hard()
        try:
            wait_for(lambda: cluster.full(without=victim_node), timeout=240, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{cluster.tasks_text()}") from None
        back = time.monotonic() - killed_at
        time.sleep(1)
    record_property("engine_kill_to_full_count_seconds", round(back, 1))
    print(f"\n-----> worker engine killed -> {COUNT} instances running and routed again in {back:.1f} s "
          f"({poller.total} requests, {len(poller.failures)} failed)")
    assert poller.failures == [] and poller.total > 20, (poller.outcomes, poller.failures[:5])
    state = {n.id: n.state for n in cluster.swarm.list_nodes()}
    assert state[victim_node] == "down"
