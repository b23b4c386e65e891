"""The network part of the container contract, checked against FakeBackend and DockerBackend alike."""

from __future__ import annotations

import ipaddress
from typing import Callable, Iterator

import pytest

from fence import labels
from fence.backend.base import ContainerBackend
from fence.backend.firewall import BRIDGE_PREFIX, bridge_interface
from fence.errors import EngineError, UsageError
from fence.models import ContainerSpec, NetworkSpec

SpecMaker = Callable[..., ContainerSpec]


@pytest.fixture
def net(backend: ContainerBackend, node_id: str) -> Iterator[Callable[[str], NetworkSpec]]:
    """Makes network specs of this test's node; afterwards its containers, then its networks, are gone."""
    def make(app: str) -> NetworkSpec:
        return NetworkSpec(name=f"fence-{node_id}-{app}", labels=labels.owned(node_id, labels.ROLE_NETWORK, app=app))
    yield make
    for leftover in backend.list({labels.NODE: node_id}):
        leftover.destroy()
    for network in backend.list_networks({labels.NODE: node_id}):
        backend.remove_network(network.name)


def test_create_network_names_its_bridge_and_gives_a_subnet(backend: ContainerBackend,
                                                            net: Callable[[str], NetworkSpec]) -> None:
    spec = net("shop")
    made = backend.create_network(spec)
    assert made.name == spec.name and made.labels == spec.labels
    assert made.bridge == bridge_interface(spec.name)
    assert made.bridge.startswith(BRIDGE_PREFIX) and len(made.bridge) <= 15
    assert made.subnet and made.gateway
    assert ipaddress.ip_address(made.gateway) in ipaddress.ip_network(made.subnet)
    assert made.containers == ()
    assert backend.network_info(spec.name) == made


def test_create_network_again_returns_the_same_network(backend: ContainerBackend,
                                                       net: Callable[[str], NetworkSpec]) -> None:
    first = backend.create_network(net("shop"))
    assert backend.create_network(net("shop")).id == first.id
    assert [n.id for n in backend.list_networks({labels.NODE: first.labels[labels.NODE]})] == [first.id]


def test_list_networks_by_labels(backend: ContainerBackend, net: Callable[[str], NetworkSpec], node_id: str) -> None:
    shop, blog = backend.create_network(net("shop")), backend.create_network(net("blog"))
    assert sorted(n.name for n in backend.list_networks({labels.NODE: node_id})) == sorted([shop.name, blog.name])
    assert [n.name for n in backend.list_networks({labels.NODE: node_id, labels.APP: "blog"})] == [blog.name]
    assert backend.list_networks({labels.NODE: f"{node_id}-none"}) == []


def test_a_missing_network_is_none_and_removing_it_is_fine(backend: ContainerBackend, node_id: str) -> None:
    assert backend.network_info(f"fence-{node_id}-nothing") is None
    backend.remove_network(f"fence-{node_id}-nothing")


def test_a_container_on_the_network_gets_an_address_in_its_subnet(backend: ContainerBackend, make_spec: SpecMaker,
                                                                   net: Callable[[str], NetworkSpec]) -> None:
    network = backend.create_network(net("shop"))
    container = backend.create(make_spec(network=network.name))
    container.start()
    info = container.info()
    assert info.ip_address is not None
    assert ipaddress.ip_address(info.ip_address) in ipaddress.ip_network(network.subnet)
    assert backend.network_info(network.name).containers == (container.id,)
    assert [c.ip_address for c in backend.list_info({labels.NODE: info.labels[labels.NODE]})] == [info.ip_address]


def test_running_containers_on_one_network_never_share_an_address(backend: ContainerBackend, kind: str,
                                                                  make_spec: SpecMaker,
                                                                  net: Callable[[str], NetworkSpec]) -> None:
    # The manager and the router tell instances apart by address: a shared one kept a stopping
    # instance "routed" for ever (the fake drew addresses from random ids; its rollout test failed
    # about once in 30 runs). 60 fake containers drawn that way collide but once in 1000 runs.
    network = backend.create_network(net("shop"))
    count = 60 if kind == "fake" else 3
    running = [backend.create(make_spec(network=network.name)) for _ in range(count)]
    for container in running:
        container.start()
    gone = running.pop(0)  # a freed address may be handed out again, never a held one
    gone.destroy()
    again = backend.create(make_spec(network=network.name))
    again.start()
    running.append(again)
    addresses = [c.info().ip_address for c in running]
    assert None not in addresses and len(set(addresses)) == len(addresses), addresses


def test_a_network_with_a_running_container_is_not_removed(backend: ContainerBackend, make_spec: SpecMaker,
                                                           net: Callable[[str], NetworkSpec]) -> None:
    network = backend.create_network(net("shop"))
    container = backend.create(make_spec(network=network.name))
    container.start()
    with pytest.raises(EngineError, match="active endpoints"):
        backend.remove_network(network.name)
    container.destroy()
    backend.remove_network(network.name)
    assert backend.network_info(network.name) is None


def test_a_container_on_a_network_that_does_not_exist_is_refused(backend: ContainerBackend, make_spec: SpecMaker,
                                                                  node_id: str) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        backend.create(make_spec(network=f"fence-{node_id}-nothing"))
    assert backend.list({labels.NODE: node_id}) == []


@pytest.mark.parametrize("network", ["host", "container:abc", "default", "fence-Upper", "fence-", "br-shop"])
def test_networks_other_than_fences_are_refused_for_containers(backend: ContainerBackend, make_spec: SpecMaker,
                                                               network: str) -> None:
    with pytest.raises(UsageError, match="not allowed"):
        backend.create(make_spec(network=network))


@pytest.mark.parametrize("name", ["host", "bridge", "shop", "fence-Upper", "fence-a b", "fence-" + "x" * 200])
def test_network_names_other_than_fences_are_refused(backend: ContainerBackend, node_id: str, name: str) -> None:
    with pytest.raises(UsageError, match="not allowed"):
        backend.create_network(NetworkSpec(name=name, labels=labels.owned(node_id, labels.ROLE_NETWORK)))
    assert backend.network_info(name) is None or name in ("host", "bridge")


def test_a_network_without_the_node_label_is_refused(backend: ContainerBackend, node_id: str) -> None:
    with pytest.raises(UsageError, match="fence.node"):
        backend.create_network(NetworkSpec(name=f"fence-{node_id}-x", labels={labels.APP: "x"}))
    assert backend.network_info(f"fence-{node_id}-x") is None


def test_another_nodes_network_of_the_same_name_is_refused(backend: ContainerBackend, node_id: str,
                                                          net: Callable[[str], NetworkSpec]) -> None:
    mine = backend.create_network(net("shop"))
    other = NetworkSpec(name=mine.name, labels=labels.owned(f"{node_id}-other", labels.ROLE_NETWORK, app="shop"))
    with pytest.raises(UsageError, match="did not make it"):
        backend.create_network(other)
    assert backend.network_info(mine.name).labels == mine.labels
