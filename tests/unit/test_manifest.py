"""stackato.yml and CF manifest.yml parsing: every key, and a one-line error for each bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fence.errors import FenceError, InvalidName, ManifestInvalid
from fence.models import Hooks, Manifest
from fence.staging.manifest import parse_manifest, read_app_manifest


def _refused(text: bytes, cls: type[FenceError] = ManifestInvalid, *, source: str = "stackato.yml") -> str:
    with pytest.raises(cls) as caught:
        parse_manifest(text, source_name=source)
    message = caught.value.message
    assert "\n" not in message and "\r" not in message
    assert message.startswith(source)
    return message


def test_stackato_yml_every_key() -> None:
    text = b"""
name: shop
mem: 1G
instances: 3
timeout: 90
buildpack: https://example.com/bp.git#v1
env:
  VERSION: 1.10
  DEBUG: true
  EMPTY:
  _X1: "a b"
processes:
  web: gunicorn app:app
  worker: python worker.py
ignores: ["*.log", "tmp/"]
hooks:
  pre-staging: echo one
  post-staging:
    - echo two
    - -may-fail
  pre-running: [echo three]
urls: [Shop.Example.com, shop2.example.com]
url: shop.example.com
"""
    manifest = parse_manifest(text, source_name="stackato.yml")
    assert manifest == Manifest(
        name="shop", mem_mib=1024, instances=3, timeout=90,
        buildpacks=("https://example.com/bp.git#v1",),
        env={"VERSION": "1.10", "DEBUG": "true", "EMPTY": "", "_X1": "a b"},
        processes={"web": "gunicorn app:app", "worker": "python worker.py"},
        ignores=("*.log", "tmp/"),
        hooks=Hooks(pre_staging=("echo one",), post_staging=("echo two", "-may-fail"),
                    pre_running=("echo three",)),
        urls=("shop.example.com", "shop2.example.com"), source_name="stackato.yml", warnings=())


@pytest.mark.parametrize(("raw", "mib"), [("256", 256), ("256M", 256), ("'512MB'", 512), ("1G", 1024),
                                          ("1.5G", 1536), ("2g", 2048)])
def test_memory_sizes(raw: str, mib: int) -> None:
    assert parse_manifest(f"mem: {raw}".encode(), source_name="stackato.yml").mem_mib == mib


def test_buildpacks_list_and_command_shorthand() -> None:
    manifest = parse_manifest(b"buildpacks: [python, nodejs]\ncommand: node server.js\n",
                              source_name="stackato.yml")
    assert manifest.buildpacks == ("python", "nodejs") and manifest.processes == {"web": "node server.js"}


def test_unknown_keys_are_warnings_not_errors() -> None:
    manifest = parse_manifest(b"name: a\nframework: python\nrequirements: {db: mysql}\nhooks: {pre-push: x}\n",
                              source_name="stackato.yml")
    assert manifest.name == "a"
    assert any("'framework'" in w for w in manifest.warnings)
    assert any("'requirements'" in w for w in manifest.warnings)  # (services: is known since issue 16)
    assert any("pre-push" in w for w in manifest.warnings)
    assert all("\n" not in w for w in manifest.warnings)


def test_cloud_foundry_manifest_maps_to_the_same_fields() -> None:
    text = b"""---
applications:
- name: cfapp
  memory: 512M
  instances: 2
  buildpacks: [python]
  command: python app.py
  timeout: 120
  env: {MODE: prod}
  routes:
  - route: cfapp.apps.example.com
  disk_quota: 1G
"""
    manifest = parse_manifest(text, source_name="manifest.yml")
    assert (manifest.name, manifest.mem_mib, manifest.instances, manifest.buildpacks) == \
        ("cfapp", 512, 2, ("python",))
    assert manifest.processes == {"web": "python app.py"} and manifest.timeout == 120
    assert manifest.env == {"MODE": "prod"} and manifest.urls == ("cfapp.apps.example.com",)
    assert manifest.source_name == "manifest.yml"
    assert any("disk_quota" in w for w in manifest.warnings)


def test_empty_manifest_is_an_empty_manifest() -> None:
    assert parse_manifest(b"", source_name="stackato.yml") == Manifest(source_name="stackato.yml")
    assert parse_manifest(b"# only a comment\n", source_name="stackato.yml").name is None


def test_syntax_error_reports_line_and_column() -> None:
    message = _refused(b"name: app\nenv:\n  A: [1, 2\n  B: x\n")
    assert " line " in message and ", column " in message and "YAML syntax error" in message
    message = _refused(b"name: app\n  bad: indent\n")
    assert message.startswith("stackato.yml line 2, column ")


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    started = time.monotonic()
    message = _refused("\n".join(lines).encode())
    assert time.monotonic() - started < 1.0
    assert "anchors" in message and "line 1" in message


def test_alias_without_anchor_is_refused() -> None:
    assert "aliases" in _refused(b"name: *x\n")


def test_manifest_over_one_mib_is_refused() -> None:
    message = _refused(b"# " + b"x" * (1024 * 1024) + b"\nname: a\n")
    assert "larger than 1 MiB" in message


def test_two_applications_are_refused() -> None:
    message = _refused(b"applications:\n- name: a\n- name: b\n", source="manifest.yml")
    assert "applications" in message and "2 apps" in message


def test_applications_must_be_a_list() -> None:
    assert "applications must be a list" in _refused(b"applications: {a: {name: x}}\n")


def test_bad_app_name_is_invalid_name() -> None:
    message = _refused(b"name: ../../etc\n", InvalidName)
    assert "app name" in message and "'../../etc'" in message and "line 1" in message


@pytest.mark.parametrize("name", ["Shop", "a_b", "-a", "a;rm -rf", "x" * 64, "caf\u00e9"])
def test_app_names_outside_the_pattern(name: str) -> None:
    _refused(f"name: '{name}'\n".encode(), InvalidName)


@pytest.mark.parametrize("env", [b"1X: y", b"A-B: y", b"'A B': y", b"'X=Y': z", b"'" + b"A" * 256 + b"': y"])
def test_bad_env_name_is_refused(env: bytes) -> None:
    message = _refused(b"env:\n  " + env + b"\n", InvalidName)
    assert "env variable name" in message and "line 2" in message


def test_env_values_must_be_strings_without_nul() -> None:
    assert "env.A must be a string" in _refused(b"env:\n  A: [1]\n")
    assert "env.A" in _refused(b'env:\n  A: "x\\0y"\n')
    assert "env.A" in _refused(b"env:\n  A: '" + b"v" * (64 * 1024 + 1) + b"'\n")


@pytest.mark.parametrize("host", ["http://x.example.com", "x.example.com:8080", "x.example.com/path",
                                  "a_b.example.com", "-a.example.com", "a..b", "*.example.com",
                                  "a b.com", "$(id).com", ""])
def test_bad_url_host_is_refused(host: str) -> None:
    message = _refused(f"urls: ['{host}']\n".encode())
    assert "urls[0]" in message


def test_bad_route_in_cf_manifest_is_refused() -> None:
    message = _refused(b"applications:\n- name: a\n  routes:\n  - route: a.example.com/x\n",
                       source="manifest.yml")
    assert "applications[0].routes[0].route" in message and "host name" in message


@pytest.mark.parametrize(("text", "key"), [
    (b"instances: [1]", "instances"), (b"instances: 0", "instances"), (b"instances: 101", "instances"),
    (b"instances: two", "instances"), (b"timeout: 181", "timeout"), (b"timeout: 1.5", "timeout"),
    (b"mem: 12Q", "mem"), (b"mem: 0", "mem"), (b"mem: {a: 1}", "mem"), (b"env: [A]", "env"),
    (b"name: [a]", "name"), (b"processes: web", "processes"), (b"processes: {Web: x}", "processes"),
    (b"processes: {web: ''}", "processes.web"), (b"hooks: [x]", "hooks"),
    (b"hooks: {pre-staging: {a: b}}", "hooks.pre-staging"), (b"ignores: {a: b}", "ignores"),
    (b"buildpack: a\nbuildpacks: [b]", "buildpack"), (b"buildpack: 'a b'", "buildpack"),
    (b"command: x\nprocesses: {web: y}", "processes"),
])
def test_wrong_type_or_value_names_the_key(text: bytes, key: str) -> None:
    message = _refused(text)
    assert key in message and " line " in message


def test_duplicate_keys_tags_nesting_and_encoding_are_refused() -> None:
    assert "appears twice" in _refused(b"name: a\nname: b\n")
    assert "tag" in _refused(b"name: !!python/object/apply:os.system ['id']\n")
    assert "tag" in _refused(b"name: !custom x\n")
    assert "nested deeper" in _refused(b"a: " + b"[" * 100 + b"]" * 100 + b"\n")
    assert "not UTF-8" in _refused(b"name: caf\xe9\n")
    assert "mapping" in _refused(b"- a\n- b\n")
    assert "single document" in _refused(b"name: a\n---\nname: b\n")


def test_read_app_manifest_prefers_stackato_yml_and_never_follows_symlinks(tmp_path: Path) -> None:
    assert read_app_manifest(tmp_path) == Manifest()
    (tmp_path / "manifest.yml").write_text("applications:\n- name: cf\n")
    assert read_app_manifest(tmp_path).name == "cf"
    (tmp_path / "stackato.yml").write_text("name: st\n")
    assert read_app_manifest(tmp_path).name == "st"
    (tmp_path / "stackato.yml").unlink()
    (tmp_path / "stackato.yml").symlink_to("/etc/passwd")
    with pytest.raises(ManifestInvalid) as caught:
        read_app_manifest(tmp_path)
    assert "symlinks are not followed" in caught.value.message
