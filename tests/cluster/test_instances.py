"""Instances as Swarm services on 3 extra engines (issue 17): spread, hardening on every node,
the router following tasks, scale, a redeploy with 0 failed requests, rollback, a crash loop, and
the controller's daemon killed with -9 re-adopting every task.

The controller's fence daemon runs with DOCKER_HOST at the controller engine; the app is an
image app on the busybox test image (its web process is busybox httpd), pushed once to the
controller's registry and pulled by digest by the workers.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from fence import labels
from fence.backend.swarm import SwarmBackend
from fence.cluster_models import ServiceInfo
from tests.cluster.engines import EngineKit, ExtraEngine, busybox_rootfs
from tests.cluster.test_cluster import KatoNode
from tests.integration.node_kit import Node, Poller, free_port, wait_for

APP_IMAGE = "fence-test/cluster-web:1"
APP_IMAGE_2 = "fence-test/cluster-web:2"  # the same with WEBV=2 in its config: it answers v=2
BAD_IMAGE = "fence-test/cluster-bad:1"  # its web process exits 3 at once
# The web process: busybox httpd serving one file that says which release and task answered.
WEB = ('mkdir -p /tmp/w && echo "v=${WEBV:-1} $(hostname)" > /tmp/w/index.html && '
       'exec httpd -f -p "$PORT" -h /tmp/w')


@dataclass
class ControllerNode(Node):
    """The controller's fence node: its daemon talks to the controller engine."""

    docker_host: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FENCE_HOME": str(self.root), "DOCKER_HOST": self.docker_host}


@dataclass
class Cluster:
    node: ControllerNode
    engines: list[ExtraEngine]
    swarm: SwarmBackend
    meta: Path

    def services(self, app: str) -> list[ServiceInfo]:
        return [s for s in self.swarm.list_services({labels.NODE: self.node.home.node_id, labels.APP: app})]

    def live_tasks(self, app: str) -> list[tuple[str, str, str]]:
        """(task id, node id, container id) of every running task of the app."""
        return sorted((t.id, t.node_id, t.container_id) for s in self.services(app) for t in s.tasks if t.running)

    def engine_of(self, node_id: str) -> ExtraEngine:
        for engine in self.engines:
            if json.loads(engine.docker("info", "--format", "{{json .Swarm.NodeID}}").stdout) == node_id:
                return engine
        raise AssertionError(f"no engine is node {node_id}")

    def push(self, app: str, *args: str, image: str = APP_IMAGE) -> None:
        result = self.node.cli("fence", "push", str(self.meta), "--name", app, "--image", image, *args, timeout=300)
        assert result.exit_code == 0, result.stdout[-2000:] + result.stderr[-2000:] + self.tasks_text(app)

    def tasks_text(self, app: str) -> str:
        """``docker service ps`` of the app's services (for a failure's message)."""
        ids = [s.id for s in self.services(app)]
        return self.engines[0].docker("service", "ps", "--no-trunc", "--format", "{{.Name}} {{.Node}} "
                                      "{{.DesiredState}} {{.CurrentState}} {{.Error}}", *ids).stdout if ids else ""


def form_cluster(node: ControllerNode, controller: KatoNode, workers: list[KatoNode], engines: list[ExtraEngine],
                 *, heartbeat: str | None = None) -> None:
    """``kato cluster init`` on the controller (``heartbeat``: the swarm's dispatcher heartbeat
    period), ``kato cluster join`` on each worker, every node's address label, then the
    controller's daemon started with its router on its own port."""
    init = controller.kato("cluster", "init")
    assert init.exit_code == 0, init.stderr
    if heartbeat is not None:
        engines[0].docker("swarm", "update", "--dispatcher-heartbeat", heartbeat)
    join = controller.kato("cluster", "join-command").stdout.split()
    for worker in workers:
        joined = worker.kato(*join[1:])
        assert joined.exit_code == 0, joined.stderr
    # Several engines on one machine: Swarm sees every worker at 127.0.0.1, so each node is
    # told the address its ports are published on (the engine's --ip).
    for engine in engines:
        node_id = json.loads(engine.docker("info", "--format", "{{json .Swarm.NodeID}}").stdout)
        engines[0].docker("node", "update", "--label-add", f"fence.address={engine.address}", node_id)
    from fence.wiring import config_store
    config_store(node.home).set("fence", "router/port", str(node.router_port))
    node.start()


