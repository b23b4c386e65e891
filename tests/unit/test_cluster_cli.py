"""kato cluster and node commands on FakeSwarm: refusals in one line, bad input, config recorded; cluster/* keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from fence.backend.fake_swarm import FakeSwarm, FakeSwarmWorld
from fence.config import ConfigStore
from fence.errors import FenceError, InvalidConfigValue

IMAGE = "fence/stack:bookworm"


@pytest.mark.parametrize(("key", "raw", "fragment"), [
    ("cluster/role", "boss", "one of none, controller, worker"),
    ("cluster/registry_address", "localhost:5000", "IPv4 address and port"),
    ("cluster/registry_address", "127.0.0.1:70000", "IPv4 address and port"),
    ("cluster/registry_address", "127.0.0.1", "IPv4 address and port"),
    ("cluster/registry_address", "", "IPv4 address and port"),
    ("cluster/listen_address", "0.0.0.0:port", "IPv4 address and port"),
    ("cluster/advertise_address", "10.0.0.1:2377; rm -rf /", "or empty"),
    ("cluster/manager_address", "::1:2377", "IPv4"),
])
def test_bad_cluster_values_are_refused(tmp_path: Path, key: str, raw: str, fragment: str) -> None:
    store = ConfigStore(host_file=tmp_path / "config.yml")
    with pytest.raises(InvalidConfigValue) as caught:
        store.set("fence", key, raw)
    assert key in caught.value.message and fragment in caught.value.message
    assert not (tmp_path / "config.yml").exists()


def test_cluster_defaults_are_a_single_node(tmp_path: Path) -> None:
    store = ConfigStore(host_file=tmp_path / "config.yml")
    assert store.fence("cluster/role") == "none"
    assert store.fence("cluster/registry_address") == "127.0.0.1:5000"
    store.set("fence", "cluster/advertise_address", "")
    assert store.fence("cluster/advertise_address") == ""


@pytest.fixture
def world(home, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """A fake swarm world; kato's backend is the fake engine in ``world.engine`` (set per test)."""
    fake_world = FakeSwarmWorld()
    fake_world.start_registry("127.0.0.1:5000")
    fake_world.engine = FakeSwarm(world=fake_world, images={IMAGE: "sha256:" + "a" * 64})
    monkeypatch.setattr("kato.cluster_cmd._backend", lambda: fake_world.engine)
    monkeypatch.setattr("fence.cluster.registry.answers", lambda address, **_: address in fake_world.registries)

    class NoRegistry:
        def __init__(self, **_: object) -> None:
            pass

        def ensure(self, *, address: str):  # noqa: ANN202
            from fence.cluster.registry import RegistryStatus

            return RegistryStatus(running=True, pid=1, address=address)

        def stop(self) -> None:
            pass

    monkeypatch.setattr("fence.cluster.registry.Registry", NoRegistry)
    return fake_world


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    output: str


def kato(*args: str) -> Outcome:
    """kato in-process (the fake engine lives here); a FenceError as the entry point shows it."""
    from kato.cli import kato as group

    result = CliRunner().invoke(group, list(args))
    if isinstance(result.exception, FenceError):
        return Outcome(result.exception.exit_code, f"{result.output}error: {result.exception.message}\n")
    return Outcome(result.exit_code, result.output)


def test_init_records_the_controller_and_join_command_prints_the_token(world, home) -> None:  # noqa: ANN001
    result = kato("cluster", "init")
    assert result.exit_code == 0, result.output
    store = ConfigStore(host_file=home.host_config)
    assert store.fence("cluster/role") == "controller"
    printed = kato("cluster", "join-command").output.split()
    assert printed[:3] == ["kato", "cluster", "join"] and printed[3] == world.engine.join_tokens().worker
    assert printed[4] == "192.0.2.1:2377"  # the engine picked it: no advertise address set


def test_init_drains_a_controller_whose_engine_fails_a_check(world, home) -> None:  # noqa: ANN001
    world.engine = FakeSwarm(world=world, images={IMAGE: "x"}, no_new_privileges=False)
    result = kato("cluster", "init")
    assert result.exit_code == 0, result.output
    assert "This node is drained" in result.output and "no-new-privileges" in result.output
    [node] = world.engine.list_nodes()
    assert node.availability == "drain"


def test_init_keeps_a_controller_that_passes_the_checks_active(world, home) -> None:  # noqa: ANN001
    assert "drained" not in kato("cluster", "init").output
    [node] = world.engine.list_nodes()
    assert node.availability == "active"


@pytest.mark.parametrize(("engine", "fragment"), [
    ({"userns_remap": False}, "user-namespace remapping is off"),
    ({"no_new_privileges": False}, "does not set no-new-privileges daemon-wide"),
])
def test_join_refuses_an_engine_that_lacks_a_protection(world, home, engine, fragment) -> None:  # noqa: ANN001
    manager = world.engine
    kato("cluster", "init")
    token = manager.join_tokens().worker
    world.engine = FakeSwarm(world=world, images={IMAGE: "x"}, **engine)
    result = kato("cluster", "join", token, "192.0.2.1:2377")
    assert result.exit_code == 6
    assert result.output.strip().startswith("error: refusing to join the cluster:") and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert world.engine.swarm_state().state == "inactive"


def test_join_refuses_when_the_registry_does_not_answer(world, home) -> None:  # noqa: ANN001
    kato("cluster", "init")
    token = world.engine.join_tokens().worker
    world.engine = FakeSwarm(world=world, images={IMAGE: "x"})
    ConfigStore(host_file=home.host_config).set("fence", "cluster/registry_address", "127.0.0.1:5001")
    result = kato("cluster", "join", token, "192.0.2.1:2377")
    assert result.exit_code == 6 and "registry at 127.0.0.1:5001 does not answer" in result.output


@pytest.mark.parametrize(("args", "fragment"), [
    (("SWMTKN-1-abc", "controller:2377"), "ADDRESS 'controller:2377' is not IP:PORT"),
    (("SWMTKN-1-abc", "127.0.0.1"), "is not IP:PORT"),
    (("token; rm -rf /", "127.0.0.1:2377"), "TOKEN is not a Swarm join token"),
])
def test_join_refuses_bad_arguments(world, args, fragment) -> None:  # noqa: ANN001
    result = kato("cluster", "join", *args)
    assert result.exit_code == 2 and fragment in result.output
    assert world.engine.swarm_state().state == "inactive"


def test_a_joined_worker_is_listed_drained_and_activated(world, home) -> None:  # noqa: ANN001
    manager = world.engine
    kato("cluster", "init")
    token = manager.join_tokens().worker
    world.engine = FakeSwarm(world=world, images={IMAGE: "x"}, hostname="w1")
    assert kato("cluster", "join", token, "192.0.2.1:2377").exit_code == 0
    world.engine = manager
    listed = kato("node", "list").output
    assert listed.count(" ok") == 2 and "worker" in listed
    assert "is drain" in kato("node", "drain", "w1").output
    assert "is active" in kato("node", "activate", "w1").output
    assert kato("node", "drain", "nope").exit_code == 3


def test_the_controller_leaves_only_with_force(world, home) -> None:  # noqa: ANN001
    kato("cluster", "init")
    refused = kato("cluster", "leave")
    assert refused.exit_code == 4 and "--force" in refused.output
    assert kato("cluster", "leave", "--force").exit_code == 0
    assert ConfigStore(host_file=home.host_config).fence("cluster/role") == "none"
    assert world.engine.swarm_state().state == "inactive"
