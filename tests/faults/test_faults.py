"""Faults: kill -9 of the daemon mid-staging and mid-push, an engine restart, TERM-ignoring apps, 20 pushes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.node_kit import Node, started_node
from tests.integration.staging_kit import EXAMPLES, write_app, write_buildpack


@pytest.fixture
def node(tmp_path: Path, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path / "home")


def _droplets_whole(node: Node) -> int:
    count = 0
    for droplet in (node.root / "droplets").glob("*"):
        assert not droplet.name.startswith("."), f"partial droplet {droplet.name} left"
        assert hashlib.sha256(droplet.read_bytes()).hexdigest() == droplet.stem, f"{droplet.name} is corrupt"
        count += 1
    return count


def test_kill_9_mid_staging(node: Node, tmp_path: Path) -> None:
    pack = write_buildpack(tmp_path / "slow", detect="exit 0\n", compile="echo compiling; sleep 300\n")
    app = write_app(tmp_path / "app", {"x": "y"})
    client = subprocess.Popen([sys.executable, "-m", "fence", "stage", str(app), "--name", "victim",
                               "--buildpack", str(pack)], env=node.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert client.stdout is not None
    for line in client.stdout:
        if "compiling" in line:
            break
    assert node.containers("staging")
    node.kill_daemon()
    out, err = client.communicate(timeout=60)
    assert client.returncode != 0 and err.startswith("error: ") and err.count("\n") == 1, err
    node.start()
    deadline = time.monotonic() + 30
    while node.containers("staging") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node.containers("staging") == []
    assert _droplets_whole(node) == 0
    assert json.loads(node.cli("fence", "droplets", "--json").stdout) == []
    assert not any((node.root / "work").iterdir())


def test_kill_9_mid_push_of_20_concurrent_pushes_leaves_whole_droplets(node: Node) -> None:
    assert node.cli("kato", "config", "set", "fence", "staging/concurrency", "4").exit_code == 0
    clients = [subprocess.Popen([sys.executable, "-m", "fence", "push", str(EXAMPLES / "static-hello"),
                                 "--name", f"crowd{n}"], env=node.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for n in range(20)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((node.root / "droplets").glob("*.tgz"))) < 3:
        time.sleep(0.1)
    node.kill_daemon()
    for client in clients:
        client.wait(timeout=60)
    node.start()
    time.sleep(1)
    whole = _droplets_whole(node)
    assert whole >= 3
    recorded = json.loads(node.cli("fence", "droplets", "--json").stdout)
    for record in recorded:
        assert (node.root / "droplets" / f"{record['id']}.tgz").is_file()


def test_app_ignoring_term_is_killed_after_the_grace_period(node: Node, tmp_path: Path) -> None:
    stubborn = write_app(tmp_path / "stubborn", {
        "Procfile": "web: trap '' TERM; exec python3 -m http.server $PORT\n",
    })
    assert node.cli("fence", "push", str(stubborn), "--name", "stubborn").exit_code == 0
    [instance] = node.app("stubborn")["instance_list"]
    started = time.monotonic()
    assert node.cli("fence", "stop", "stubborn").exit_code == 0
    took = time.monotonic() - started
    state = json.loads(subprocess.run(["docker", "inspect", instance["container"]], capture_output=True,
                                      text=True).stdout or "[]")
    print(f"stop of a TERM-ignoring app took {took:.1f} s (2 s drain + 10 s grace)")
    assert 11.5 <= took <= 14.5, took  # drain 2 s, TERM ignored for the 10 s grace, KILL within 2 s
    assert state == []  # killed and removed


def test_twenty_concurrent_pushes_succeed_within_the_concurrency_bound(node: Node) -> None:
    assert node.cli("kato", "config", "set", "fence", "staging/concurrency", "2").exit_code == 0
    peak = {"staging": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak["staging"] = max(peak["staging"], len(node.containers("staging")))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    clients = {n: subprocess.Popen([sys.executable, "-m", "fence", "push", str(EXAMPLES / "static-hello"),
                                    "--name", f"many{n}"], env=node.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for n in range(20)}
    outputs = {n: client.communicate(timeout=900) for n, client in clients.items()}
    stop.set()
    watcher.join()
    for n, (out, err) in outputs.items():
        assert clients[n].returncode == 0, err
        names = set(re.findall(r"many\d+", out))
        assert names == {f"many{n}"}, (n, names)
    assert any("Queued" in out for out, _ in outputs.values())
    print(f"20 pushes: peak {peak['staging']} staging containers at once (staging/concurrency 2)")
    assert 1 <= peak["staging"] <= 2
    apps = json.loads(node.cli("fence", "apps", "--json").stdout)
    assert sorted(a["name"] for a in apps if a["running"] == 1) == sorted(f"many{n}" for n in range(20))


def _restart_engine() -> None:
    """TERM the engine, wait for it to go, start it again the way `make test` does."""
    pid = int(Path("/var/run/docker.pid").read_text())
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(["bash", str(repo / "scripts" / "ensure-engine")], check=True, capture_output=True)


def test_engine_restart_under_ten_instances_is_recovered(node: Node) -> None:
    assert node.cli("fence", "push", str(EXAMPLES / "static-hello"), "--name", "survivor",
                    "--instances", "10").exit_code == 0
    assert node.app("survivor")["running"] == 10
    _restart_engine()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        view = node.app("survivor")
        if view["running"] == 10 and node.url_get("survivor")[0] == 200:
            break
        time.sleep(1)
    view = node.app("survivor")
    assert view["running"] == 10, view["instance_list"]
    assert len(node.containers()) == 10


def test_service_data_survives_an_engine_restart(node: Node, tmp_path: Path) -> None:
    """Issue 16: a bound PostgreSQL's rows are there again after the Docker engine restarts (the
    daemon finds the service container exited and starts it again from its volume)."""
    images = ("fence/service-postgresql:bookworm", "fence/service-redis:bookworm")
    missing = [ref for ref in images if subprocess.run(["docker", "image", "inspect", ref],
                                                       capture_output=True).returncode != 0]
    if missing:
        pytest.skip(f"service images {', '.join(missing)} are not built (`make services` builds them)")
    import shutil

    from fence import labels

    source = tmp_path / "services-app"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "services-app", source)
    try:
        pushed = node.cli("fence", "push", str(source), "--buildpack", "procfile", timeout=600)
        assert pushed.exit_code == 0, pushed.stdout[-2000:] + pushed.stderr
        status, body = node.url_get("services-app", "/rows?clear=1&add=kept", timeout=30)
        assert status == 200 and json.loads(body) == ["kept"], body
        _restart_engine()
        deadline, seen = time.monotonic() + 240, None
        while time.monotonic() < deadline:
            try:
                seen = node.url_get("services-app", "/rows", timeout=10)
            except OSError as exc:  # the router or the app is not back yet
                seen = (0, str(exc))
            if seen[0] == 200:
                break
            time.sleep(1)
        assert seen is not None and seen[0] == 200, seen
        assert json.loads(seen[1]) == ["kept"]
        deadline = time.monotonic() + 60  # redis too is back (the daemon's loop looks every 5 s)
        while time.monotonic() < deadline:
            services = json.loads(node.cli("fence", "services", "--json").stdout)
            if [s["state"] for s in services] == ["running", "running"]:
                break
            time.sleep(1)
        assert [s["state"] for s in services] == ["running", "running"], services
    finally:
        node.cli("fence", "delete", "services-app")
        for name in ("db", "cache"):
            node.cli("fence", "service", "delete", name, "--delete-data")
        leftover = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                                   f"label={labels.NODE}={node.home.node_id}"],
                                  capture_output=True, text=True).stdout.split()
        if leftover:
            subprocess.run(["docker", "volume", "rm", "-f", *leftover], capture_output=True)
