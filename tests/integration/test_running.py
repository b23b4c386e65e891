"""Running apps on the real engine and nginx: push, scale, restart, redeploy, crash, OOM, run, recovery."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.node_kit import Node, Poller, started_node, wait_for
from tests.integration.staging_kit import EXAMPLES, write_app


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path_factory.mktemp("node") / "home")


def python_app(tmp_path: Path, greeting: str) -> Path:
    """The python example, answering with ``greeting`` (its greeting package changed)."""
    app = tmp_path / f"app-{abs(hash(greeting)) % 10**6}"
    shutil.copytree(EXAMPLES / "python-hello", app)
    package = app / "packages" / "greeting" / "greeting" / "__init__.py"
    package.write_text(package.read_text().replace("Hello from fence", greeting))
    return app



def test_push_two_instances_each_answering_and_the_url_reaches_both(node: Node) -> None:
    result = node.cli("fence", "push", str(EXAMPLES / "python-hello"), "--name", "hello", "--instances", "2")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"hello: http://hello.localhost:{node.router_port}/"
    apps = json.loads(node.cli("fence", "apps", "--json").stdout)
    [hello] = [a for a in apps if a["name"] == "hello"]
    assert hello["running"] == 2 and hello["instances"] == 2
    view = node.app("hello")
    assert view["url"] == f"http://hello.localhost:{node.router_port}/"
    for instance in view["instance_list"]:
        assert instance["state"] == "running" and instance["restarts"] == 0 and instance["container"]
        with urllib.request.urlopen(f"http://127.0.0.1:{instance['host_port']}/", timeout=5) as response:
            assert f"(instance {instance['index']})" in response.read().decode()
    seen = {node.url_get("hello")[1].strip() for _ in range(30)}
    assert seen == {"Hello from fence (instance 0)", "Hello from fence (instance 1)"}


def test_scale_restart_and_redeploy_without_a_failed_request(node: Node, tmp_path: Path) -> None:
    assert node.cli("fence", "push", str(EXAMPLES / "python-hello"), "--name", "steady").exit_code == 0
    with Poller(node, "steady") as poll:
        assert node.cli("fence", "scale", "steady", "3").exit_code == 0
        assert [i["state"] for i in node.app("steady")["instance_list"]] == ["running"] * 3
        assert node.cli("fence", "scale", "steady", "1").exit_code == 0
        assert node.cli("fence", "restart", "steady").exit_code == 0
        changed = node.cli("fence", "push", str(python_app(tmp_path, "Hello v2")), "--name", "steady")
        assert changed.exit_code == 0, changed.stderr
        time.sleep(1)
    print(f"scale 1->3->1, restart, redeploy: {poll.total} requests every 50 ms, outcomes {dict(poll.outcomes)}")
    assert poll.failures == [] and poll.total > 50, poll.outcomes
    assert any(body.startswith("Hello v2") for body in poll.bodies)
    assert node.url_get("steady")[1].startswith("Hello v2")
    # The old release's instance drains (out of the router first, then TERM) after push returns.
    wait_for(lambda: [i["index"] for i in node.app("steady")["instance_list"]] == [0], timeout=30)
    releases = json.loads(node.cli("fence", "releases", "steady", "--json").stdout)
    assert [r["number"] for r in releases] == [3, 2, 1]


def test_failed_staging_keeps_the_old_release_serving(node: Node, tmp_path: Path) -> None:
    assert node.cli("fence", "push", str(EXAMPLES / "python-hello"), "--name", "keeper").exit_code == 0
    broken = write_app(tmp_path / "broken", {
        "Procfile": "web: python3 -m http.server $PORT\n",
        "stackato.yml": "name: keeper\nhooks:\n  pre-staging: exit 9\n",
    })
    with Poller(node, "keeper") as poll:
        failed = node.cli("fence", "push", str(broken), "--buildpack", "procfile")
        assert failed.exit_code != 0 and "pre-staging hook" in failed.stderr
    assert poll.failures == [] and poll.total > 0
    assert node.app("keeper")["release"] == 1


def test_stop_start_delete(node: Node) -> None:
    assert node.cli("fence", "push", str(EXAMPLES / "static-hello"), "--name", "lifecycle").exit_code == 0
    assert node.url_get("lifecycle")[0] == 200
    assert node.cli("fence", "stop", "lifecycle").exit_code == 0
    assert node.app("lifecycle")["instance_list"] == [] and node.app("lifecycle")["state"] == "stopped"
    assert node.url_get("lifecycle")[0] == 503
    assert node.cli("fence", "start", "lifecycle").exit_code == 0
    wait_for(lambda: node.url_get("lifecycle")[0] == 200)
    before = len(node.containers())
    assert node.cli("fence", "delete", "lifecycle").exit_code == 0
    assert len(node.containers()) == before - 1
    missing = node.cli("fence", "app", "lifecycle")
    assert missing.exit_code == 3 and missing.stderr == "error: no app named 'lifecycle' on this node (see `fence apps`)\n"
    assert not (node.root / "caches" / "lifecycle.tar").exists()
    assert not (node.root / "logs" / "staging" / "lifecycle").exists()
    assert node.url_get("lifecycle")[0] == 404


def test_run_as_app_user_and_pre_running_hooks_take_effect(node: Node, tmp_path: Path) -> None:
    app = write_app(tmp_path / "hooked", {
        "Procfile": "web: python3 -m http.server $PORT\n",
        "stackato.yml": "name: hooked\nhooks:\n  pre-running: echo \"hooked $INSTANCE_INDEX\" > hook.txt\n",
    })
    assert node.cli("fence", "push", str(app)).exit_code == 0
    assert node.url_get("hooked", "/hook.txt") == (200, "hooked 0\n")
    result = node.cli("fence", "run", "hooked", "--", "id", "-u")
    assert result.exit_code == 0 and result.stdout.strip().splitlines()[-1] == "1000"
    code = node.cli("fence", "run", "hooked", "--", "bash", "-c", "echo out; exit 7")
    assert code.exit_code == 7 and "out" in code.stdout
    assert node.containers("task") == []
    logs = node.cli("fence", "logs", "hooked")
    assert logs.exit_code == 0 and "[web.0]" in logs.stdout
    staging = node.cli("fence", "logs", "hooked", "--staging")
    assert "-----> Detecting buildpack" in staging.stdout
    assert "-----> Running procfile compile" in staging.stdout or "-----> Running Procfile compile" in staging.stdout


def test_crashing_app_is_restarted_and_its_count_rises(node: Node, tmp_path: Path) -> None:
    app = write_app(tmp_path / "crashy", {
        "Procfile": "web: python3 -m http.server $PORT & sleep 2; exit 3\n",
    })
    assert node.cli("fence", "push", str(app), "--name", "crashy").exit_code == 0
    view = wait_for(lambda: (v := node.app("crashy"))["instance_list"] and
                    v["instance_list"][0]["restarts"] >= 2 and v, timeout=60)
    assert view["instance_list"][0]["last_crash"] == "exited 3"


def test_memory_limit_kill_is_reported_as_out_of_memory(node: Node, tmp_path: Path) -> None:
    app = write_app(tmp_path / "hungry", {
        "Procfile": "web: python3 -c \"import time; b = bytearray(400 * 1024 * 1024); time.sleep(600)\"\n",
    })
    result = node.cli("fence", "push", str(app), "--name", "hungry", "--mem", "64M")
    assert result.exit_code != 0 and "did not start" in result.stderr
    view = wait_for(lambda: (v := node.app("hungry"))["instance_list"] and v)
    assert view["instance_list"][0]["last_crash"] == "out of memory (killed at its memory limit)"


def test_cli_errors_are_one_line(node: Node) -> None:
    for args, code, fragment in [
        (("fence", "app", "nosuch"), 3, "no app named 'nosuch'"),
        (("fence", "scale", "nosuch", "2"), 3, "no app named 'nosuch'"),
        (("fence", "push", ".", "--mem", "lots"), 2, "memory 'lots' is not a size"),
        (("fence", "push", ".", "--env", "9X=1"), 2, "env variable '9X'"),
        (("fence", "app", "Bad_Name"), 2, "app name 'Bad_Name'"),
        (("fence", "rollback", "hello", "99"), 3, "has no release 99"),
    ]:
        result = node.cli(*args)
        assert result.exit_code == code, (args, result.stderr)
        assert result.stderr.startswith("error: ") and fragment in result.stderr and result.stderr.count("\n") == 1


def test_daemon_down_is_one_line(tmp_path: Path, engine: str) -> None:
    down = Node(root=tmp_path / "down")
    down.root.mkdir()
    result = down.cli("fence", "apps")
    assert result.exit_code == 5 and result.stderr.startswith("error: the fence daemon is not running")


def test_kill_9_of_the_daemon_loses_nothing(tmp_path: Path, engine: str) -> None:
    node = Node(root=tmp_path / "home")
    node.start()
    try:
        for name in ("one", "two", "three"):
            assert node.cli("fence", "push", str(EXAMPLES / "static-hello"), "--name", name).exit_code == 0
        before = node.containers()
        with Poller(node, "two") as poll:
            node.kill_daemon()
            time.sleep(1)
            node.start()
            time.sleep(2)
        print(f"kill -9 of the daemon and restart: {poll.total} requests every 50 ms, outcomes {dict(poll.outcomes)}")
        assert poll.failures == [] and poll.total > 20
        assert node.containers() == before and len(before) == 3
        for name in ("one", "two", "three"):
            [instance] = node.app(name)["instance_list"]
            assert instance["state"] == "running" and instance["restarts"] == 0
        assert node.containers("staging") == []
    finally:
        node.close()


def test_extra_host_names_and_hostile_ones(node: Node, tmp_path: Path) -> None:
    assert node.cli("fence", "push", str(EXAMPLES / "static-hello"), "--name", "hosts").exit_code == 0
    added = node.cli("fence", "route", "add", "hosts", "www.example.test")
    assert added.exit_code == 0, added.stderr
    request = urllib.request.Request(f"http://127.0.0.1:{node.router_port}/", headers={"Host": "www.example.test"})
    wait_for(lambda: _status(request) == 200)
    for hostile in ("evil;}", "a b.test", "$(touch /tmp/x).test", "x" * 300, "a\nb.test"):
        result = node.cli("fence", "route", "add", "hosts", hostile)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, (hostile, result.stderr)
    assert node.cli("fence", "push", str(EXAMPLES / "static-hello"), "--name", "hosts-b").exit_code == 0
    for taken in ("www.example.test", "hosts.localhost"):
        clash = node.cli("fence", "route", "add", "hosts-b", taken)
        assert clash.exit_code == 2 and "already routes to app hosts" in clash.stderr, clash.stderr
    conf = (node.root / "router" / "nginx.conf").read_text()
    assert "evil" not in conf and "$(touch" not in conf and "www.example.test" in conf
    assert node.cli("fence", "route", "remove", "hosts", "www.example.test").exit_code == 0
    wait_for(lambda: _status(request) == 404)
    bad = write_app(tmp_path / "badurl", {"index.html": "x", "stackato.yml": "name: badurl\nurl: ['evil;} server {']\n"})
    result = node.cli("fence", "push", str(bad))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "evil" in result.stderr
    assert "evil" not in (node.root / "router" / "nginx.conf").read_text()


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_router_port_moves_and_status_shows_the_router(tmp_path: Path, engine: str) -> None:
    from tests.integration.node_kit import free_port
    node = Node(root=tmp_path / "home")
    node.start()
    try:
        assert node.cli("fence", "push", str(EXAMPLES / "static-hello"), "--name", "mover").exit_code == 0
        status = json.loads(node.cli("kato", "status", "--json").stdout)
        assert status["router"]["running"] and status["router"]["port"] == node.router_port
        assert status["router"]["routes"] == 1 and status["router"]["last_reload"]
        assert "router:" in node.cli("kato", "status").stdout
        new_port = free_port()
        assert node.cli("kato", "config", "set", "fence", "router/port", str(new_port)).exit_code == 0
        node.router_port = new_port
        wait_for(lambda: _ok(node), timeout=30)
        assert json.loads(node.cli("kato", "status", "--json").stdout)["router"]["port"] == new_port
        assert node.app("mover")["url"] == f"http://mover.localhost:{new_port}/"
        # Another address (127.0.0.2: loopback too, nothing leaves the machine): nginx restarts on it.
        assert node.cli("kato", "config", "set", "fence", "router/bind_address", "127.0.0.2").exit_code == 0
        wait_for(lambda: _ok(node, "127.0.0.2"), timeout=30)
        assert not _ok(node)
        assert f"on 127.0.0.2:{new_port}," in node.cli("kato", "status").stdout
        refused = node.cli("kato", "config", "set", "fence", "router/bind_address", "localhost")
        assert refused.exit_code != 0 and "IP address" in refused.stderr and refused.stderr.count("\n") == 1
    finally:
        node.close()


def _ok(node: Node, address: str = "127.0.0.1") -> bool:
    try:
        return node.url_get("mover", address=address)[0] == 200
    except OSError:
        return False
