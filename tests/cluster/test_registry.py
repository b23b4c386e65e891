"""The registry fence runs: Debian's docker-registry, storage under FENCE_HOME, no auth, started once, stopped."""

from __future__ import annotations

import shutil

import pytest
import yaml

from fence.cluster.registry import Registry, answers, render_config
from fence.errors import RegistryUnavailable, ToolMissing
from fence.home import NodeHome
from tests.integration.node_kit import free_port


def test_the_config_keeps_storage_under_home_and_has_no_auth(tmp_path) -> None:  # noqa: ANN001
    home = NodeHome(host_root=tmp_path)
    config = yaml.safe_load(render_config(host_storage=home.host_registry_storage, address="127.0.0.1:5123"))
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry" / "storage")
    assert config["http"]["addr"] == "127.0.0.1:5123"
    assert "auth" not in config


@pytest.fixture
def registry(tmp_path):  # noqa: ANN001, ANN201
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/ensure-engine installs it)")
    running = Registry(home=NodeHome(host_root=tmp_path / "home"))
    yield running
    running.stop()


def test_it_starts_once_answers_and_stops(registry: Registry) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = registry.ensure(address=address)
    assert first.running and answers(address)
    assert registry.ensure(address=address).pid == first.pid  # already running: left as it is
    moved = f"127.0.0.1:{free_port()}"
    assert registry.ensure(address=moved).pid != first.pid and answers(moved) and not answers(address)
    registry.stop()
    assert not answers(moved) and not registry.status(address=moved).running


def test_an_address_another_registry_holds_is_refused(registry: Registry, tmp_path) -> None:  # noqa: ANN001
    address = f"127.0.0.1:{free_port()}"
    other = Registry(home=NodeHome(host_root=tmp_path / "other"))
    try:
        other.ensure(address=address)
        with pytest.raises(RegistryUnavailable, match="another registry that fence did not start"):
            registry.ensure(address=address)
    finally:
        other.stop()


def test_a_missing_binary_is_named(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ToolMissing, match="docker-registry-missing is not installed"):
        Registry(home=NodeHome(host_root=tmp_path), binary="docker-registry-missing").ensure(address="127.0.0.1:5999")


def test_a_reused_pid_is_not_taken_for_the_registry(registry: Registry) -> None:
    import os

    registry.host_pid.parent.mkdir(parents=True, exist_ok=True)
    registry.host_pid.write_text(f"{os.getpid()}\n")  # this test's own pid: not a registry
    assert not registry.status(address="127.0.0.1:1").running
    registry.stop()  # must not signal this process
