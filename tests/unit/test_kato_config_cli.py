"""`kato config` as a real process: output formats, one-line errors, stdin values, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import yaml

from fence.home import NodeHome


def test_set_then_get_prints_the_value(kato) -> None:  # noqa: ANN001
    result = kato("config", "set", "fence", "docker/image", "some/image:tag")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "some/image:tag"
    got = kato("config", "get", "fence", "docker/image")
    assert got.exit_code == 0 and got.stdout == "some/image:tag\n"


def test_get_json_yaml_and_flat(kato) -> None:  # noqa: ANN001
    kato("config", "set", "fence", "docker/image", "some/image:tag")
    as_json = json.loads(kato("config", "get", "fence", "--json").stdout)
    assert as_json["docker"]["image"] == "some/image:tag"
    as_yaml = yaml.safe_load(kato("config", "get", "fence").stdout)
    assert as_yaml["staging"]["timeout"] == 900
    flat = kato("config", "get", "fence", "--flat").stdout.splitlines()
    assert "fence/docker/image some/image:tag" in flat
    assert "fence/staging/network none" in flat
    assert "fence/docker/images []" in flat
    everything = kato("config", "get", "--flat").stdout.splitlines()
    assert "fence/router/port 8080" in everything
    one = kato("config", "get", "fence", "staging/timeout", "--flat").stdout
    assert one == "fence/staging/timeout 900\n"


def test_default_stack(kato) -> None:  # noqa: ANN001
    assert kato("config", "get", "fence", "docker/image").stdout == "fence/stack:bookworm\n"


def test_bad_value_one_line_error_and_old_value_stays(kato) -> None:  # noqa: ANN001
    kato("config", "set", "fence", "staging/timeout", "300")
    result = kato("config", "set", "fence", "staging/timeout", "-5")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: fence staging/timeout: '-5' is not allowed")
    assert "Traceback" not in result.stderr
    assert kato("config", "get", "fence", "staging/timeout").stdout == "300\n"


def test_debug_shows_the_traceback(kato) -> None:  # noqa: ANN001
    result = kato("--debug", "config", "set", "fence", "staging/timeout", "-5")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "error: fence staging/timeout" in result.stderr


def test_unknown_key_warns_assumed_type(kato) -> None:  # noqa: ANN001
    result = kato("config", "set", "myapp", "greeting", "hello")
    assert result.exit_code == 0
    assert "warning: Assumed type string" in result.stderr
    struct = kato("config", "set", "myapp", "limits", '{"a": 1}')
    assert "warning: Assumed type struct" in struct.stderr
    change = kato("config", "set", "myapp", "greeting", "[1]")
    assert change.exit_code == 4 and "--force" in change.stderr
    forced = kato("config", "set", "myapp", "greeting", "[1]", "--force")
    assert forced.exit_code == 0


def test_value_from_stdin(kato) -> None:  # noqa: ANN001
    result = kato("config", "set", "fence", "router/domain", stdin="apps.example.com\n")
    assert result.exit_code == 0, result.stderr
    assert kato("config", "get", "fence", "router/domain").stdout == "apps.example.com\n"
    as_json = kato("config", "set", "fence", "docker/images", "--json", stdin='["a/b:1", "c/d:2"]')
    assert as_json.exit_code == 0, as_json.stderr
    assert kato("config", "get", "fence", "docker/images", "--json").stdout.split() == \
        ["[", '"a/b:1",', '"c/d:2"', "]"]


def test_del_push_pop(kato) -> None:  # noqa: ANN001
    kato("config", "set", "fence", "health/timeout", "90")
    assert kato("config", "del", "fence", "health/timeout").stdout == "60\n"
    kato("config", "push", "fence", "docker/images", "old/stack:1")
    pushed = kato("config", "push", "fence", "docker/images", "old/stack:2")
    assert yaml.safe_load(pushed.stdout) == ["old/stack:1", "old/stack:2"]
    popped = kato("config", "pop", "fence", "docker/images", "old/stack:1")
    assert yaml.safe_load(popped.stdout) == ["old/stack:2"]
    missing = kato("config", "del", "fence", "no/such")
    assert missing.exit_code == 3 and missing.stderr == "error: fence no/such: no such key\n"


def test_setting_an_image_the_engine_lacks_warns(kato) -> None:  # noqa: ANN001
    result = kato("config", "set", "fence", "docker/image", "nowhere/missing:1")
    assert result.exit_code == 0
    assert result.stdout == "nowhere/missing:1\n"
    # Either the engine says the image is absent, or it cannot be asked: both are said.
    assert "warning: image nowhere/missing:1 is not on this node's Docker Engine" in result.stderr \
        or "warning: could not check that the image exists" in result.stderr


def test_fifty_concurrent_setters_lose_nothing(home: NodeHome) -> None:
    """50 `kato config set` processes on different keys; a reader never sees a torn file."""
    env = dict(os.environ, FENCE_HOME=str(home.host_root))
    kinds = [("fence", f"extra/k{n:02d}", f"value-{n}") for n in range(48)]
    kinds += [("fence", "staging/timeout", "123"), ("other", "flag", "on")]
    torn: list[str] = []
    stop = threading.Event()

    def read_constantly() -> None:
        while not stop.is_set():
            try:
                text = home.host_config.read_text()
            except FileNotFoundError:
                continue
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                torn.append(str(exc))
                continue
            if text and not isinstance(data, dict):
                torn.append(text[:80])

    reader = threading.Thread(target=read_constantly)
    reader.start()
    procs = [subprocess.Popen([sys.executable, "-m", "kato", "config", "set", comp, key, value],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for comp, key, value in kinds]
    codes = [proc.wait(timeout=120) for proc in procs]
    time.sleep(0.05)
    stop.set()
    reader.join()
    assert codes == [0] * 50
    assert torn == []
    stored = yaml.safe_load(home.host_config.read_text())
    for n in range(48):
        assert stored["fence"]["extra"][f"k{n:02d}"] == f"value-{n}"
    assert stored["fence"]["staging"]["timeout"] == 123
    assert stored["other"]["flag"] == "on"
    leftovers = [p.name for p in home.host_root.iterdir() if p.name.startswith(".config.")]
    assert leftovers == []
