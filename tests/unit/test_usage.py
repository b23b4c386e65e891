"""Logs filters, stats, node top and /metrics on the fake backend: filters, CPU rates, access-log counts, bad values."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fence import labels
from fence.api import create_app
from fence.app_logs import LogQuery, app_log_entries, check_query, parse_since
from fence.backend.base import LogRecord
from fence.backend.fake import FakeBackend, FakeContainer
from fence.config import ConfigStore
from fence.errors import InvalidConfigValue
from fence.home import NodeHome
from fence.metrics import NodeMetrics
from fence.models import AppView, ContainerSpec, InstanceView
from fence.router.access_log import AccessLogCounter
from fence.stats import MIN_GAP, UsageSampler, app_stats, node_top
from fence.wiring import node_service

NODE = "n-usage"
T0 = 1_800_000_000.0


def _instance(backend: FakeBackend, app: str, process: str, index: int, release: int = 3) -> FakeContainer:
    spec = ContainerSpec(image="fence/stack:bookworm", user="1000",
                         labels=labels.owned(NODE, labels.ROLE_INSTANCE, app=app, process=process,
                                             instance=str(index), release=str(release)))
    container = backend.create(spec)
    container.start()
    return container


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(images=("fence/stack:bookworm",))


@pytest.fixture
def shop(backend: FakeBackend) -> dict[str, FakeContainer]:
    """web.0, web.1 and worker.0 of app shop, each with lines at known times on both streams."""
    found = {"web.0": _instance(backend, "shop", "web", 0), "web.1": _instance(backend, "shop", "web", 1),
             "worker.0": _instance(backend, "shop", "worker", 0)}
    for n, (tag, container) in enumerate(found.items()):
        container.log_records_extra.extend(
            LogRecord(time=T0 + 10 * i + n, stream="stderr" if i % 2 else "stdout", line=f"{tag} line {i}")
            for i in range(5))
    _instance(backend, "other", "web", 0).log_records_extra.append(LogRecord(time=T0, stream="stdout", line="x"))
    return found


def _lines(backend: FakeBackend, **query: object) -> list[str]:
    return [e.line for e in app_log_entries(backend=backend, node_id=NODE, app="shop", query=LogQuery(**query))]


# --- logs filters ------------------------------------------------------------------------------

def test_the_merged_log_is_in_time_order_with_every_field(backend: FakeBackend, shop: dict) -> None:
    entries = app_log_entries(backend=backend, node_id=NODE, app="shop", query=LogQuery())
    assert [e.line for e in entries] == [f"{tag} line {i}" for i in range(5) for tag in shop]
    first = entries[1]
    assert (first.app, first.type, first.instance, first.release, first.stream) == ("shop", "web", 1, 3, "stdout")
    assert first.time == "2027-01-15T08:00:01.000000Z"
    assert entries[3].stream == "stderr"


def test_each_filter_gives_exactly_the_expected_lines(backend: FakeBackend, shop: dict) -> None:
    assert _lines(backend, process="worker") == [f"worker.0 line {i}" for i in range(5)]
    assert _lines(backend, instance=1) == [f"web.1 line {i}" for i in range(5)]
    assert _lines(backend, process="web", instance=0) == [f"web.0 line {i}" for i in range(5)]
    assert _lines(backend, tail=2) == ["web.1 line 4", "worker.0 line 4"]
    assert _lines(backend, since=T0 + 31) == ["web.1 line 3", "worker.0 line 3", "web.0 line 4", "web.1 line 4",
                                             "worker.0 line 4"]
    assert _lines(backend, since=T0 + 31, tail=1, process="web") == ["web.1 line 4"]
    assert _lines(backend, tail=0) == [] and _lines(backend, process="clock") == []


def test_since_takes_durations_and_times() -> None:
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("30s", now=1000.0) == 970.0 and parse_since("2h", now=10_000.0) == 2800.0
    assert parse_since("1d", now=100_000.0) == 13_600.0
    assert parse_since("2027-01-15T08:00:00Z") == T0
    assert parse_since("2027-01-15T08:00:00") == T0  # no zone: UTC
    assert parse_since("2027-01-15T09:00:00+01:00") == T0


@pytest.mark.parametrize("text", ["", "10", "10x", "-5m", "ten minutes", "2027-13-01", "1e9s", "9999999999m"])
def test_bad_since_is_one_line(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_since(text)
    assert "--since" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("query", "says"), [
    (LogQuery(tail=-1), "--tail must be from 0"), (LogQuery(tail=100_001), "--tail must be from 0"),
    (LogQuery(instance=-1), "--instance must be"), (LogQuery(process="Web"), "--type 'Web' is not"),
    (LogQuery(process="a" * 40), "is not a process type"), (LogQuery(since=-1.0), "--since -1.0 is not a time")])
def test_bad_filters_are_refused_in_one_line(query: LogQuery, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_query(query)


@pytest.mark.parametrize(("args", "says"), [
    (["--since", "yesterday"], "--since 'yesterday'"), (["--tail", "-1"], "--tail"), (["--tail", "x"], "--tail"),
    (["--instance", "-2"], "--instance"), (["--type", "Web!"], "--type"),
    (["--json", "--follow"], "go with none of --follow"), (["--since", "1m", "--staging"], "go with none of")])
def test_the_cli_refuses_bad_log_filters_before_calling_the_daemon(tmp_path: Path, args: list[str],
                                                                   says: str) -> None:
    env = {**os.environ, "FENCE_HOME": str(tmp_path)}  # no daemon there: a bad value must fail first
    result = subprocess.run([sys.executable, "-m", "fence", "logs", "shop", *args], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_api_refuses_bad_filters_and_unknown_apps(home: NodeHome) -> None:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    try:
        client = TestClient(create_app(service, service.apps))
        answer = client.get("/v1/apps/shop/log-entries", params={"tail": "-3"})
        assert answer.status_code == 400 and "--tail must be from 0" in answer.json()["error"]["message"]
        assert client.get("/v1/apps/shop/log-entries", params={"type": "X"}).status_code == 400
        assert client.get("/v1/apps/shop/log-entries").json()["error"]["type"] == "AppNotFound"
        assert client.get("/v1/apps/shop/stats").json()["error"]["type"] == "AppNotFound"
    finally:
        service.close()


# --- stats and top -----------------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _busy(container: FakeContainer, cpu: float, memory: int) -> None:
    container.counters = dataclasses.replace(container.counters, cpu_seconds=cpu, memory_bytes=memory,
                                             net_rx_bytes=int(cpu * 10), net_tx_bytes=int(cpu * 20))


def test_cpu_percent_is_the_cpu_time_over_the_time_between_samples(backend: FakeBackend, shop: dict,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("fence.backend.fake.time.monotonic", lambda: now[0])
    clock = _Clock()
    sampler = UsageSampler(backend=backend, node_id=NODE, sleep=lambda s: (clock.sleep(s), now.__setitem__(0, now[0] + s)))
    web0 = shop["web.0"]
    _busy(web0, 10.0, 50 << 20)
    sampler._stop.set()  # no thread in this test
    # No baseline: it samples twice, MIN_GAP apart (the counters did not move in between).
    [(sample, cpu)] = sampler.rates([web0.id]).values()
    assert clock.slept == [MIN_GAP] and cpu == 0.0 and sample.memory_bytes == 50 << 20
    now[0] += 2.0
    _busy(web0, 11.5, 60 << 20)  # 1.5 CPU seconds in 2 s: 75 %
    [(sample, cpu)] = sampler.rates([web0.id]).values()
    assert cpu == 75.0 and clock.slept == [MIN_GAP] and sample.cpu_seconds == 11.5
    now[0] += 60.0  # the baseline is too old to say anything about now: sampled twice again
    assert next(iter(sampler.rates([web0.id]).values()))[1] == 0.0 and clock.slept == [MIN_GAP, MIN_GAP]


def test_app_stats_and_node_top(backend: FakeBackend, shop: dict) -> None:
    for n, container in enumerate(shop.values()):
        _busy(container, float(n), (n + 1) << 20)
    instances = tuple(InstanceView(index=int(tag.split(".")[1]), state="running", container=c.id[:12],
                                   host_port=None, restarts=2, release=3, uptime=61.0, process=tag.split(".")[0])
                      for tag, c in shop.items())
    view = AppView(name="shop", url="u", urls=("u",), state="started", instances=2, running=2, memory_mib=64,
                   release=3, droplet=None, stack_image=None, env={}, instance_list=instances)
    sampler = UsageSampler(backend=backend, node_id=NODE, sleep=lambda s: None)
    sampler._stop.set()
    stats = app_stats(view=view, sampler=sampler)
    assert [(s.type, s.index, s.memory_bytes, s.restarts, s.uptime) for s in stats] == [
        ("web", 0, 1 << 20, 2, 61.0), ("web", 1, 2 << 20, 2, 61.0), ("worker", 0, 3 << 20, 2, 61.0)]
    assert stats[2].net_tx_bytes == 40 and stats[0].memory_limit_bytes == 256 << 20
    top = node_top(backend=backend, node_id=NODE, sampler=sampler)
    assert [(u.app, u.instances, u.memory_bytes) for u in top] == [("shop", 3, 6 << 20), ("other", 1, 0)]


# --- router access log -------------------------------------------------------------------------

def test_access_log_counts_by_app_and_status_incrementally(tmp_path: Path) -> None:
    host_log = tmp_path / "access.log"
    host_log.write_text("shop.localhost 200 0.001 127.0.0.1 [x] \"GET / HTTP/1.1\" 5 \"-\" \"-\"\n")
    counter = AccessLogCounter(host_log=host_log)
    assert counter.counts() == {}  # counted from the first look on
    with host_log.open("a") as fh:
        fh.write("shop.localhost 200 0.002 1.2.3.4 [x] \"GET /a HTTP/1.1\" 5 \"-\" \"-\"\n"
                 "shop.localhost 503 0.000 1.2.3.4 [x] \"GET /b HTTP/1.1\" 5 \"-\" \"-\"\n"
                 "_ 404 0.000 1.2.3.4 [x] \"GET / HTTP/1.1\" 5 \"-\" \"-\"\ngarbage\nblog.localhost 20")
    assert counter.counts() == {("shop", "200"): 1, ("shop", "503"): 1, ("", "404"): 1}
    with host_log.open("a") as fh:
        fh.write("0 0.1 1.2.3.4 [x] \"GET / HTTP/1.1\" 5 \"-\" \"-\"\n")  # the half line, finished
    assert counter.counts()[("blog", "200")] == 1
    host_log.write_text("shop.localhost 500 0.1 x\n")  # rotated by truncation: read from the start
    assert counter.counts()[("shop", "500")] == 1


# --- metrics -----------------------------------------------------------------------------------

def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_parse_with_names_types_and_moving_values(home: NodeHome) -> None:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    try:
        client = TestClient(create_app(service, service.apps))
        first = _families(client.get("/metrics").text)
        expected = {"fence_instance_cpu_seconds": "counter", "fence_instance_memory_bytes": "gauge",
                    "fence_instance_memory_limit_bytes": "gauge", "fence_instance_restarts": "counter",
                    "fence_instance_healthy": "gauge", "fence_app_instances_desired": "gauge",
                    "fence_app_instances_running": "gauge", "fence_staging_duration_seconds": "histogram",
                    "fence_router_requests": "counter", "fence_drain_dropped_lines": "counter",
                    "fence_api_request_duration_seconds": "histogram"}
        assert {name: first[name].type for name in expected} == expected
        client.get("/v1/info")
        client.get("/v1/apps/nope")
        second = _families(client.get("/metrics").text)
        counts = {tuple(sorted(s.labels.items())): s.value for s in second["fence_api_request_duration_seconds"].samples
                  if s.name.endswith("_count")}
        assert counts[(("method", "GET"), ("route", "/v1/info"))] == 1
        assert counts[(("method", "GET"), ("route", "/v1/apps/{name}"))] == 1
        assert counts[(("method", "GET"), ("route", "/metrics"))] == 1
    finally:
        service.close()


def test_drain_drops_come_from_registered_sources_and_a_broken_one_is_skipped() -> None:
    class _Service:
        backend = FakeBackend()
        node_id = NODE

        class apps:
            @staticmethod
            def views() -> list[AppView]:
                return []

        class manager:
            @staticmethod
            def running_ids() -> list[str]:
                return []

    metrics = NodeMetrics(service=_Service(), router_requests=None)
    drops = {"papertrail": 3}
    metrics.add_drain_drops(lambda: drops)
    metrics.add_drain_drops(lambda: 1 / 0)
    from prometheus_client import generate_latest

    def dropped() -> dict[str, float]:
        family = _families(generate_latest(metrics.registry).decode())["fence_drain_dropped_lines"]
        return {s.labels["drain"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert dropped() == {"papertrail": 3}
    drops["papertrail"] = 7
    assert dropped() == {"papertrail": 7}


@pytest.mark.parametrize("value", ["9101", "localhost:9101", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000",
                                   "300.0.0.1:80", "::1:9101", "127.0.0.1:80:1", "x" * 70])
def test_bad_metrics_listen_is_refused(tmp_path: Path, value: str) -> None:
    store = ConfigStore(host_file=tmp_path / "config.yml")
    with pytest.raises(InvalidConfigValue) as caught:
        store.set("fence", "metrics/listen", value)
    assert "metrics/listen" in caught.value.message and "\n" not in caught.value.message
    assert store.fence("metrics/listen") == ""


@pytest.mark.parametrize("value", ["127.0.0.1:9101", "0.0.0.0:65535", "[::1]:9101", ""])
def test_good_metrics_listen_is_kept(tmp_path: Path, value: str) -> None:
    store = ConfigStore(host_file=tmp_path / "config.yml")
    store.set("fence", "metrics/listen", value)
    assert store.fence("metrics/listen") == value


def test_baselines_kept_from_the_start_spare_the_first_request_its_wait(backend: FakeBackend, shop: dict,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("fence.backend.fake.time.monotonic", lambda: now[0])
    clock = _Clock()
    web0 = shop["web.0"]
    sampler = UsageSampler(backend=backend, node_id=NODE, sleep=clock.sleep, running=lambda: [web0.id])
    sampler._stop.set()  # ticked by hand
    _busy(web0, 10.0, 50 << 20)
    sampler.tick()  # the background tick: the CPU counter alone
    now[0] += 4.0
    _busy(web0, 12.0, 50 << 20)  # 2 CPU seconds in 4 s: 50 %
    [(sample, cpu)] = sampler.rates([web0.id]).values()
    assert cpu == 50.0 and clock.slept == [] and sample.memory_bytes == 50 << 20
    now[0] += 0.1  # a request right after another still has a baseline MIN_GAP older
    _busy(web0, 12.1, 50 << 20)
    [(sample, cpu)] = sampler.rates([web0.id]).values()
    assert cpu == round(100 * 2.1 / 4.1, 2) and clock.slept == []


def test_the_sampler_thread_ticks_until_closed(backend: FakeBackend, shop: dict) -> None:
    ticked = threading.Event()

    def running() -> list[str]:
        ticked.set()
        return [shop["web.0"].id]
    sampler = UsageSampler(backend=backend, node_id=NODE, tick=0.01, running=running)
    sampler.start()
    assert ticked.wait(10)
    thread = sampler._thread
    sampler.close()
    assert thread is not None and not thread.is_alive()
