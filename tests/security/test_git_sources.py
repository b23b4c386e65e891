"""Git and path sources against the real daemon (issue 13 item 7): no daemon identity, admin roots only, bounded, cancellable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests import git_kit
from tests.conftest import CliResult
from tests.git_kit import repo
from tests.integration.node_kit import Node, free_port
from tests.integration.staging_kit import write_app
from tests.security.probe_kit import ApiProbe

WEB = "web: python3 -m http.server $PORT\n"


def _web_app(label: str) -> dict[str, bytes]:
    return {"Procfile": WEB.encode(), "index.html": f"{label}\n".encode()}


@dataclass
class _PlantedNode(Node):
    """A node whose daemon runs with a HOME (and an ssh agent socket) the attacker prepared."""

    host_daemon_home: Path = Path("/nonexistent")

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "HOME": str(self.host_daemon_home),
                "SSH_AUTH_SOCK": str(self.host_daemon_home / "agent.sock")}


@pytest.fixture(scope="module")
def gitd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A ``git daemon`` on loopback serving the bare repositories put in its folder: (port, folder)."""
    host_base = tmp_path_factory.mktemp("gitd")
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={host_base}",
                             "--listen=127.0.0.1", f"--port={port}", str(host_base)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PATH": os.environ["PATH"], "HOME": str(host_base)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "git daemon did not start"
                time.sleep(0.1)
        yield port, host_base
    finally:
        os.killpg(proc.pid, 9)  # the daemon and the children it forked per connection
        proc.wait()


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a planted helper writes into if it ever runs."""
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str, gitd: tuple[int, Path],
         markers: Path) -> Iterator[_PlantedNode]:
    """A daemon whose HOME holds a hostile ~/.gitconfig (insteadOf, credential helper, sshCommand,
    a template with a post-checkout hook) and an ssh agent socket that notes every connection."""
    port, _ = gitd
    host_home = tmp_path_factory.mktemp("daemon-home")
    hooks = host_home / "template" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "post-checkout").write_text(f"#!/bin/sh\ntouch {markers}/hook\n")
    (hooks / "post-checkout").chmod(0o755)
    (host_home / ".gitconfig").write_text(
        f'[url "git://127.0.0.1:{port}/evil.git"]\n\tinsteadOf = git://127.0.0.1:{port}/good.git\n'
        f'[credential]\n\thelper = "!touch {markers}/credential; echo username=u; echo password=stolen"\n'
        f'[core]\n\tsshCommand = touch {markers}/ssh;\n'
        f'[init]\n\ttemplateDir = {host_home / "template"}\n')
    agent = socket.socket(socket.AF_UNIX)
    agent.bind(str(host_home / "agent.sock"))
    agent.listen(8)
    threading.Thread(target=_note_connections, args=(agent, markers / "agent"), daemon=True).start()
    planted = _PlantedNode(root=tmp_path_factory.mktemp("gitnode") / "home", host_daemon_home=host_home)
    try:
        planted.start()
        yield planted
    finally:
        planted.close()
        agent.close()


def _note_connections(listener: socket.socket, host_marker: Path) -> None:
    try:
        while True:
            conn, _ = listener.accept()
            host_marker.touch()
            conn.close()
    except OSError:
        return  # closed at teardown


@pytest.fixture
def probe(node: Node) -> Iterator[ApiProbe]:
    """The API answers every call beside the test, 99 % of them within 1 s."""
    with ApiProbe(node) as running:
        yield running
    running.check()


@pytest.fixture
def config(node: Node) -> Iterator[Callable[[str, str], None]]:
    """Sets a fence key for this test (``kato config set``); every key set is removed after."""
    changed: list[str] = []

    def set_key(key_path: str, value: str) -> None:
        result = node.cli("kato", "config", "set", "fence", key_path, value)
        assert result.exit_code == 0, result.stderr
        changed.append(key_path)
    yield set_key
    for key_path in changed:
        node.cli("kato", "config", "del", "fence", key_path)


def _one_line_error(result: CliResult, *needles: str) -> str:
    """The command failed with one line on stderr holding every needle."""
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _daemon_gits(node: Node) -> list[psutil.Process]:
    """The git processes the daemon runs now (its descendants)."""
    found = []
    for child in psutil.Process(node.proc.pid).children(recursive=True):  # type: ignore[union-attr]
        try:
            if child.name() == "git" or child.name().startswith("git-"):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _gone_within(procs: list[psutil.Process], seconds: float) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=seconds)
    return not alive


@pytest.fixture
def hanging_remote() -> Iterator[int]:
    """A loopback TCP listener that accepts and never answers; its port."""
    with git_kit.silent_listener() as port:
        yield port


def test_a_planted_gitconfig_of_the_daemon_is_never_used(node: _PlantedNode, gitd: tuple[int, Path],
                                                         markers: Path, tmp_path: Path, probe: ApiProbe) -> None:
    port, host_base = gitd
    repo(tmp_path / "good", _web_app("the good app"), bare_as=host_base / "good.git")
    repo(tmp_path / "evil", _web_app("the evil app"), bare_as=host_base / "evil.git")
    result = node.cli("fence", "push", f"git://127.0.0.1:{port}/good.git", "--name", "gitgood")
    assert result.exit_code == 0, result.stderr
    status, body = node.url_get("gitgood")
    assert (status, body.strip()) == (200, "the good app")
    # An ssh URL (the planted sshCommand, the agent) and an http one asking for a password (the
    # planted credential helper): both fail without running anything of the daemon's HOME.
    with git_kit.password_server() as asks:
        for url in (f"ssh://git@127.0.0.1:{free_port()}/x.git", f"http://127.0.0.1:{asks}/x.git"):
            _one_line_error(node.cli("fence", "push", url, "--name", "gitnone", timeout=120), "cannot clone")
    assert sorted(p.name for p in markers.iterdir()) == []
    assert node.cli("fence", "delete", "gitgood").exit_code == 0


def test_file_urls_stage_only_from_the_local_roots(node: Node, tmp_path: Path, probe: ApiProbe) -> None:
    host_repo = tmp_path / "localrepo"
    repo(host_repo, _web_app("the local repo"))
    refused = node.cli("fence", "push", f"file://{host_repo}", "--name", "gitlocal")
    _one_line_error(refused, "staging/local_roots")
    assert node.cli("fence", "app", "gitlocal").exit_code != 0
    added = node.cli("kato", "config", "push", "fence", "staging/local_roots", str(tmp_path))
    assert added.exit_code == 0, added.stderr
    try:
        staged = node.cli("fence", "push", f"file://{host_repo}", "--name", "gitlocal")
        assert staged.exit_code == 0, staged.stderr
        status, body = node.url_get("gitlocal")
        assert (status, body.strip()) == (200, "the local repo")
    finally:
        node.cli("kato", "config", "pop", "fence", "staging/local_roots", str(tmp_path))
        node.cli("fence", "delete", "gitlocal")


@pytest.mark.parametrize("how", ["manifest", "flag"])
def test_a_buildpack_path_outside_the_roots_is_refused(node: Node, tmp_path: Path, probe: ApiProbe,
                                                       how: str) -> None:
    # Outside the pytest session's folder, the one buildpack root the test node has.
    with tempfile.TemporaryDirectory(prefix="fence-outside-bp-") as outside:
        host_bp = Path(outside)
        (host_bp / "bin").mkdir()
        for hook in ("detect", "compile", "release"):
            (host_bp / "bin" / hook).write_text("#!/bin/sh\nexit 0\n")
            (host_bp / "bin" / hook).chmod(0o755)
        files = {"Procfile": WEB, "index.html": "x\n"}
        extra: tuple[str, ...] = ()
        if how == "manifest":
            files["stackato.yml"] = f"name: bpout\nbuildpack: {host_bp}\n"
        else:
            extra = ("--buildpack", str(host_bp))
        source = write_app(tmp_path / "app", files)
        result = node.cli("fence", "push", str(source), "--name", "bpout", *extra)
        _one_line_error(result, "staging/buildpack_roots")
    assert node.cli("fence", "app", "bpout").exit_code != 0


def test_a_hanging_clone_is_killed_at_the_git_timeout(node: Node, hanging_remote: int, config: Callable[[str, str], None],
                                                      probe: ApiProbe) -> None:
    config("staging/git_timeout", "3")
    result = node.cli("fence", "push", f"git://127.0.0.1:{hanging_remote}/x.git", "--name", "githang",
                      timeout=180)  # generous: the machine is shared; the bound under test is 3 s
    _one_line_error(result, "staging/git_timeout")
    assert _daemon_gits(node) == []


def test_a_hanging_clone_is_killed_when_the_client_leaves(node: Node, hanging_remote: int, probe: ApiProbe) -> None:
    push = subprocess.Popen([sys.executable, "-m", "fence", "push", f"git://127.0.0.1:{hanging_remote}/x.git",
                             "--name", "githang"], env=node.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (clones := _daemon_gits(node)):
            assert push.poll() is None, "the push ended before its clone started"
            assert time.monotonic() < deadline, "no git clone under the daemon within 60 s"
            time.sleep(0.1)
        time.sleep(1)  # it hangs on the silent remote, not on anything of ours
        assert not _gone_within(clones, 0)
    finally:
        push.kill()
        push.wait()
    assert _gone_within(clones, 15), [p.cmdline() for p in clones if p.is_running()]
    assert _daemon_gits(node) == []


def test_a_clone_past_max_git_is_stopped_and_leaves_nothing(node: Node, gitd: tuple[int, Path], config: Callable[[str, str], None],
                                                            tmp_path: Path, probe: ApiProbe) -> None:
    port, host_base = gitd
    repo(tmp_path / "big", {**_web_app("big"), "blob.bin": os.urandom(5 * 1024 * 1024)},
          bare_as=host_base / "big.git")
    config("staging/max_git", "1")
    result = node.cli("fence", "push", f"git://127.0.0.1:{port}/big.git", "--name", "gitbig", timeout=300)
    _one_line_error(result, "staging/max_git")
    host_work = node.home.host_work
    assert not host_work.exists() or list(host_work.iterdir()) == []
    assert node.cli("fence", "app", "gitbig").exit_code != 0
