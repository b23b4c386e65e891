"""Issue 13 item 6 on the real engine and daemon: one app cannot reach another app's containers or the host;
the router still reaches both; an app's network goes with the app, and gc takes an orphaned one."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.node_kit import Node, started_node
from tests.integration.staging_kit import write_app

_WEB = "web: python3 -m http.server $PORT\n"
# Connects to HOST:PORT from inside a container: prints open/closed and how long it took.
_PROBE = ("python3 - <<'EOF'\nimport socket, time\nstart = time.monotonic()\n"
          "try:\n    socket.create_connection(('{host}', {port}), timeout={timeout}).close(); state = 'open'\n"
          "except OSError as exc:\n    state = 'closed ' + type(exc).__name__\n"
          "print(state, round(time.monotonic() - start, 2))\nEOF")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Iterator[Node]:
    yield from started_node(tmp_path_factory.mktemp("netnode") / "home")


def _push(node: Node, tmp: Path, name: str, instances: int) -> None:
    source = write_app(tmp / name, {"Procfile": _WEB, "index.html": f"this is {name}\n"})
    result = node.cli("fence", "push", str(source), "--name", name, "--instances", str(instances))
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def apps(node: Node, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two apps: ``neta`` with two instances, ``netb`` with one."""
    tmp = tmp_path_factory.mktemp("netapps")
    _push(node, tmp, "neta", 2)
    _push(node, tmp, "netb", 1)
    return "neta", "netb"


def _containers(node: Node, app: str) -> list[dict]:
    ids = [i["container"] for i in node.app(app)["instance_list"] if i["state"] == "running"]
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
    return sorted(json.loads(out), key=lambda c: c["Config"]["Labels"].get("fence.instance", ""))


def _network(container: dict) -> tuple[str, str, str]:
    """(network name, container address, gateway) of a container's one network."""
    [(name, settings)] = container["NetworkSettings"]["Networks"].items()
    return name, settings["IPAddress"], settings["Gateway"]


def _probe(container: dict, host: str, port: int, timeout: float = 3) -> tuple[str, float]:
    script = _PROBE.format(host=host, port=port, timeout=timeout)
    proc = subprocess.run(["docker", "exec", "--user", "1000:1000", container["Id"], "bash", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    state, seconds = proc.stdout.strip().rsplit(" ", 1)
    return state, float(seconds)


def _networks(node: Node, app: str | None = None) -> list[str]:
    filters = ["--filter", f"label=fence.node={node.home.node_id}"]
    if app:
        filters += ["--filter", f"label=fence.app={app}"]
    out = subprocess.run(["docker", "network", "ls", "-q", *filters, "--format", "{{.Name}}"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def test_another_apps_container_is_unreachable_but_the_own_apps_is_not(node: Node, apps: tuple[str, str]) -> None:
    a0, a1 = _containers(node, "neta")
    [b0] = _containers(node, "netb")
    net_a, address_a1, _ = _network(a0)
    net_b, address_b, _ = _network(b0)
    state, seconds = _probe(a0, address_b, 8080)
    assert state.startswith("closed"), f"neta reached netb's container at {address_b}:8080"
    assert seconds < 4
    assert net_a != net_b and net_a != "bridge" and _network(a1)[0] == net_a
    assert _probe(a0, address_a1, 8080)[0] == "open"  # instances of one app may talk
    host_port = next(i["host_port"] for i in node.app("netb")["instance_list"] if i["state"] == "running")
    assert _probe(a0, _network(a0)[2], host_port)[0].startswith("closed")  # nor via its published port
    assert _probe(b0, _network(a0)[1], 8080)[0].startswith("closed")  # and the other way round


def test_a_listener_on_the_apps_gateway_is_unreachable_from_its_containers(node: Node, apps: tuple[str, str]) -> None:
    a0 = _containers(node, "neta")[0]
    _, _, gateway = _network(a0)
    listener = socket.create_server((gateway, 0))
    port = listener.getsockname()[1]
    accepted: list[object] = []
    listener.settimeout(8)
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        state, seconds = _probe(a0, gateway, port)
        assert state.startswith("closed"), f"neta reached a host listener at {gateway}:{port}"
        assert seconds < 4 and not accepted
        with socket.create_connection((gateway, port), timeout=3):  # the listener itself is real
            pass
        thread.join(timeout=5)
        assert accepted
    finally:
        listener.close()


def test_both_apps_still_answer_through_the_router(node: Node, apps: tuple[str, str]) -> None:
    for name in apps:
        deadline = time.monotonic() + 20
        while True:
            status, body = node.url_get(name, "/index.html")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (status, body.strip()) == (200, f"this is {name}")


def test_status_reports_the_firewall_and_warns_when_it_is_gone(node: Node, apps: tuple[str, str]) -> None:
    def warnings() -> list[str]:
        result = node.cli("kato", "status", "--json")
        assert result.exit_code == 0, result.stderr
        return [w for w in json.loads(result.stdout)["warnings"] if "FENCE-INPUT" in w or "iptables" in w]

    assert warnings() == []
    jump = ["INPUT", "-i", "fnc-+", "-j", "FENCE-INPUT"]
    subprocess.run(["iptables", "-w", "5", "-D", *jump], check=True)
    try:
        [warning] = warnings()
        assert "app containers can reach services on the host" in warning
    finally:
        subprocess.run(["iptables", "-w", "5", "-I", jump[0], "1", *jump[1:]], check=True)
    assert warnings() == []


def test_deleting_an_app_removes_its_network(node: Node, apps: tuple[str, str],
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    _push(node, tmp_path_factory.mktemp("netgone"), "netgone", 1)
    assert len(_networks(node, "netgone")) == 1
    result = node.cli("fence", "delete", "netgone")
    assert result.exit_code == 0, result.stderr
    assert _networks(node, "netgone") == []
    assert len(_networks(node, "neta")) == 1 and len(_networks(node, "netb")) == 1


def test_gc_removes_an_orphaned_network(node: Node, apps: tuple[str, str]) -> None:
    node_id = node.home.node_id
    name = f"fence-{node_id}-ghost"
    subprocess.run(["docker", "network", "create", "--label", f"fence.node={node_id}", "--label", "fence.role=network",
                    "--label", "fence.app=ghost", name], capture_output=True, check=True)
    dry = node.cli("kato", "gc", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert f"would remove network {name}" in dry.stdout
    assert not any(f"network fence-{node_id}-net" in line for line in dry.stdout.splitlines())
    real = node.cli("kato", "gc")
    assert real.exit_code == 0 and f"removed network {name}" in real.stdout, real.stdout + real.stderr
    assert _networks(node) == sorted(f"fence-{node_id}-{app}" for app in apps)
