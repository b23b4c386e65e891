"""Each app's own network on the fake engine: made at its first start, joined by instances and tasks, removed
with the app, collected by gc; the host firewall installed by the daemon and reported by status."""

from __future__ import annotations

import io
import ipaddress
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from fence import labels
from fence.backend.fake import FakeBackend, FakeProcess
from fence.backend.firewall import FakeFirewall
from fence.home import NodeHome
from fence.models import AppRecord, DropletRecord, NetworkSpec
from fence.running.networks import AppNetworks, network_name
from fence.running.starter import Launch
from fence.wiring import node_service


def _idles(proc: FakeProcess) -> int:
    proc.sleep(float("inf"))
    return 0


class Node:
    """A node service on the fake engine, with one released app."""

    def __init__(self, home: NodeHome) -> None:
        self.backend = FakeBackend()
        self.backend.programs["/bin/bash"] = _idles
        self.firewall = FakeFirewall()
        self.service = node_service(home, backend=self.backend, router=None, firewall=self.firewall)
        self.node_id = home.node_id

    def release(self, app: str) -> DropletRecord:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("app")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        digest, size = self.service.droplets.write(app_tar=[buffer.getvalue()], extra_files={"a": app.encode()},
                                                   uid=1000)
        droplet = DropletRecord(id=digest, app=app, size=size, buildpacks=(), start_command="serve",
                                process_types={}, config_vars={}, stack_image="fence/stack:bookworm",
                                stack_image_id="sha256:x", commit=None, staged_at="t", staging_id="s")
        store = self.service.store
        store.add_droplet(droplet)
        store.put_app(AppRecord(name=app, instances=1, memory_mib=64, env={}, started=False, release=None,
                                health_timeout=None, urls=(), created_at="t"))
        store.add_release(app, digest, "t", "push")
        return droplet

    def launch(self, app: str, droplet: DropletRecord, role: str = labels.ROLE_INSTANCE):  # noqa: ANN201
        record = self.service.store.app(app)
        return self.service.apps._starter.launch(Launch(app=record, release=1, droplet=droplet, index=0, role=role,
                                                        command_argv=("true",) if role == labels.ROLE_TASK else ()))

    def networks(self) -> dict[str, tuple[str, ...]]:
        return {n.labels[labels.APP]: n.containers
                for n in self.backend.list_networks({labels.NODE: self.node_id, labels.ROLE: labels.ROLE_NETWORK})}


@pytest.fixture
def node(home: NodeHome) -> Iterator[Node]:
    made = Node(home)
    yield made
    made.service.close()


def test_instances_and_tasks_of_an_app_join_only_its_own_network(node: Node) -> None:
    shop, blog = node.release("shop"), node.release("blog")
    assert node.networks() == {}
    first = node.launch("shop", shop)
    second = node.launch("shop", shop)
    task = node.launch("shop", shop, role=labels.ROLE_TASK)
    other = node.launch("blog", blog)
    shop_net, blog_net = network_name(node.node_id, "shop"), network_name(node.node_id, "blog")
    assert [c.spec.network for c in (first, second, task, other)] == [shop_net, shop_net, shop_net, blog_net]
    assert node.networks() == {"shop": tuple(sorted((first.id, second.id, task.id))), "blog": (other.id,)}
    assert all(spec.network != "bridge" for spec in node.backend.created
               if spec.labels.get(labels.ROLE) in (labels.ROLE_INSTANCE, labels.ROLE_TASK))
    network = node.backend.network_info(shop_net)
    assert network.labels == {labels.NODE: node.node_id, labels.ROLE: labels.ROLE_NETWORK, labels.APP: "shop"}
    assert ipaddress.ip_address(first.info().ip_address) in ipaddress.ip_network(network.subnet)


def test_a_network_removed_by_hand_is_made_again_at_the_next_start(node: Node) -> None:
    shop = node.release("shop")
    node.launch("shop", shop).destroy()
    node.backend.remove_network(network_name(node.node_id, "shop"))
    again = node.launch("shop", shop)
    assert again.spec.network == network_name(node.node_id, "shop")
    assert node.networks() == {"shop": (again.id,)}


def test_deleting_the_app_removes_its_network_and_leaves_the_others(node: Node) -> None:
    shop, blog = node.release("shop"), node.release("blog")
    node.launch("shop", shop).destroy()
    node.launch("blog", blog)
    node.service.apps.delete("shop")
    assert set(node.networks()) == {"blog"}


def test_gc_removes_the_network_of_an_app_that_is_gone_once_nothing_runs_on_it(node: Node) -> None:
    shop = node.release("shop")
    task = node.launch("shop", shop, role=labels.ROLE_TASK)
    node.service.store.delete_app("shop")  # as if the app went while its network was busy
    keep = node.backend.create_network(NetworkSpec(
        name=network_name(node.node_id, "kept"), labels=labels.owned(node.node_id, labels.ROLE_NETWORK, app="kept")))
    node.release("kept")
    assert [i.kind for i in node.service.gc(dry_run=True).items if i.kind == "network"] == []
    task.destroy()
    dry = node.service.gc(dry_run=True)
    wanted = [(i.kind, i.name) for i in dry.items if i.kind == "network"]
    assert wanted == [("network", network_name(node.node_id, "shop"))]
    assert "shop" in next(i.detail for i in dry.items if i.kind == "network")
    real = node.service.gc(dry_run=False)
    assert [(i.kind, i.name) for i in real.items if i.kind == "network"] == wanted
    assert set(node.networks()) == {"kept"} and node.backend.network_info(keep.name) is not None


def test_gc_leaves_another_nodes_networks_alone(node: Node) -> None:
    other = NetworkSpec(name="fence-nother-shop", labels=labels.owned("nother", labels.ROLE_NETWORK, app="shop"))
    node.backend.create_network(other)
    assert [i for i in node.service.gc(dry_run=False).items if i.kind == "network"] == []
    assert node.backend.network_info(other.name) is not None


def test_app_networks_make_one_network_per_app_even_when_asked_twice(node: Node) -> None:
    networks = AppNetworks(backend=node.backend, node_id=node.node_id)
    assert networks.ensure("shop") == networks.ensure("shop") == network_name(node.node_id, "shop")
    assert list(node.networks()) == ["shop"]
    assert networks.remove("shop") and networks.remove("shop")
    assert node.networks() == {}


def test_removing_a_busy_network_is_left_for_later(node: Node) -> None:
    shop = node.release("shop")
    node.launch("shop", shop)
    assert node.service.apps._starter.networks.remove("shop") is False
    assert list(node.networks()) == ["shop"]


def test_the_daemon_installs_the_firewall_and_status_reports_what_is_missing(node: Node) -> None:
    missing = [w for w in node.service.status().warnings if "FENCE-INPUT" in w]
    assert missing and "reach services on the host" in missing[0]
    assert node.service.protect_host().protected and node.firewall.installs == 1
    assert not [w for w in node.service.status().warnings if "FENCE-INPUT" in w or "iptables" in w]


def test_status_says_so_when_the_node_has_no_iptables(home: NodeHome) -> None:
    firewall = FakeFirewall(available=False)
    service = node_service(home, backend=FakeBackend(), router=None, firewall=firewall)
    try:
        assert service.protect_host().protected is False
        assert any(w.startswith("iptables is not installed") for w in service.status().warnings)
    finally:
        service.close()


def test_a_test_backend_never_gets_the_hosts_firewall(home: NodeHome, tmp_path: Path) -> None:
    service = node_service(home, backend=FakeBackend(), router=None)
    try:
        assert isinstance(service.firewall, FakeFirewall)
    finally:
        service.close()