@pytest.fixture(scope="module")
def cluster(engine_kit: EngineKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    registry = f"127.0.0.1:{free_port()}"
    homes = tmp_path_factory.mktemp("instance-homes")
    engines = [engine_kit.up() for _ in range(3)]
    kato_nodes = [KatoNode(engine, homes / f"node{i}") for i, engine in enumerate(engines)]
    for kato in kato_nodes:
        kato.configure(registry)
    controller, *workers = kato_nodes
    # The app's image on the controller engine only: the workers get it from the registry.
    with busybox_rootfs().open("rb") as host_tar:
        engines[0].docker("import", "--change", 'CMD ["sh", "-c", ' + json.dumps(WEB) + "]", "-", APP_IMAGE,
                          stdin=host_tar)
        host_tar.seek(0)
        engines[0].docker("import", "--change", 'CMD ["sh", "-c", ' + json.dumps(WEB) + "]", "--change",
                          "ENV WEBV=2", "-", APP_IMAGE_2, stdin=host_tar)
        host_tar.seek(0)
        engines[0].docker("import", "--change", 'CMD ["sh", "-c", "echo bad; exit 3"]', "-", BAD_IMAGE,
                          stdin=host_tar)
    meta = homes / "meta"
    meta.mkdir()
    (meta / "stackato.yml").write_text("name: hello\n")
    node = ControllerNode(root=controller.root, docker_host=engines[0].docker_host)
    try:
        form_cluster(node, controller, workers, engines)
        yield Cluster(node=node, engines=engines, swarm=SwarmBackend(base_url=engines[0].docker_host), meta=meta)
    finally:
        for app in ("hello", "looping"):
            node.cli("fence", "delete", app, timeout=120)
        node.close()
        for worker in workers:
            worker.kato("cluster", "leave")
        controller.kato("cluster", "leave", "--force")


def _status_fields(engine: ExtraEngine, container: str, path: str) -> dict[str, str]:
    text = engine.docker("exec", container, "cat", path).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_three_instances_run_one_per_node_hardened_and_answer_through_the_router(cluster: Cluster) -> None:
    cluster.push("hello", "--instances", "3")
    [service] = cluster.services("hello")
    assert "@sha256:" in service.image and service.replicas == 3
    tasks = cluster.live_tasks("hello")
    assert len(tasks) == 3 and len({node for _, node, _ in tasks}) == 3  # one per node
    status, body = cluster.node.url_get("hello")
    assert status == 200 and body.startswith("v=1"), body
    for _, node_id, container in tasks:
        engine = cluster.engine_of(node_id)
        for path in ("/proc/self/status", "/proc/1/status"):  # an exec'd process, and the container's init
            fields = _status_fields(engine, container, path)
            assert fields["Uid"].split()[0] == "1000", (engine.name, path, fields["Uid"])
            assert int(fields["CapEff"], 16) == 0 and fields["NoNewPrivs"] == "1", (engine.name, path, fields)
    answered = {cluster.node.url_get("hello")[1].split()[1] for _ in range(12)}
    assert len(answered) == 3  # every task's container answers through the router


def test_scale_up_and_down_updates_the_router(cluster: Cluster) -> None:
    before = cluster.live_tasks("hello")
    assert cluster.node.cli("fence", "scale", "hello", "2").exit_code == 0
    wait_for(lambda: len(cluster.live_tasks("hello")) == 2, timeout=60)
    assert set(cluster.live_tasks("hello")) <= set(before)  # scaling down restarted nothing
    wait_for(lambda: len({cluster.node.url_get("hello")[1].split()[1] for _ in range(8)}) == 2, timeout=30)
    assert cluster.node.cli("fence", "scale", "hello", "3").exit_code == 0
    wait_for(lambda: len({cluster.node.url_get("hello")[1].split()[1] for _ in range(12)}) == 3, timeout=90)


def test_a_redeploy_loses_no_request_and_a_rollback_goes_back(cluster: Cluster) -> None:
    with Poller(cluster.node, "hello") as poller:
        cluster.push("hello", "--instances", "3", image=APP_IMAGE_2)
        wait_for(lambda: [s.labels[labels.RELEASE] for s in cluster.services("hello")] == ["2"], timeout=60)
        time.sleep(1)
    assert poller.failures == [] and poller.total > 10, poller.outcomes
    assert any(b.startswith("v=1") for b in poller.bodies) and any(b.startswith("v=2") for b in poller.bodies)
    assert cluster.node.url_get("hello")[1].startswith("v=2")
    with Poller(cluster.node, "hello") as poller:
        rolled = cluster.node.cli("fence", "rollback", "hello", timeout=300)
        assert rolled.exit_code == 0, rolled.stderr + cluster.tasks_text("hello")
        wait_for(lambda: [s.labels[labels.RELEASE] for s in cluster.services("hello")] == ["3"], timeout=60)
    assert poller.failures == [], poller.outcomes
    assert {cluster.node.url_get("hello")[1].split()[0] for _ in range(6)} == {"v=1"}  # release 1's droplet


def test_a_crash_looping_app_is_reported(cluster: Cluster) -> None:
    result = cluster.node.cli("fence", "push", str(cluster.meta), "--name", "looping", "--image", BAD_IMAGE,
                              timeout=300)
    assert result.exit_code != 0, result.stdout
    status = cluster.node.cli("kato", "status")
    assert "app looping is crash-looping" in status.stdout + status.stderr, status.stdout
    [view] = [v for v in cluster.node.app("looping")["instance_list"]]
    assert view["state"] == "crashed" and view["restarts"] >= 3


def test_the_daemon_killed_with_9_re_adopts_every_task(cluster: Cluster) -> None:
    before = cluster.live_tasks("hello")
    assert len(before) == 3
    with Poller(cluster.node, "hello") as poller:  # the router keeps serving while no daemon runs
        killed_at = time.monotonic()
        cluster.node.kill_daemon()
        cluster.node.start()
        wait_for(lambda: cluster.node.app("hello")["running"] == 3, timeout=60)
        back = time.monotonic() - killed_at
    assert poller.failures == [] and poller.total > 0, poller.outcomes
    print(f"\n-----> daemon killed with -9 -> restarted and 3 tasks re-adopted in {back:.1f} s; "
          f"{poller.total} requests through the router meanwhile, {len(poller.failures)} failed")
    for _ in range(6):
        cluster.node.url_get("hello")
    assert cluster.live_tasks("hello") == before  # same tasks, same containers: nothing restarted
