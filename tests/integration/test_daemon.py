"""`fence serve` for real: socket mode, `kato status` through the API, TERM, and a stopped daemon."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from fence.home import NodeHome
from fence.router.nginx import NginxRouter
from fence.wiring import config_store
from tests.conftest import run_cli
from tests.integration.node_kit import free_port


def start_daemon(home: NodeHome) -> subprocess.Popen[bytes]:
    """``fence serve`` for this home, its router on a free port (not the default 8080, which a
    node of the machine may use); end it with ``end_daemon``."""
    config_store(home).set("fence", "router/port", str(free_port()))
    # Tests name buildpack folders they wrote in this pytest session's temporary folder.
    config_store(home).set("fence", "staging/buildpack_roots", str(home.host_root.parents[1]))
    log = open(home.host_root / "daemon.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "fence", "serve"], stdout=log, stderr=log,
                            env=dict(os.environ, FENCE_HOME=str(home.host_root)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if home.host_socket.exists() and run_cli("kato", "status", "--json").exit_code == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("daemon did not come up: " + (home.host_root / "daemon.log").read_text()[-2000:])


def end_daemon(proc: subprocess.Popen[bytes], home: NodeHome) -> None:
    """Stop a ``start_daemon`` daemon (TERM, then KILL) and the nginx it started (which
    outlives the daemon by design)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    NginxRouter(host_dir=home.host_root / "router").stop()


@pytest.fixture
def daemon(home: NodeHome, engine: str):  # noqa: ANN201
    proc = start_daemon(home)
    yield proc
    end_daemon(proc, home)


def test_status_reports_engine_userns_and_stack(daemon, home: NodeHome, engine: str) -> None:  # noqa: ANN001
    mode = stat.S_IMODE(home.host_socket.stat().st_mode)
    assert mode == 0o660
    result = run_cli("kato", "status", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    engine_version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                    capture_output=True, text=True).stdout.strip()
    assert info["engine"]["version"] == engine_version
    security = subprocess.run(["docker", "info", "--format", "{{json .SecurityOptions}}"],
                              capture_output=True, text=True).stdout
    assert info["engine"]["userns_remap"] is ("name=userns" in security)
    assert info["stack"]["configured"] == "fence/stack:bookworm"
    assert info["stack"]["present"] is (engine == "fence/stack:bookworm")
    assert info["daemon_pid"] == daemon.pid
    assert info["node_id"] == home.node_id
    text = run_cli("kato", "status")
    assert text.exit_code == 0 and "userns remap:" in text.stdout and "stack:" in text.stdout


def test_config_change_is_seen_without_restart(daemon, home: NodeHome) -> None:  # noqa: ANN001
    assert run_cli("kato", "config", "set", "fence", "docker/image", "nowhere/stack:9").exit_code == 0
    info = json.loads(run_cli("kato", "status", "--json").stdout)
    assert info["stack"]["configured"] == "nowhere/stack:9" and info["stack"]["present"] is False
    assert any("nowhere/stack:9 is not on this node" in w for w in info["warnings"])
    listed = json.loads(run_cli("kato", "image", "list", "--json").stdout)
    assert {"ref": "nowhere/stack:9", "image_id": None}.items() <= listed[0].items()


def test_term_stops_gracefully_and_removes_the_socket(daemon, home: NodeHome) -> None:  # noqa: ANN001
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    assert not home.host_socket.exists()
    logs = [json.loads(line) for line in (home.host_root / "daemon.log").read_text().splitlines()
            if line.startswith("{")]
    assert any(entry["message"] == "fence daemon stopped" for entry in logs)


def test_second_daemon_on_the_same_socket_is_refused(daemon, home: NodeHome) -> None:  # noqa: ANN001
    result = run_cli("fence", "serve", timeout=30)
    assert result.exit_code == 4
    assert "another fence daemon already answers" in result.stderr


def test_status_with_daemon_stopped_is_one_line_and_non_zero(home: NodeHome) -> None:
    result = run_cli("kato", "status")
    assert result.exit_code == 5
    assert result.stderr == (f"error: the fence daemon is not running (no answer on "
                             f"{home.host_socket}); start it with `fence serve`\n")
    assert result.stdout == ""


def test_stale_socket_is_replaced(home: NodeHome, engine: str) -> None:
    import socket
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(home.host_socket))
    stale.close()  # the file stays, nothing listens: a daemon killed with -9 leaves this
    proc = start_daemon(home)
    try:
        assert run_cli("kato", "status", "--json").exit_code == 0
    finally:
        end_daemon(proc, home)
