"""The volume and network-attach part of the container contract (issue 16), on both backends."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Iterator

import pytest

from fence import labels
from fence.backend.base import ContainerBackend
from fence.errors import EngineError, UsageError
from fence.models import ContainerSpec, NetworkSpec, ProcessSpec, VolumeMount, VolumeSpec
from tests.contract.conftest import IMAGE, LIMITS


@pytest.fixture
def cleanup(backend: ContainerBackend, node_id: str) -> Iterator[None]:
    """Afterwards this test's containers, networks and volumes are gone (in that order)."""
    yield
    for leftover in backend.list({labels.NODE: node_id}):
        leftover.destroy()
    for network in backend.list_networks({labels.NODE: node_id}):
        backend.remove_network(network.name)
    for volume in backend.list_volumes({labels.NODE: node_id}):
        backend.remove_volume(volume.name)


def _volume(node_id: str, name: str = "data") -> VolumeSpec:
    return VolumeSpec(name=f"fence-{node_id}-{name}",
                      labels=labels.owned(node_id, labels.ROLE_VOLUME, service=name))


def _spec(node_id: str, **overrides: object) -> ContainerSpec:
    values: dict[str, object] = dict(image=IMAGE, labels=labels.owned(node_id, labels.ROLE_SERVICE),
                                     user="1000", limits=LIMITS)
    values.update(overrides)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def test_volumes_are_made_once_listed_by_label_and_removed(backend: ContainerBackend, node_id: str,
                                                           cleanup: None) -> None:
    made = backend.create_volume(_volume(node_id))
    assert made.name == f"fence-{node_id}-data" and made.labels[labels.NODE] == node_id
    assert backend.create_volume(_volume(node_id)) == made
    assert [v.name for v in backend.list_volumes({labels.NODE: node_id})] == [made.name]
    assert backend.list_volumes({labels.NODE: node_id, labels.SERVICE: "other"}) == []
    backend.remove_volume(made.name)
    assert backend.volume_info(made.name) is None
    backend.remove_volume(made.name)  # a missing volume is fine


@pytest.mark.parametrize("name", ["data", "fence-UPPER", "../x", "/srv/data"])
def test_a_volume_that_is_not_fences_is_refused(backend: ContainerBackend, node_id: str, name: str) -> None:
    with pytest.raises(UsageError, match="volume"):
        backend.create_volume(VolumeSpec(name=name, labels=labels.owned(node_id, labels.ROLE_VOLUME)))
    with pytest.raises(UsageError, match="volume"):
        backend.create(_spec(node_id, volumes=(VolumeMount(volume=name, ctr_path=PurePosixPath("/data")),)))


def test_a_volume_without_the_node_label_or_missing_is_refused(backend: ContainerBackend, node_id: str) -> None:
    with pytest.raises(UsageError, match="label"):
        backend.create_volume(VolumeSpec(name=f"fence-{node_id}-x", labels={}))
    mount = VolumeMount(volume=f"fence-{node_id}-missing", ctr_path=PurePosixPath("/data"))
    with pytest.raises(UsageError, match="does not exist"):
        backend.create(_spec(node_id, volumes=(mount,)))


def test_a_mounted_volume_keeps_data_across_containers_and_cannot_be_removed_in_use(
        backend: ContainerBackend, node_id: str, cleanup: None) -> None:
    volume = backend.create_volume(_volume(node_id))
    mount = VolumeMount(volume=volume.name, ctr_path=PurePosixPath("/tmp/data"))
    first = backend.create(_spec(node_id, volumes=(mount,)))
    first.start()
    with pytest.raises(EngineError):
        backend.remove_volume(volume.name)
    first.destroy()
    backend.remove_volume(volume.name)
    assert backend.volume_info(volume.name) is None


def test_connect_and_disconnect_a_running_container(backend: ContainerBackend, node_id: str,
                                                    cleanup: None) -> None:
    own = backend.create_network(NetworkSpec(name=f"fence-{node_id}-own",
                                             labels=labels.owned(node_id, labels.ROLE_SERVICE)))
    net = backend.create_network(NetworkSpec(name=f"fence-{node_id}-shop",
                                             labels=labels.owned(node_id, labels.ROLE_NETWORK, app="shop")))
    container = backend.create(_spec(node_id, network=own.name))
    container.start()
    assert container.networks() == (own.name,)
    container.connect(net.name, aliases=("db",))
    container.connect(net.name)  # again: fine
    assert container.networks() == tuple(sorted((own.name, net.name)))
    assert container.id in (backend.network_info(net.name).containers or ())
    container.disconnect(net.name)
    container.disconnect(net.name)  # again: fine
    assert container.networks() == (own.name,)
    assert container.id not in (backend.network_info(net.name).containers or ())
    with pytest.raises(UsageError, match="not a fence network"):
        container.connect("bridge")
    with pytest.raises(UsageError, match="not a fence network"):
        container.connect(f"fence-{node_id}-missing")


@pytest.mark.parametrize("backend", ["docker"], indirect=True)  # fake processes run no shell script
def test_run_to_streams_binary_stdout_apart_from_stderr(backend, make_spec) -> None:  # noqa: ANN001
    """A dump's bytes (NULs, no newline at the end) reach the sink unchanged; stderr is the tail."""
    container = backend.create(make_spec(command=("sleep", "60")))
    container.start()
    got = bytearray()
    result = container.run_to(ProcessSpec(argv=("sh", "-c", "printf 'a\\000b\\377'; echo oops >&2; exit 3"),
                                          timeout=30), got.extend)
    assert bytes(got) == b"a\x00b\xff"
    assert result.exit_code == 3 and result.output == ("oops",)
    container.destroy()


def test_run_to_gives_stdout_to_the_sink(backend, make_spec) -> None:  # noqa: ANN001
    container = backend.create(make_spec(command=("sleep", "60")))
    container.start()
    got = bytearray()
    result = container.run_to(ProcessSpec(argv=("echo", "hello"), timeout=30), got.extend)
    assert result.exit_code == 0 and bytes(got) == b"hello\n"
    container.destroy()
