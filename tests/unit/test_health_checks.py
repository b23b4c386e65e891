"""Health checks (issue 14 item 4): manifest keys, the config key, the store, failure counting and replacement (fake engine and clock)."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from pathlib import Path

import pytest

from fence.config import ConfigStore
from fence.errors import ContainerNotFound, ManifestInvalid
from fence.models import AppRecord, DeploySettings, HealthSettings
from fence.running.health import HealthMonitor, NetworkHealth, Probe, probe_for
from fence.staging.manifest import parse_manifest
from fence.store import StateStore
from tests.unit.test_instance_manager import InlineExecutor, Node


def _stackato(text: str):  # noqa: ANN202
    return parse_manifest(text.encode(), source_name="stackato.yml")


def _cf(body: str):  # noqa: ANN202
    return parse_manifest(("applications:\n- name: web\n" + body).encode(), source_name="manifest.yml")


# --- manifest ------------------------------------------------------------------------------------

def test_stackato_health_block_is_read() -> None:
    manifest = _stackato("health:\n  type: http\n  path: /healthz\n  timeout: 30\n  interval: 2\n")
    assert manifest.health == HealthSettings(type="http", path="/healthz", interval=2)
    assert manifest.timeout == 30  # health.timeout is the app's timeout
    assert _stackato("health: {type: http}\n").health == HealthSettings(type="http", path="/")
    assert _stackato("health: {type: process}\n").health == HealthSettings(type="process")
    assert _stackato("health: {timeout: 20}\n").health is None  # the timeout alone changes no check
    assert _stackato("mem: 64M\n").health is None


def test_cloud_foundry_health_check_keys_are_read() -> None:
    manifest = _cf("  health-check-type: http\n  health-check-http-endpoint: /ready\n  timeout: 9\n")
    assert manifest.health == HealthSettings(type="http", path="/ready") and manifest.timeout == 9
    assert _cf("  health-check-type: none\n").health == HealthSettings(type="process")  # CF's legacy name
    assert _cf("  health-check-type: port\n").health == HealthSettings(type="port")


def test_unknown_key_in_the_health_block_is_a_warning() -> None:
    manifest = _stackato("health: {type: port, retries: 3}\n")
    assert manifest.health == HealthSettings(type="port")
    assert manifest.warnings == ("stackato.yml: unknown key 'health.retries' ignored (health takes type, path, "
                                 "timeout, interval)",)


@pytest.mark.parametrize("text, error", [
    ("health: [http]\n",
     "stackato.yml line 1, column 9: health must be a mapping (key: value), not a list"),
    ("health:\n  type: tcp\n",
     "stackato.yml line 2, column 9: health.type: 'tcp' is not a health check type (use port, http or "
     "process; none is process)"),
    ("health:\n  type: [http]\n",
     "stackato.yml line 2, column 9: health.type must be port, http or process, not a list"),
    ("health:\n  type: http\n  path: healthz\n",
     "stackato.yml line 3, column 9: health.path: 'healthz' is not a URL path (it starts with / and has no "
     "spaces, control characters, '#' or non-ASCII characters)"),
    ("health:\n  type: http\n  path: /a b\n",
     "stackato.yml line 3, column 9: health.path: '/a b' is not a URL path (it starts with / and has no "
     "spaces, control characters, '#' or non-ASCII characters)"),
    ("health:\n  type: http\n  path: /x#y\n",
     "stackato.yml line 3, column 9: health.path: '/x#y' is not a URL path (it starts with / and has no "
     "spaces, control characters, '#' or non-ASCII characters)"),
    ("health:\n  type: http\n  path: " + "/" * 1025 + "\n",
     "stackato.yml line 3, column 9: health.path is longer than 1024 bytes"),
    ("health:\n  path: /healthz\n",
     "stackato.yml line 2, column 9: a health check path is only for an http check, and the app's health "
     "check type is port"),
    ("health:\n  type: process\n  path: /healthz\n",
     "stackato.yml line 3, column 9: a health check path is only for an http check, and the app's health "
     "check type is process"),
    ("health:\n  timeout: 0\n",
     "stackato.yml line 2, column 12: health.timeout: '0' is not a whole number from 1 to 180"),
    ("health:\n  timeout: 181\n",
     "stackato.yml line 2, column 12: health.timeout: '181' is not a whole number from 1 to 180"),
    ("health:\n  interval: 0\n",
     "stackato.yml line 2, column 13: health.interval: '0' is not a whole number from 1 to 600"),
    ("health:\n  interval: 601\n",
     "stackato.yml line 2, column 13: health.interval: '601' is not a whole number from 1 to 600"),
    ("health:\n  interval: 1.5\n",
     "stackato.yml line 2, column 13: health.interval: '1.5' is not a whole number from 1 to 600"),
    ("health:\n  interval: {a: 1}\n",
     "stackato.yml line 2, column 13: health.interval must be a whole number, not a mapping"),
    ("timeout: 5\nhealth:\n  timeout: 6\n",
     "stackato.yml line 3, column 12: health.timeout is also given by timeout (give one of them)"),
    ("health:\n  timeout: 6\ntimeout: 5\n",
     "stackato.yml line 3, column 10: timeout is also given by health.timeout (give one of them)"),
    ("health:\n  type: http\nhealth-check-type: port\n",
     "stackato.yml line 3, column 20: health-check-type gives the health check type a second time (give "
     "health.type or its health-check-* key, not both)"),
])
def test_bad_health_values_are_one_line_errors_with_the_line(text: str, error: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        _stackato(text)
    assert caught.value.message == error and "\n" not in caught.value.message


@pytest.mark.parametrize("body, error", [
    ("  health-check-type: tcp\n",
     "manifest.yml line 3, column 22: applications[0].health-check-type: 'tcp' is not a health check type (use port, http or "
     "process; none is process)"),
    ("  health-check-type: http\n  health-check-http-endpoint: healthz\n",
     "manifest.yml line 4, column 31: applications[0].health-check-http-endpoint: 'healthz' is not a URL path (it starts with "
     "/ and has no spaces, control characters, '#' or non-ASCII characters)"),
    ("  health-check-http-endpoint: /healthz\n",
     "manifest.yml line 3, column 31: a health check path is only for an http check, and the app's health "
     "check type is port"),
    ("  health-check-type: http\n  health-check-http-endpoint: [a]\n",
     "manifest.yml line 4, column 31: applications[0].health-check-http-endpoint must be a URL path like /healthz, not a list"),
])
def test_bad_cloud_foundry_health_values_are_one_line_errors(body: str, error: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        _cf(body)
    assert caught.value.message == error


def test_push_settings_and_the_store_carry_the_health_settings(tmp_path: Path) -> None:
    settings = DeploySettings.of_push(_stackato("health: {type: http, path: /h, interval: 3}\n"),
                                      instances=None, memory_mib=None, env={})
    assert settings.health == HealthSettings(type="http", path="/h", interval=3)
    store = StateStore(host_db=tmp_path / "state.db")
    app = AppRecord(name="web", instances=1, memory_mib=64, env={}, started=True, release=None,
                    health_timeout=None, urls=(), created_at="t", health=settings.health)
    store.put_app(app)
    store.put_app(dataclasses.replace(app, name="plain", health=None))
    assert store.app("web") == app and store.app("plain").health is None  # type: ignore[union-attr]
    store.close()


def test_failures_key_has_a_default_and_refuses_bad_values(tmp_path: Path) -> None:
    config = ConfigStore(host_file=tmp_path / "config.yml")
    assert config.fence("health/failures") == 3
    for bad in ("0", "101", "three", "2.5"):
        with pytest.raises(Exception) as caught:
            config.set("fence", "health/failures", bad)
        assert "health/failures" in str(caught.value) and "from 1 to 100" in str(caught.value)
        assert "\n" not in str(caught.value)


def test_kato_refuses_a_bad_failures_count_in_one_line(kato) -> None:  # noqa: ANN001
    result = kato("config", "set", "fence", "health/failures", "0")
    assert result.exit_code != 0 and result.stderr == ("error: fence health/failures: '0' is not allowed "
                                                       "(a whole number of checks from 1 to 100)\n")
    assert kato("config", "set", "fence", "health/failures", "5").exit_code == 0
    assert kato("config", "get", "fence", "health/failures").stdout == "5\n"


# --- the checks themselves ---------------------------------------------------------------------------

def test_probe_for_web_and_other_process_types() -> None:
    assert probe_for(None, web=True) == Probe(type="port", interval=10)
    assert probe_for(HealthSettings(type="http", path="/h", interval=2), web=True) == Probe("http", "/h", 2)
    assert probe_for(HealthSettings(type="http", path="/h"), web=False).type == "process"


class _Answers(http.server.BaseHTTPRequestHandler):
    codes: dict[str, int] = {"/ok": 200, "/moved": 302, "/bad": 500, "/missing": 404}

    def do_GET(self) -> None:  # noqa: N802 - the handler's name
        self.send_response(self.codes.get(self.path, 404))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_network_check_needs_a_2xx_or_3xx_answer_from_the_instance() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    check = NetworkHealth()
    try:
        assert check.check("127.0.0.1", port, Probe("http", "/ok"), 2) is None
        assert check.check("127.0.0.1", port, Probe("http", "/moved"), 2) is None
        assert check.check("127.0.0.1", port, Probe("http", "/bad"), 2) == "500"
        assert check.check("127.0.0.1", port, Probe("http", "/missing"), 2) == "404"
        assert check.check("127.0.0.1", port, Probe("port"), 2) is None
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]
    assert check.check("127.0.0.1", closed, Probe("port"), 1) == "connection refused"
    assert check.check("127.0.0.1", closed, Probe("http", "/"), 1) == "connection refused"
    assert check.check("127.0.0.1", closed, Probe("process"), 1) is None


def test_a_silent_instance_times_out_within_the_bound() -> None:
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        assert NetworkHealth().check("127.0.0.1", port, Probe("http", "/"), 0.3) == "timed out"


# --- failure counting (fake clock, checks run inline) ------------------------------------------------

class _Script:
    """A check answering from a list of outcomes (``None`` passes), recording when it was asked."""

    def __init__(self, outcomes: list[str | None]) -> None:
        self.outcomes = outcomes
        self.asked = 0

    def check(self, address: str, port: int, probe: Probe, timeout: float) -> str | None:
        self.asked += 1
        return self.outcomes.pop(0) if self.outcomes else None


def test_monitor_counts_failures_in_a_row_at_the_interval() -> None:
    script = _Script(["500", "500", None, "500", "500", "500"])
    failures = [3]
    monitor = HealthMonitor(check=script, executor=InlineExecutor(), failures=lambda: failures[0])
    probe = Probe("http", "/healthz", interval=10)

    def live(now: float) -> str | None:
        return monitor.live("c1", "10.0.0.2", 8080, probe, now=now, since=100)

    assert live(105) is None and script.asked == 0  # the first check is one interval after it became healthy
    assert live(110) is None and script.asked == 1  # 500 (1)
    assert live(115) is None and script.asked == 1  # not due yet
    assert live(120) is None and live(130) is None and script.asked == 3  # 500 (2), then a pass resets
    assert live(140) is None and live(150) is None  # 500, 500
    assert live(160) == "health check http /healthz: 500 three times"
    assert live(170) is None  # said once; counting starts again
    assert monitor.live("c2", "10.0.0.3", 8080, Probe("process"), now=1e9, since=0) is None
    assert script.asked == 7


def test_monitor_reads_the_failures_key_at_each_failure() -> None:
    monitor = HealthMonitor(check=_Script(["refused"] * 5), executor=InlineExecutor(), failures=lambda: 1)
    assert monitor.live("c", "a", 1, Probe("port", interval=1), now=1, since=0) == \
        "health check port: refused once"


def test_monitor_forgets_removed_containers() -> None:
    monitor = HealthMonitor(check=_Script(["x", "x"]), executor=InlineExecutor(), failures=lambda: 2)
    probe = Probe("port", interval=1)
    assert monitor.live("c", "a", 1, probe, now=1, since=0) is None
    monitor.forget(set())
    assert monitor.live("c", "a", 1, probe, now=2, since=1) is None  # a fresh count: 1 failure, not 2


def test_readiness_never_waits_for_a_check_in_flight() -> None:
    started, release = threading.Event(), threading.Event()

    class Slow:
        def check(self, address: str, port: int, probe: Probe, timeout: float) -> str | None:
            started.set()
            release.wait(5)
            return None

    import concurrent.futures
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    monitor = HealthMonitor(check=Slow(), executor=pool, failures=lambda: 3)
    try:
        assert monitor.ready("c", "a", 1, Probe("http", "/")) is False
        assert started.wait(5)
        assert monitor.ready("c", "a", 1, Probe("http", "/")) is False  # in flight: not asked twice
        release.set()
        pool.shutdown(wait=True)
        assert monitor.ready("c", "a", 1, Probe("http", "/")) is True
    finally:
        release.set()
        pool.shutdown(wait=True)


# --- the reconciler --------------------------------------------------------------------------------

@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def _deploy(node: Node, health: HealthSettings | None) -> None:
    node.deploy("web")
    app = node.store.app("web")
    node.store.put_app(dataclasses.replace(app, health=health))  # type: ignore[arg-type]


def test_running_instance_failing_its_check_three_times_is_replaced_as_a_crash(node: Node) -> None:
    _deploy(node, HealthSettings(type="http", path="/healthz", interval=5))
    node.settle()
    [view] = node.manager.instances("web")
    assert view.state == "running" and len(node.routes[-1][0].upstreams) == 1
    sick = node.container("web", 0)
    node.health.all_ready = False
    for _ in range(2):
        node.clock.t += 5
        node.settle()
        [view] = node.manager.instances("web")
        assert view.state == "running" and view.container == sick.id[:12]  # two failures: kept
    node.health.ready_addresses = set()
    node.clock.t += 5
    node.manager.tick()
    assert all(v.state != "running" for v in node.manager.instances("web"))
    assert node.routes[-1][0].upstreams == ()  # off the router in the pass that found it
    node.health.all_ready = True
    node.settle()
    [view] = node.manager.instances("web")
    assert view.state == "running" and view.container != sick.id[:12] and view.restarts == 1
    assert view.last_crash == "health check http /healthz: connection refused three times"
    with pytest.raises(ContainerNotFound):
        node.backend.lookup(sick.id)  # killed and removed


def test_a_pass_between_failures_keeps_the_instance(node: Node) -> None:
    _deploy(node, HealthSettings(type="port", interval=5))
    node.settle()
    first = node.container("web", 0).id
    for ready in (False, False, True, False, False, True):
        node.health.all_ready = ready
        node.clock.t += 5
        node.settle()
    [view] = node.manager.instances("web")
    assert view.state == "running" and view.container == first[:12] and view.restarts == 0


def test_failures_key_sets_the_count(node: Node) -> None:
    node.config.set("fence", "health/failures", "1")
    _deploy(node, None)
    node.settle()
    node.health.all_ready = False
    node.clock.t += 10
    node.settle()
    [view] = node.manager.instances("web")
    assert view.restarts == 1 and view.last_crash == "health check port: connection refused once"


def test_http_check_that_never_passes_is_never_routed(node: Node) -> None:
    node.health.all_ready = False
    _deploy(node, HealthSettings(type="http", path="/healthz"))
    node.settle()
    assert node.states("web") == [(0, "starting", 1)]
    assert all(route[0].upstreams == () for route in node.routes)
    assert ("http") in {kind for _, kind in node.health.checks}
    node.clock.t += 11
    node.settle()
    [view] = node.manager.instances("web")
    assert view.restarts == 1 and view.last_crash == ("unhealthy: health check http /healthz did not pass "
                                                      "within 10 s (last: connection refused)")
    assert all(route[0].upstreams == () for route in node.routes)


def test_process_check_needs_no_answer_and_is_not_probed(node: Node) -> None:
    node.health.all_ready = False
    _deploy(node, HealthSettings(type="process"))
    node.settle()
    assert node.states("web") == [(0, "running", 1)]
    node.clock.t += 100
    node.settle()
    assert node.states("web") == [(0, "running", 1)] and node.health.checks == []


def test_an_instance_keeps_the_check_it_started_with(node: Node) -> None:
    _deploy(node, None)
    node.settle()
    app = node.store.app("web")
    node.store.put_app(dataclasses.replace(app, health=HealthSettings(type="http", path="/new")))  # type: ignore[arg-type]
    node.clock.t += 10
    node.settle()
    assert {kind for _, kind in node.health.checks} == {"port"}
