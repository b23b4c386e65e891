"""Logs filters, `fence stats`, `kato node top` and /metrics on the real engine, with one app of two web instances and a busy worker."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fence.client import FenceClient
from tests.integration.node_kit import Node, free_port

APP = "meter"
WEB = ("import os, sys, time, http.server as s\n"
       "i = os.environ['INSTANCE_INDEX']\n"
       "print(f'web {i} ready', flush=True)\n"
       "time.sleep(0.3)\n"
       "print(f'web {i} warns', file=sys.stderr, flush=True)\n"
       "H = type('H', (s.BaseHTTPRequestHandler,), {'do_GET': lambda r: (r.send_response(200), r.end_headers(),"
       " r.wfile.write(b'ok')), 'log_message': lambda *a: None})\n"
       "s.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n")
# The worker: two lines, a pause, two more, then it burns a core holding 48 MiB. The engine stamps
# each stream's lines as it reads them, so lines of stdout and stderr are 0.3 s apart (a moment
# apart they may swap on a loaded machine).
WORKER = ("import sys, time\n"
          "print('worker first', flush=True)\n"
          "time.sleep(0.3)\n"
          "print('worker second', file=sys.stderr, flush=True)\n"
          "time.sleep(3)\n"
          "print('worker third', flush=True)\n"
          "time.sleep(0.3)\n"
          "print('worker busy', file=sys.stderr, flush=True)\n"
          "hold = bytearray(48 * 1024 * 1024)\n"
          "for n in range(0, len(hold), 4096): hold[n] = 1\n"
          "while True: pass\n")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):
    root = tmp_path_factory.mktemp("node") / "home"
    node = Node(root=root)
    root.mkdir(parents=True)
    node.metrics_port = free_port()  # type: ignore[attr-defined]
    for key, value in (("router/port", str(node.router_port)), ("staging/buildpack_roots", str(root.parents[1])),
                       ("metrics/listen", f"127.0.0.1:{node.metrics_port}")):  # type: ignore[attr-defined]
        assert node.cli("kato", "config", "set", "fence", key, value).exit_code == 0
    node.start()
    source = tmp_path_factory.mktemp("meter")
    (source / "web.py").write_text(WEB)
    (source / "worker.py").write_text(WORKER)
    (source / "Procfile").write_text("web: python3 web.py\nworker: python3 worker.py\n")
    (source / "stackato.yml").write_text(f"name: {APP}\nmem: 64M\ninstances: 2\n"
                                         "processes:\n  worker:\n    instances: 1\n    mem: 128M\n")
    result = node.cli("fence", "push", str(source))
    assert result.exit_code == 0, result.stderr + result.stdout
    yield node
    node.close()


def _wait_for(predicate, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


def _entries(node: Node, *args: str) -> list[dict]:
    result = node.cli("fence", "logs", APP, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _pairs(entries: list[dict]) -> list[tuple[str, str]]:
    return [(f"{e['type']}.{e['instance']}", e["line"]) for e in entries]


def test_logs_filters_return_exactly_the_expected_lines(node: Node) -> None:
    everything = _wait_for(lambda: (found := _entries(node)) and any(e["line"] == "worker busy" for e in found)
                           and found)
    assert {(e["app"], e["release"]) for e in everything} == {(APP, 1)}
    assert sorted(_pairs(everything)) == sorted([
        ("web.0", "web 0 ready"), ("web.0", "web 0 warns"), ("web.1", "web 1 ready"), ("web.1", "web 1 warns"),
        ("worker.0", "worker first"), ("worker.0", "worker second"), ("worker.0", "worker third"),
        ("worker.0", "worker busy")])
    assert [e["time"] for e in everything] == sorted(e["time"] for e in everything)
    worker = _entries(node, "--type", "worker")
    assert [(e["line"], e["stream"]) for e in worker] == [
        ("worker first", "stdout"), ("worker second", "stderr"), ("worker third", "stdout"),
        ("worker busy", "stderr")]
    assert sorted(_pairs(_entries(node, "--instance", "1"))) == [("web.1", "web 1 ready"), ("web.1", "web 1 warns")]
    assert _pairs(_entries(node, "--type", "web", "--instance", "0")) == [("web.0", "web 0 ready"),
                                                                         ("web.0", "web 0 warns")]
    assert _pairs(_entries(node, "--tail", "2")) == _pairs(everything)[-2:]
    # The worker paused 3 s after its second line: a --since inside the pause keeps the last two.
    second = dt.datetime.fromisoformat(worker[1]["time"])
    since = (second + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _pairs(_entries(node, "--since", since, "--type", "worker")) == [("worker.0", "worker third"),
                                                                             ("worker.0", "worker busy")]
    assert _entries(node, "--since", "2000-01-01T00:00:00Z", "--type", "worker") == worker
    plain = node.cli("fence", "logs", APP, "--type", "worker", "--timestamps").stdout.splitlines()
    assert plain == [f"{e['time']} [worker.0] {e['line']}" for e in worker]
    bad = node.cli("fence", "logs", "no-such-app", "--tail", "3")
    assert bad.exit_code != 0 and "no-such-app" in bad.stderr


def _docker_stats(container: str) -> tuple[float, float]:
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}", container],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    row = json.loads(out)
    used = row["MemUsage"].split("/")[0].strip()
    units = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "kB": 1000, "MB": 1000 ** 2}
    number, unit = next((used[:-len(u)], u) for u in sorted(units, key=len, reverse=True) if used.endswith(u))
    return float(row["CPUPerc"].rstrip("%")), float(number) * units[unit]


def test_stats_agree_with_docker_stats_for_a_busy_instance(node: Node) -> None:
    _wait_for(lambda: any(e["line"] == "worker busy" for e in _entries(node, "--type", "worker")))
    time.sleep(2)  # its memory is written and its loop runs
    tries = []
    for _ in range(3):  # a loaded machine moves a busy loop's share between two readings
        result = node.cli("fence", "stats", APP, "--json")
        assert result.exit_code == 0, result.stderr
        rows = {f"{r['type']}.{r['index']}": r for r in json.loads(result.stdout)}
        worker = rows["worker.0"]
        docker_cpu, docker_memory = _docker_stats(worker["container"])
        tries.append((worker["cpu_percent"], docker_cpu, worker["memory_bytes"], docker_memory))
        if abs(worker["cpu_percent"] - docker_cpu) <= 5 and abs(worker["memory_bytes"] - docker_memory) <= \
                0.05 * docker_memory:
            break
    else:
        raise AssertionError(f"fence stats vs docker stats (cpu, cpu, memory, memory): {tries}")
    # How much of a core the loop gets depends on the machine's load; it is busy, the web ones idle.
    assert worker["cpu_percent"] > 1 and worker["memory_bytes"] > 48 * 1024 ** 2
    assert worker["memory_limit_bytes"] == 128 * 1024 ** 2 and rows["web.0"]["memory_limit_bytes"] == 64 * 1024 ** 2
    assert set(rows) == {"web.0", "web.1", "worker.0"} and all(r["state"] == "running" for r in rows.values())
    assert rows["web.0"]["cpu_percent"] < worker["cpu_percent"] and rows["web.0"]["restarts"] == 0
    assert rows["web.0"]["net_rx_bytes"] > 0  # the health checks reached it over its network
    human = node.cli("fence", "stats", APP).stdout.splitlines()
    assert human[0].split() == ["INSTANCE", "STATE", "CPU", "MEMORY", "LIMIT", "NET", "IN", "NET", "OUT",
                                "RESTARTS", "UPTIME"]
    top = json.loads(node.cli("kato", "node", "top", "--json").stdout)
    assert [(u["app"], u["instances"]) for u in top] == [(APP, 3)] and top[0]["cpu_percent"] > 1
    assert top[0]["memory_bytes"] >= 0.9 * sum(r["memory_bytes"] for r in rows.values())
    assert top[0]["memory_limit_bytes"] == (2 * 64 + 128) * 1024 ** 2
    assert "by CPU:" in node.cli("kato", "node", "top").stdout


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict, name: str, suffix: str = "", **match: str) -> float:
    return sum(s.value for s in families[name].samples
               if s.name == name + suffix and all(s.labels.get(k) == v for k, v in match.items()))


def test_metrics_on_the_socket_and_on_tcp_parse_and_move(node: Node) -> None:
    client = FenceClient(host_socket=node.home.host_socket)
    before = _families(client.metrics_text())
    types = {name: before[name].type for name in (
        "fence_instance_cpu_seconds", "fence_instance_memory_bytes", "fence_instance_restarts",
        "fence_instance_healthy", "fence_app_instances_desired", "fence_app_instances_running",
        "fence_staging_duration_seconds", "fence_router_requests", "fence_drain_dropped_lines",
        "fence_api_request_duration_seconds")}
    assert types == {"fence_instance_cpu_seconds": "counter", "fence_instance_memory_bytes": "gauge",
                     "fence_instance_restarts": "counter", "fence_instance_healthy": "gauge",
                     "fence_app_instances_desired": "gauge", "fence_app_instances_running": "gauge",
                     "fence_staging_duration_seconds": "histogram", "fence_router_requests": "counter",
                     "fence_drain_dropped_lines": "counter", "fence_api_request_duration_seconds": "histogram"}
    assert _value(before, "fence_app_instances_desired", app=APP, type="web") == 2
    assert _value(before, "fence_app_instances_running", app=APP, type="worker") == 1
    assert _value(before, "fence_instance_healthy", app=APP) == 3
    assert _value(before, "fence_staging_duration_seconds", "_count", outcome="ok") == 1
    for _ in range(5):
        assert node.url_get(APP) == (200, "ok")
    assert node.url_get("nobody")[0] == 404
    time.sleep(1.5)  # the busy worker's CPU counter moves; nginx writes its log lines
    after = _families(client.metrics_text())
    assert _value(after, "fence_router_requests", "_total", app=APP, status="200") >= \
        _value(before, "fence_router_requests", "_total", app=APP, status="200") + 5
    assert _value(after, "fence_router_requests", "_total", app="", status="404") >= 1
    assert _value(after, "fence_instance_cpu_seconds", "_total", app=APP, type="worker") > \
        _value(before, "fence_instance_cpu_seconds", "_total", app=APP, type="worker")
    assert _value(after, "fence_api_request_duration_seconds", "_count", route="/metrics") > \
        _value(before, "fence_api_request_duration_seconds", "_count", route="/metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10) as answer:  # type: ignore[attr-defined]
        over_tcp = _families(answer.read().decode())
    assert _value(over_tcp, "fence_app_instances_desired", app=APP, type="web") == 2
