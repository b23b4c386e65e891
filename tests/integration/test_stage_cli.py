"""`fence stage` and `fence droplets` through the daemon; a client that goes away cancels staging."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fence.home import NodeHome
from tests.conftest import run_cli
from tests.integration.staging_kit import EXAMPLES, staging_containers, write_app, write_buildpack
from tests.integration.test_daemon import end_daemon, start_daemon


@pytest.fixture
def daemon(home: NodeHome, engine: str):  # noqa: ANN201
    proc = start_daemon(home)
    yield proc
    end_daemon(proc, home)
    assert staging_containers(home.node_id) == []


def test_stage_prints_the_log_and_the_droplet(daemon, home: NodeHome) -> None:  # noqa: ANN001
    result = run_cli("fence", "stage", str(EXAMPLES / "procfile-hello"), timeout=300)
    assert result.exit_code == 0, result.stderr
    assert "-----> Detecting buildpack" in result.stdout
    droplet_id = result.stdout.strip().splitlines()[-1].removeprefix("droplet: ")
    listed = json.loads(run_cli("fence", "droplets", "procfile-hello", "--json").stdout)
    assert [d["id"] for d in listed] == [droplet_id]
    assert listed[0]["app"] == "procfile-hello"
    table = run_cli("fence", "droplets")
    assert droplet_id[:12] in table.stdout


def test_stage_errors_are_one_line(daemon, home: NodeHome, tmp_path: Path) -> None:  # noqa: ANN001
    app = write_app(tmp_path / "app", {"nothing": "x"})
    result = run_cli("fence", "stage", str(app), "--buildpack", "no-such-pack", timeout=120)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: buildpack 'no-such-pack'") and result.stderr.count("\n") == 1
    bad_env = run_cli("fence", "stage", str(app), "--env", "1BAD=x")
    assert bad_env.exit_code == 2 and "env variable '1BAD'" in bad_env.stderr
    bad_name = run_cli("fence", "stage", str(app), "--name", "Bad;Name")
    assert bad_name.exit_code == 2 and "app name 'Bad;Name'" in bad_name.stderr


def test_client_going_away_cancels_the_staging(daemon, home: NodeHome, tmp_path: Path) -> None:  # noqa: ANN001
    pack = write_buildpack(tmp_path / "slow", detect="exit 0\n", compile="echo compiling; sleep 600\n")
    app = write_app(tmp_path / "app", {"x": "y"})
    client = subprocess.Popen([sys.executable, "-m", "fence", "stage", str(app), "--name", "slow",
                               "--buildpack", str(pack)], stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    for line in client.stdout:
        if "compiling" in line:
            break
    assert staging_containers(home.node_id), "staging should be running"
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 30
    while staging_containers(home.node_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert staging_containers(home.node_id) == []


def test_a_folder_that_is_only_bin_is_staged_as_it_is(daemon, home: NodeHome, tmp_path: Path) -> None:  # noqa: ANN001
    """An inline-buildpack app (nothing but bin/detect, bin/compile, bin/release) pushed as a folder:
    the CLI packs it, and the daemon must not unwrap it as it would a downloaded archive of one
    folder (it did: the app arrived as detect, compile and release at its root)."""
    app = write_buildpack(tmp_path / "inline", detect="echo inline\n", compile="""
        test -x "$1/bin/compile" || { echo "bin/ was unwrapped: $(ls "$1")"; exit 1; }
        echo "inline bin/compile ran in $1"
        echo compiled > "$1/compiled.txt"
        """, release="""
        printf -- '---\\ndefault_process_types:\\n  web: sleep infinity\\n'
        """)
    result = run_cli("fence", "stage", str(app), "--name", "inline", "--buildpack", str(app), timeout=300)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "inline bin/compile ran in" in result.stdout
    assert "holds one folder" not in result.stdout
