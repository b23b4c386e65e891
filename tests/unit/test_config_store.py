"""ConfigStore: typed keys, defaults, inference, type changes, lists, atomicity and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from fence.config import ConfigStore
from fence.errors import (
    ConfigFileCorrupt,
    ConfigKeyNotFound,
    ConfigTypeChange,
    InvalidConfigValue,
    InvalidKeyPath,
    UnknownComponent,
    UsageError,
)


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return ConfigStore(host_file=tmp_path / "config.yml")


def test_defaults_without_a_file(store: ConfigStore) -> None:
    assert store.get("fence", "docker/image") == "fence/stack:bookworm"
    assert store.get("fence", "staging/timeout") == 900
    assert store.get("fence", "container/bind_address") == "127.0.0.1"
    assert store.get("fence", "router/port") == 8080
    assert store.get("fence", "health/timeout") == 60
    assert store.get("fence", "security/require_userns") is False
    assert store.get("fence")["docker"]["images"] == []


def test_set_then_get_and_a_second_reader_sees_it(store: ConfigStore, tmp_path: Path) -> None:
    result = store.set("fence", "docker/image", "some/image:tag")
    assert result.value == "some/image:tag" and result.warnings == ()
    other = ConfigStore(host_file=tmp_path / "config.yml")  # e.g. the running daemon
    assert other.get("fence", "docker/image") == "some/image:tag"
    store.set("fence", "docker/image", "other/image:2")
    assert other.get("fence", "docker/image") == "other/image:2"


@pytest.mark.parametrize(("key", "raw", "fragment"), [
    ("staging/timeout", "-5", "a whole number of seconds from 1"),
    ("staging/timeout", "0", "from 1 to 86400"),
    ("staging/timeout", "ten", "whole number"),
    ("staging/network", "wifi", "one of none, bridge"),
    ("docker/image", "Bad Image", "image reference"),
    ("docker/image", "fence/stack:bad tag", "image reference"),
    ("docker/image", "-rm", "image reference"),
    ("health/timeout", "181", "from 1 to 180"),
    ("health/grace", "0", "a whole number of seconds from 1 to 180"),
    ("health/grace", "soon", "whole number"),
    ("router/port", "70000", "from 1 to 65535"),
    ("container/bind_address", "localhost; rm -rf /", "IP address"),
    ("router/bind_address", "0.0.0.0; listen 80", "IP address"),
    ("container/memory", "lots", "memory size"),
    ("container/uid", "0", "from 1"),
    ("security/require_userns", "maybe", "true or false"),
    ("router/domain", "$(touch /tmp/x)", "DNS name"),
    ("staging/concurrency", "0", "from 1 to 64"),
    ("staging/max_upload", "0", "memory size in MiB from 1"),
    ("staging/max_log", "0", "memory size in MiB from 1"),
    ("staging/max_log", "65G", "memory size"),
    ("staging/max_droplet", "lots", "memory size"),
    ("staging/max_cache", "-1", "memory size"),
    ("staging/max_files", "-1", "whole number"),
    ("staging/max_depth", "5000", "from 1 to 4096"),
    ("staging/max_ignore_patterns", "-1", "from 0 to 100000"),
    ("staging/max_ignore_pattern_length", "0", "a whole number of characters from 1 to 4096"),
    ("staging/memory", "1K", "memory size"),
    ("container/cpu_shares", "1", "from 2"),
    ("container/nofile", "10", "from 64"),
    ("container/log_max_size", "10 m; rm", "a size like 10m"),
    ("container/log_max_files", "0", "from 1 to 100"),
    ("container/user", "root;id", "a user name"),
    ("max_container_processes", "1", "from 16"),
    ("staging/buildpacks", "python,../evil", "buildpack name"),
])
def test_bad_values_are_refused_and_nothing_changes(store: ConfigStore, tmp_path: Path, key: str,
                                                     raw: str, fragment: str) -> None:
    store.set("fence", "staging/timeout", "300")
    before = (tmp_path / "config.yml").read_bytes()
    with pytest.raises(InvalidConfigValue) as caught:
        store.set("fence", key, raw)
    message = caught.value.message
    assert key in message and repr(raw) in message and fragment in message
    assert "\n" not in message
    assert (tmp_path / "config.yml").read_bytes() == before


def test_json_values_are_typed_too(store: ConfigStore) -> None:
    assert store.set("fence", "staging/timeout", "120", as_json=True).value == 120
    with pytest.raises(InvalidConfigValue):
        store.set("fence", "staging/timeout", '"120"', as_json=True)
    with pytest.raises(UsageError, match="not valid JSON"):
        store.set("fence", "staging/timeout", "{", as_json=True)
    with pytest.raises(InvalidConfigValue):
        store.set("fence", "staging", '{"timeout": -1}', as_json=True, force=True)
    assert store.get("fence", "staging/timeout") == 120


def test_memory_sizes_are_normalised_to_mib(store: ConfigStore) -> None:
    assert store.set("fence", "container/memory", "1G").value == 1024
    assert store.set("fence", "container/memory", "512M").value == 512
    assert store.set("fence", "container/memory", "300").value == 300


def test_unknown_keys_get_an_inferred_type_with_a_warning(store: ConfigStore) -> None:
    assert store.set("fence", "extra/name", "bar").warnings == ("Assumed type string",)
    result = store.set("cloud_controller", "limits", '{"apps": 5}')
    assert result.value == {"apps": 5} and result.warnings == ("Assumed type struct",)
    assert store.set("fence", "extra/name", "baz").warnings == ()


def test_changing_a_keys_type_needs_force(store: ConfigStore) -> None:
    store.set("fence", "extra/name", "bar")
    with pytest.raises(ConfigTypeChange, match="holds a string, not a struct; use --force"):
        store.set("fence", "extra/name", '{"a": 1}')
    with pytest.raises(ConfigTypeChange):
        store.set("fence", "extra/name/deeper", "x")
    assert store.get("fence", "extra/name") == "bar"
    assert store.set("fence", "extra/name", '{"a": 1}', force=True).value == {"a": 1}


def test_an_existing_int_key_keeps_its_type(store: ConfigStore) -> None:
    store.set("other", "count", "5", as_json=True)
    assert store.set("other", "count", "7").value == 7
    with pytest.raises(ConfigTypeChange):
        store.set("other", "count", "seven")


def test_del_falls_back_to_default_and_unknown_key_is_not_found(store: ConfigStore) -> None:
    store.set("fence", "docker/image", "a/b:c")
    assert store.delete("fence", "docker/image").value == "fence/stack:bookworm"
    with pytest.raises(ConfigKeyNotFound):
        store.delete("fence", "no/such/key")
    with pytest.raises(ConfigKeyNotFound):
        store.get("fence", "no/such/key")
    with pytest.raises(UnknownComponent):
        store.get("nosuch")


def test_push_and_pop_lists(store: ConfigStore) -> None:
    assert store.push("fence", "docker/images", "old/stack:1").value == ["old/stack:1"]
    assert store.push("fence", "docker/images", "old/stack:2").value == ["old/stack:1", "old/stack:2"]
    with pytest.raises(InvalidConfigValue):
        store.push("fence", "docker/images", "Not An Image")
    assert store.pop("fence", "docker/images", "old/stack:1").value == ["old/stack:2"]
    assert store.pop("fence", "docker/images").value == []
    with pytest.raises(ConfigKeyNotFound):
        store.pop("fence", "docker/images")
    with pytest.raises(ConfigTypeChange):
        store.push("fence", "docker/image", "x")
    assert store.push("other", "things", "a").warnings == ("Assumed type list",)


@pytest.mark.parametrize("path", ["", "/", "a//b", "a/b c", "../etc", "a/$(x)", "/".join("a" * 1 for _ in range(17))])
def test_malformed_key_paths(store: ConfigStore, path: str) -> None:
    with pytest.raises(InvalidKeyPath):
        store.set("fence", path, "x")


@pytest.mark.parametrize("component", ["", "Fence", "a b", "../x", "x;y"])
def test_malformed_components(store: ConfigStore, component: str) -> None:
    with pytest.raises(InvalidKeyPath):
        store.get(component)


def test_oversized_value_is_refused(store: ConfigStore) -> None:
    with pytest.raises(UsageError, match="longer than"):
        store.set("fence", "extra/blob", "x" * 70_000)


def test_corrupt_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    host_file = tmp_path / "config.yml"
    host_file.write_text("fence: [unclosed\n")
    store = ConfigStore(host_file=host_file)
    with pytest.raises(ConfigFileCorrupt):
        store.get("fence", "docker/image")
    with pytest.raises(ConfigFileCorrupt):
        store.set("fence", "docker/image", "a/b")
    assert host_file.read_text() == "fence: [unclosed\n"


def test_write_leaves_no_temp_files(store: ConfigStore, tmp_path: Path) -> None:
    for n in range(5):
        store.set("fence", f"extra/k{n}", str(n))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yml", "config.yml.lock"]
