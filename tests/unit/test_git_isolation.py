"""Clones never use the daemon's identity, stay under their bounds, and local origins come only from admin roots (issue 13 items 7 and 9)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

from fence.errors import BuildpackInvalid, StagingFailed, UsageError
from fence.models import SourceLimits
from fence.rules import GitSpec
from fence.staging.buildpacks import BuildpackResolver, builtin_dir, parse_buildpack
from fence.staging.gitfetch import FetchPolicy, fetch
from fence.staging.sources import prepare_source
from tests import git_kit
from tests.git_kit import git, repo


class Settings:
    def __init__(self, **keys: object) -> None:
        self.keys = {"staging/buildpack_roots": [], "staging/local_roots": [], "staging/git_timeout": 300,
                     "staging/max_git": 0, "staging/max_upload": 1024, **keys}

    def fence(self, key_path: str) -> object:
        return self.keys[key_path]


@pytest.fixture
def daemon_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The HOME the daemon runs with, holding a hostile ~/.gitconfig."""
    host_home = tmp_path / "root-home"
    host_home.mkdir()
    monkeypatch.setenv("HOME", str(host_home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    return host_home


def test_a_clone_does_not_see_the_daemons_gitconfig(tmp_path: Path, daemon_home: Path) -> None:
    good = repo(tmp_path / "good", {"a.txt": b"good\n"})
    evil = repo(tmp_path / "evil", {"a.txt": b"evil\n"})
    marker = tmp_path / "helper-ran"
    (daemon_home / ".gitconfig").write_text(
        f'[url "file://{tmp_path / "evil"}"]\n\tinsteadOf = file://{tmp_path / "good"}\n'
        f'[credential]\n\thelper = "!touch {marker}; echo password=stolen"\n'
        f'[core]\n\tsshCommand = touch {marker}\n')
    policy = FetchPolicy(local_roots=(tmp_path,))
    commit = fetch(GitSpec(url=f"file://{tmp_path / 'good'}"), tmp_path / "out", what="source", policy=policy)
    assert commit == good != evil
    assert (tmp_path / "out" / "a.txt").read_text() == "good\n"
    assert not marker.exists()


@pytest.fixture
def password_server() -> Iterator[int]:
    with git_kit.password_server() as port:
        yield port


def test_no_credential_helper_of_the_daemon_is_asked(tmp_path: Path, daemon_home: Path,
                                                     password_server: int) -> None:
    marker = tmp_path / "helper-ran"
    (daemon_home / ".gitconfig").write_text(f'[credential]\n\thelper = "!touch {marker}; echo password=x"\n')
    with pytest.raises(UsageError) as refused:
        fetch(GitSpec(url=f"http://127.0.0.1:{password_server}/x.git"), tmp_path / "out", what="source",
              policy=FetchPolicy())
    assert "cannot clone" in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_file_urls_outside_the_local_roots_are_refused(tmp_path: Path) -> None:
    repo(tmp_path / "etc", {"shadow": b"root:secret\n"})
    with pytest.raises(UsageError, match=r"staging/local_roots"):
        fetch(GitSpec(url=f"file://{tmp_path / 'etc'}"), tmp_path / "out", what="source",
              policy=FetchPolicy(local_roots=(tmp_path / "allowed",)))
    assert not (tmp_path / "out").exists()
    # A symlink into the root does not widen it: the resolved path decides.
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "sneaky").symlink_to(tmp_path / "etc")
    with pytest.raises(UsageError, match=r"staging/local_roots"):
        fetch(GitSpec(url=f"file://{tmp_path / 'allowed' / 'sneaky'}"), tmp_path / "out", what="source",
              policy=FetchPolicy(local_roots=(tmp_path / "allowed",)))


def test_file_urls_and_local_paths_inside_the_local_roots_are_accepted(tmp_path: Path) -> None:
    commit = repo(tmp_path / "srv" / "app", {"Procfile": b"web: serve\n"})
    policy = FetchPolicy(local_roots=(tmp_path / "srv",))
    prepared = prepare_source(f"file://{tmp_path / 'srv' / 'app'}", host_workdir=tmp_path / "w", policy=policy,
                              limits=SourceLimits(), uid=1000, gid=1000)
    assert prepared.commit == commit
    folder = prepare_source(str(tmp_path / "srv" / "app"), host_workdir=tmp_path / "w2", policy=policy,
                            limits=SourceLimits(), uid=1000, gid=1000)
    assert folder.procfile == {"web": "serve"}


@pytest.mark.parametrize("origin", ["{tmp}/secret", "{tmp}/secret#main", "file://{tmp}/secret"])
def test_local_sources_outside_the_roots_are_refused_in_one_line(tmp_path: Path, origin: str) -> None:
    repo(tmp_path / "secret", {"key": b"k\n"})
    with pytest.raises(UsageError) as refused:
        prepare_source(origin.format(tmp=tmp_path), host_workdir=tmp_path / "w", policy=FetchPolicy(),
                       limits=SourceLimits(), uid=1000, gid=1000)
    assert "staging/local_roots" in str(refused.value) and "\n" not in str(refused.value)


def test_a_clone_past_max_git_is_stopped_and_leaves_nothing(tmp_path: Path) -> None:
    repo(tmp_path / "big", {"blob.bin": os.urandom(6 * 1024 * 1024)})
    with pytest.raises(UsageError) as refused:
        fetch(GitSpec(url=f"file://{tmp_path / 'big'}"), tmp_path / "clone" / "repo", what="source",
              policy=FetchPolicy(local_roots=(tmp_path,), max_bytes=1024 * 1024))
    assert "staging/max_git" in str(refused.value) and "\n" not in str(refused.value)
    assert list((tmp_path / "clone").iterdir()) == []  # no checkout, no throwaway HOME


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback TCP listener that accepts connections and never answers."""
    with git_kit.silent_listener() as port:
        yield port


def test_a_hanging_clone_is_killed_at_the_timeout(tmp_path: Path, silent_listener: int) -> None:
    with pytest.raises(UsageError) as refused:
        fetch(GitSpec(url=f"http://127.0.0.1:{silent_listener}/x.git"), tmp_path / "out", what="source",
              policy=FetchPolicy(timeout=2))
    assert "staging/git_timeout" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_hanging_clone_is_killed_when_the_client_leaves(tmp_path: Path, silent_listener: int) -> None:
    gone = threading.Event()
    threading.Timer(1.0, gone.set).start()
    with pytest.raises(StagingFailed, match="cancelled"):
        fetch(GitSpec(url=f"http://127.0.0.1:{silent_listener}/x.git"), tmp_path / "out", what="source",
              policy=FetchPolicy(timeout=3600, cancelled=gone.is_set))
    assert not (tmp_path / "out").exists()


def _buildpack(host_dir: Path) -> Path:
    (host_dir / "bin").mkdir(parents=True)
    for script in ("detect", "compile"):
        (host_dir / "bin" / script).write_text("#!/bin/sh\nexit 0\n")
        (host_dir / "bin" / script).chmod(0o755)
    return host_dir


def test_a_buildpack_path_outside_the_roots_is_refused(tmp_path: Path) -> None:
    _buildpack(tmp_path / "root-only" / "bp")
    _buildpack(tmp_path / "admin" / "bp")
    resolver = BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "cache",
                                 config=Settings(**{"staging/buildpack_roots": [str(tmp_path / "admin")]}))
    with pytest.raises(BuildpackInvalid) as refused:
        resolver.resolve(parse_buildpack(str(tmp_path / "root-only" / "bp")))
    assert "staging/buildpack_roots" in str(refused.value) and "\n" not in str(refused.value)
    assert resolver.resolve(parse_buildpack(str(tmp_path / "admin" / "bp"))).host_dir == tmp_path / "admin" / "bp"
    assert resolver.resolve(parse_buildpack("procfile")).name == "procfile"


def test_a_file_buildpack_outside_the_roots_is_refused(tmp_path: Path) -> None:
    host_repo = _buildpack(tmp_path / "bprepo")
    git(host_repo, "init", "-q")
    git(host_repo, "add", "-A")
    git(host_repo, "commit", "-qm", "bp")
    resolver = BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "cache", config=Settings())
    with pytest.raises(UsageError, match="staging/local_roots"):
        resolver.resolve(parse_buildpack(f"file://{host_repo}"))
    allowed = BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "cache",
                                config=Settings(**{"staging/buildpack_roots": [str(tmp_path)]}))
    assert len(allowed.resolve(parse_buildpack(f"file://{host_repo}")).version) == 40


def test_a_chain_of_dotdot_links_in_a_buildpack_is_refused(tmp_path: Path) -> None:
    host_bp = _buildpack(tmp_path / "admin" / "bp")
    (host_bp / "sub").mkdir()
    (host_bp / "sub" / "up").symlink_to("..")       # the buildpack itself: fine alone
    (host_bp / "sub" / "m").symlink_to("up/..")     # lexically sub/, really the buildpack's parent
    resolver = BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "cache",
                                 config=Settings(**{"staging/buildpack_roots": [str(tmp_path / "admin")]}))
    with pytest.raises(BuildpackInvalid) as refused:
        resolver.resolve(parse_buildpack(str(host_bp)))
    assert "sub/m" in str(refused.value) and "outside the buildpack" in str(refused.value)


@pytest.mark.parametrize(("key", "value"), [
    ("staging/git_timeout", "0"), ("staging/git_timeout", "soon"), ("staging/max_git", "-1"),
    ("staging/max_git", "70000"), ("staging/local_roots", "relative/path"), ("staging/local_roots", "/srv/../etc"),
    ("staging/buildpack_roots", "bp"), ("staging/buildpack_roots", "/a/.."),
])
def test_bad_values_of_the_git_and_root_keys_are_refused(home, key: str, value: str) -> None:  # noqa: ANN001
    from fence.errors import InvalidConfigValue
    from fence.wiring import config_store

    with pytest.raises(InvalidConfigValue) as refused:
        config_store(home).set("fence", key, value)
    assert key in str(refused.value) and "\n" not in str(refused.value)
