"""The input rules (fence.rules): each refuses its bad values in one line, and the CLI imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fence.config.schema import key_spec
from fence.config.types import BadValue
from fence.errors import InvalidName, UsageError
from fence.rules import (APP_MEMORY_MIB, GitSpec, check_app_name, check_dns_name, check_env, check_env_name,
                         env_from_pairs, looks_like_git_url, parse_git_spec, parse_memory, size_mib)


@pytest.mark.parametrize("name", ["", "Shop", "a_b", "-a", "a-", "a;rm -rf", "../x", "x" * 64, "caf\u00e9", None, 7])
def test_bad_app_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidName) as caught:
        check_app_name(name)
    assert "app name" in caught.value.message and "\n" not in caught.value.message


def test_good_app_names_pass_and_what_names_the_place() -> None:
    assert check_app_name("a") == "a" and check_app_name("shop-2") == "shop-2" and check_app_name("x" * 63)
    with pytest.raises(InvalidName, match=r"^stackato.yml line 1, column 7: app name 'A' is not allowed"):
        check_app_name("A", what="stackato.yml line 1, column 7: app name")


def test_a_huge_bad_name_is_cut_in_the_message() -> None:
    with pytest.raises(InvalidName) as caught:
        check_app_name("X" * 1_000_000)
    assert len(caught.value.message) < 200


@pytest.mark.parametrize("host", ["", "Shop.example.com", "a..b", ".a", "a.", "a_b.com", "a b", "a/b", "a:80",
                                  "-a.com", ("a" * 60 + ".") * 5, None])
def test_bad_dns_names_are_refused(host: object) -> None:
    with pytest.raises(InvalidName, match="host name"):
        check_dns_name(host)


def test_good_dns_names_pass() -> None:
    assert check_dns_name("localhost") == "localhost"
    assert check_dns_name("a.b-c.example.com", what="router domain") == "a.b-c.example.com"
    with pytest.raises(InvalidName, match="router domain"):
        check_dns_name("A", what="router domain")


@pytest.mark.parametrize("name", ["", "1X", "A-B", "A B", "X=Y", "A" * 256, "\u00e9", None])
def test_bad_env_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidName, match="env variable"):
        check_env_name(name)


def test_env_values_may_not_hold_nul_or_exceed_64_kib() -> None:
    assert check_env({"A": "", "_B1": "x y", "C": "v" * 64 * 1024}) == {"A": "", "_B1": "x y", "C": "v" * 64 * 1024}
    for value in ("a\0b", "v" * (64 * 1024 + 1)):
        with pytest.raises(InvalidName, match="value of env variable 'A'"):
            check_env({"A": value})


def test_env_pairs_are_checked_and_later_ones_win() -> None:
    assert env_from_pairs(["A=1", "B=x=y", "A=2", "E="]) == {"A": "2", "B": "x=y", "E": ""}
    with pytest.raises(InvalidName, match="write it as NAME=VALUE"):
        env_from_pairs(["NOVALUE"])
    with pytest.raises(InvalidName, match="env variable '9X'"):
        env_from_pairs(["9X=1"])


@pytest.mark.parametrize(("text", "mib"), [("16", 16), ("256M", 256), ("256m", 256), ("1G", 1024), ("1.5G", 1536),
                                           ("32768K", 32), (" 512 MB ", 512), ("1T", 1024 * 1024)])
def test_memory_sizes(text: str, mib: int) -> None:
    assert parse_memory(text) == mib


@pytest.mark.parametrize("text", ["", "lots", "0", "15", "1.5", "1.0001G", "2T", "-1G", "1 G B", "1e3", "0x10"])
def test_bad_memory_sizes_are_one_line(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_memory(text)
    assert caught.value.message.startswith(f"memory {text!r} is not a size like 256M or 1G (a memory size in MiB")


def test_one_memory_grammar_serves_the_config_and_the_rules() -> None:
    assert size_mib("1.5G") == 1536 and size_mib("2048K") == 2
    with pytest.raises(ValueError):
        size_mib("1.5")
    container_memory = key_spec("fence", "container/memory").type
    assert (container_memory.minimum_mib, container_memory.maximum_mib) == APP_MEMORY_MIB
    assert container_memory.parse("1.5G") == parse_memory("1.5G")
    with pytest.raises(BadValue):
        container_memory.parse("15")


def test_git_specs() -> None:
    assert parse_git_spec("https://example.com/r.git#v1.2", what="source") == \
        GitSpec(url="https://example.com/r.git", ref="v1.2")
    assert parse_git_spec("file:///srv/r", what="source").ref is None
    assert GitSpec(url="https://user:secret@host/r", ref="main").display() == "https://host/r#main"
    assert looks_like_git_url("ssh://h/r") and not looks_like_git_url("./folder") and not looks_like_git_url("ext::sh")


@pytest.mark.parametrize(("text", "why"), [
    ("ext::sh -c id", "must start with"), ("https://h/r x", "spaces or control"),
    ("https://h/r\n", "spaces or control"),
    ("https://h/r#", "must be a branch"), ("https://h/r#-b", "must be a branch"), ("https://h/r#a..b", "not a valid"),
    ("https://h/r#x.lock", "not a valid"), ("https://h/" + "r" * 2048, "spaces or control"),
])
def test_bad_git_specs_are_refused(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as caught:
        parse_git_spec(text, what="--buildpack")
    assert caught.value.message.startswith("--buildpack ")


def test_importing_the_cli_loads_neither_the_stager_nor_docker_git_or_httpx() -> None:
    heavy = ["fence.staging.stager", "fence.staging.sources", "fence.backend.docker", "fence.config",
             "docker", "git", "httpx", "yaml", "jinja2"]
    code = f"import sys, json, fence.cli; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == []
