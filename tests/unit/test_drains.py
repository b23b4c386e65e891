"""Log drains without an engine: URL and name rules, config keys and the manifest's drain:, framing, the shipper's bounded buffer, backoff and drop count, the store, the hub and the API."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.config import ConfigStore
from fence.drains.frame import LogEvent, ndjson, octet_counted, rfc5424
from fence.drains.hub import DrainHub
from fence.drains.models import DrainRecord
from fence.drains.senders import SendFailed
from fence.drains.shipper import OVERHEAD, DrainShipper
from fence.drains.urls import check_drain_name, parse_drain_url
from fence.errors import (
    AppNotFound,
    InvalidConfigValue,
    InvalidName,
    ManifestInvalid,
    UsageError,
)
from fence.home import NodeHome
from fence.models import AppRecord
from fence.staging.manifest import parse_manifest
from fence.store import StateStore
from fence.wiring import node_service

# --- URLs and names ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "scheme", "host", "port"), [
    ("syslog://logs.example.com:514", "syslog", "logs.example.com", 514),
    ("syslog+udp://127.0.0.1:5140", "syslog+udp", "127.0.0.1", 5140),
    ("syslog+tls://[::1]:6514", "syslog+tls", "::1", 6514),
    ("http://127.0.0.1:8000/logs", "http", "127.0.0.1", 8000),
    ("https://user:token@logs.example.com/in?app=x", "https", "logs.example.com", 443),
])
def test_drain_urls_of_each_scheme_parse(url: str, scheme: str, host: str, port: int) -> None:
    parsed = parse_drain_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.url) == (scheme, host, port, url)


def test_a_drain_url_is_shown_without_its_credentials() -> None:
    assert parse_drain_url("https://user:token@logs.example.com/in").shown == "https://***@logs.example.com/in"


@pytest.mark.parametrize(("url", "fragment"), [
    ("", "give a URL"),
    ("logs.example.com:514", "the scheme must be one of"),
    ("ftp://logs.example.com:21", "the scheme must be one of"),
    ("syslog://logs.example.com", "give the port"),
    ("syslog://logs.example.com:99999", "from 1 to 65535"),
    ("syslog://logs.example.com:0", "from 1 to 65535"),
    ("syslog://logs.example.com:x", "from 1 to 65535"),
    ("syslog://logs.example.com:514/path", "no path or query"),
    ("syslog://logs.example.com:514?x=1", "no path or query"),
    ("syslog://user@logs.example.com:514", "no user or password"),
    ("syslog://bad_host:514", "DNS name or an IP address"),
    ("http://-bad.example.com/", "DNS name or an IP address"),
    ("http://a b/", "spaces or control characters"),
    ("http://logs.example.com/\x00", "spaces or control characters"),
    ("http://logs.example.com/" + "x" * 3000, "spaces or control characters or exceed"),
    ("https://logs.example.com/#frag", "no #fragment"),
])
def test_bad_drain_urls_are_refused_in_one_line(url: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_drain_url(url, what="drain 'audit'")
    assert fragment in caught.value.message and "\n" not in caught.value.message
    assert caught.value.message.startswith("drain 'audit'") or "drain 'audit'" in caught.value.message
    assert len(caught.value.message) < 300


@pytest.mark.parametrize("name", ["", "Audit", "-audit", "a" * 64, "a b", "../x", "a_b"])
def test_bad_drain_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName, match="drain name"):
        check_drain_name(name)


# --- config keys ------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> ConfigStore:
    return ConfigStore(host_file=tmp_path / "config.yml")


def test_node_drains_are_a_list_of_checked_urls(config: ConfigStore) -> None:
    assert config.push("fence", "logs/drains", "syslog://127.0.0.1:514").value == ["syslog://127.0.0.1:514"]
    config.push("fence", "logs/drains", "https://logs.example.com/in")
    assert config.fence("logs/drains") == ["syslog://127.0.0.1:514", "https://logs.example.com/in"]


@pytest.mark.parametrize(("key", "raw"), [
    ("logs/drains", "ftp://logs.example.com"),
    ("logs/drains", "syslog://logs.example.com"),
    ("logs/drain_buffer", "0"),
    ("logs/drain_buffer", "2G"),
    ("logs/drain_buffer", "lots"),
    ("logs/ca_file", "relative/ca.pem"),
    ("logs/ca_file", "/etc/../ca.pem"),
    ("logs/drain_loopback", "maybe"),
])
def test_bad_drain_config_values_are_refused_and_nothing_changes(config: ConfigStore, tmp_path: Path,
                                                                  key: str, raw: str) -> None:
    config.set("fence", "staging/timeout", "300")
    before = (tmp_path / "config.yml").read_bytes()
    with pytest.raises(InvalidConfigValue) as caught:
        if key == "logs/drains":
            config.push("fence", key, raw)
        else:
            config.set("fence", key, raw)
    assert key in caught.value.message and "\n" not in caught.value.message
    assert (tmp_path / "config.yml").read_bytes() == before


# --- the manifest's drain: --------------------------------------------------------------------


def test_the_manifest_names_drains_in_stackatos_form() -> None:
    manifest = parse_manifest(b"name: shop\ndrain:\n  audit: syslog://127.0.0.1:514\n"
                              b"  search: https://logs.example.com/in\n", source_name="stackato.yml")
    assert manifest.drains == {"audit": "syslog://127.0.0.1:514", "search": "https://logs.example.com/in"}


@pytest.mark.parametrize(("text", "fragment"), [
    (b"drain: syslog://127.0.0.1:514\n", "drain must be a mapping"),
    (b"drain:\n  - syslog://127.0.0.1:514\n", "drain must be a mapping"),
    (b"drain:\n  audit: ftp://x\n", "line 2"),
    (b"drain:\n  audit: syslog://x\n", "give the port"),
    (b"drain:\n  Audit: syslog://x:1\n", "drain name"),
    (b"drain:\n  audit: [1]\n", "drain.audit must be a string"),
    (b"drain:\n" + b"".join(b"  d%d: syslog://x:1\n" % i for i in range(17)), "at most 16"),
])
def test_bad_manifest_drains_are_refused_with_their_line(text: bytes, fragment: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(text, source_name="stackato.yml")
    assert fragment in caught.value.message and "\n" not in caught.value.message


# --- framing ----------------------------------------------------------------------------------

EVENT = LogEvent(app="shop", process="worker", instance=2, release=7, stream="stderr", line='said "hi" ] \\ ok',
                 at=1_700_000_000.25)


def test_syslog_messages_are_rfc5424_with_fence_structured_data() -> None:
    message = rfc5424(EVENT, hostname="node-a").decode()
    assert re.fullmatch(r'<11>1 2023-11-14T22:13:20\.250000Z node-a shop worker\.2 stderr '
                        r'\[fence@32473 app="shop" type="worker" instance="2" release="7" stream="stderr"\] '
                        r'said "hi" \] \\ ok', message), message
    staging = LogEvent(app="shop", process="staging", instance=None, release=None, stream="stdout", line="x", at=0)
    assert rfc5424(staging, hostname="h").decode().startswith(
        '<14>1 1970-01-01T00:00:00.000000Z h shop staging stdout [fence@32473 app="shop" type="staging" '
        'instance="" release="" stream="stdout"] x')


def test_structured_data_values_escape_quotes_backslashes_and_brackets() -> None:
    odd = LogEvent(app='a"]\\', process="web", instance=0, release=1, stream="stdout", line="x", at=0)
    assert 'app="a\\"\\]\\\\"' in rfc5424(odd, hostname="h").decode()


def test_octet_counting_prefixes_the_byte_length() -> None:
    assert octet_counted("héllo".encode()) == b"6 h\xc3\xa9llo"


def test_ndjson_lines_carry_every_field() -> None:
    line = ndjson(EVENT, hostname="node-a")
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"time": "2023-11-14T22:13:20.250000Z", "node": "node-a", "app": "shop",
                                "type": "worker", "instance": 2, "release": 7, "stream": "stderr",
                                "line": 'said "hi" ] \\ ok'}


# --- the shipper ------------------------------------------------------------------------------


class FakeSender:
    """Fails while ``down`` is set; blocks while ``hold`` is clear; records what it delivered."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.down = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        self.attempts = 0

    def send(self, events: list[LogEvent]) -> None:
        self.attempts += 1
        self.hold.wait()
        if self.down.is_set():
            raise SendFailed("ConnectionRefusedError: [Errno 111] Connection refused")
        self.delivered.extend(e.line for e in events)

    def close(self) -> None:
        pass


def _event(line: str) -> LogEvent:
    return LogEvent(app="shop", process="web", instance=0, release=1, stream="stdout", line=line, at=time.time())


def _until(check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def test_a_shipper_delivers_lines_in_order() -> None:
    sender = FakeSender()
    shipper = DrainShipper(name="d", app="shop", url="syslog://x:1", sender=sender, capacity=1 << 20)
    for i in range(1000):
        shipper.put(_event(f"line {i}"))
    _until(lambda: len(sender.delivered) == 1000)
    assert sender.delivered == [f"line {i}" for i in range(1000)]
    health = shipper.health()
    assert (health.state, health.sent, health.dropped, health.error) == ("up", 1000, 0, None)
    shipper.close()


def test_put_never_waits_for_a_stuck_drain_and_drops_the_oldest_lines_counted() -> None:
    sender = FakeSender()
    sender.hold.clear()  # the drain takes a batch and never comes back
    capacity = 10 * (len("line 0000") + OVERHEAD)
    shipper = DrainShipper(name="d", app="shop", url="syslog://x:1", sender=sender, capacity=capacity)
    shipper.put(_event("line 0000"))
    _until(lambda: sender.attempts == 1)
    for i in range(1, 10_000):
        shipper.put(_event(f"line {i:04d}"))  # would hang here if put waited for the sender
    health = shipper.health()
    assert health.queued == 10 and health.dropped == 10_000 - 1 - 10
    sender.hold.set()
    _until(lambda: len(sender.delivered) == 11)
    assert sender.delivered == ["line 0000"] + [f"line {i:04d}" for i in range(9990, 10_000)]  # the newest kept
    shipper.close()


def test_a_down_drain_reports_its_error_retries_with_backoff_and_resumes() -> None:
    sender = FakeSender()
    sender.down.set()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 6:
            sender.down.clear()
    shipper = DrainShipper(name="d", app="shop", url="syslog://x:1", sender=sender, capacity=1 << 20, sleep=sleep)
    shipper.put(_event("kept while down"))
    _until(lambda: sender.delivered == ["kept while down"])
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]  # doubling, capped
    assert shipper.health().state == "up" and shipper.health().error is None and shipper.health().sent == 1
    shipper.close()


def test_a_down_drain_shows_its_error_and_time() -> None:
    sender = FakeSender()
    sender.down.set()
    shipper = DrainShipper(name="d", app="shop", url="syslog://x:1", sender=sender, capacity=1 << 20,
                           sleep=lambda s: time.sleep(0.01))
    shipper.put(_event("x"))
    _until(lambda: shipper.health().state == "down")
    health = shipper.health()
    assert "Connection refused" in (health.error or "") and health.error_at
    shipper.close()


# --- the store --------------------------------------------------------------------------------


def _record(name: str) -> AppRecord:
    return AppRecord(name=name, instances=1, memory_mib=256, env={}, started=True, release=None,
                     health_timeout=None, urls=(), created_at="t")


def test_the_store_keeps_drains_per_app_and_forgets_them_with_the_app(tmp_path: Path) -> None:
    store = StateStore(host_db=tmp_path / "s.db")
    store.put_app(_record("shop"))
    drain = DrainRecord(app="shop", name="audit", url="syslog://127.0.0.1:514", created_at="t")
    assert store.put_drain(drain) is True
    assert store.put_drain(DrainRecord(app="shop", name="audit", url="syslog://127.0.0.1:515", created_at="t")) is False
    assert [d.url for d in store.drains("shop")] == ["syslog://127.0.0.1:515"]
    with pytest.raises(AppNotFound):
        store.put_drain(DrainRecord(app="nope", name="audit", url="syslog://x:1", created_at="t"))
    assert store.delete_drain("shop", "audit") and not store.delete_drain("shop", "audit")
    store.put_drain(drain)
    store.delete_app("shop")
    assert store.drains() == []
    store.close()


# --- the hub ----------------------------------------------------------------------------------


class Source:
    def __init__(self) -> None:
        self.records: list[DrainRecord] = []
        self.node: list[str] = []

    def drains(self) -> list[DrainRecord]:
        return list(self.records)

    def node_drains(self) -> list[str]:
        return list(self.node)

    def buffer_bytes(self) -> int:
        return 1 << 20

    def ca_file(self) -> None:
        return None

    def loopback_ok(self) -> bool:
        return True


def test_the_hub_sends_an_apps_lines_to_its_drains_and_the_nodes_only() -> None:
    source, senders = Source(), {}

    def make_sender(url, **_):
        return senders.setdefault(url.url, FakeSender())
    hub = DrainHub(source=source, hostname="h", make_sender=make_sender)
    source.records = [DrainRecord(app="shop", name="a", url="syslog://127.0.0.1:1", created_at="t")]
    source.node = ["http://127.0.0.1:2/", "ftp://not-a-drain"]  # a hand-edited bad URL is left out
    hub.sync()
    assert hub.wants("shop") and hub.wants("other")
    hub.emit(_event("from shop"))
    hub.tap(app="other", process="staging")("-----> from other's staging")
    _until(lambda: len(senders["http://127.0.0.1:2/"].delivered) == 2)
    assert senders["syslog://127.0.0.1:1"].delivered == ["from shop"]
    assert {(h.app, h.name) for h in hub.health()} == {("shop", "a"), (None, "node-1")}
    source.node = []
    hub.sync()
    assert not hub.wants("other") and hub.wants("shop")
    hub.close()


def test_a_phase_tap_reads_a_node_drain_configured_a_moment_before() -> None:
    """CI saw a node drain set by `kato config push` just before a push get none of its staging
    lines: the hub read logs/drains only at the taps' next pass (every 2 s), after the staging."""
    source, senders = Source(), {}
    hub = DrainHub(source=source, hostname="h", make_sender=lambda url, **_: senders.setdefault(url.url, FakeSender()))
    hub.sync()
    source.node = ["http://127.0.0.1:2/"]  # kato config push logs/drains, between two passes
    hub.tap(app="shop", process="cron")("a cron line: the hub as last synced, no drain yet")
    hub.tap(app="shop", process="staging", fresh=True)("-----> the staging's first line")
    _until(lambda: len(senders["http://127.0.0.1:2/"].delivered) == 1)
    assert senders["http://127.0.0.1:2/"].delivered == ["-----> the staging's first line"]
    hub.close()


# --- the API on the fake backend --------------------------------------------------------------


@pytest.fixture
def api(home: NodeHome) -> TestClient:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    service.store.put_app(_record("shop"))
    service.config.set("fence", "logs/drain_loopback", "true")
    yield TestClient(create_app(service, service.apps))
    service.close()


def test_drains_are_added_listed_and_deleted_through_the_api(api: TestClient) -> None:
    added = api.put("/v1/apps/shop/drains/audit", json={"url": "syslog://127.0.0.1:9"})
    assert added.status_code == 200 and added.json()["url"] == "syslog://127.0.0.1:9"
    listed = api.get("/v1/apps/shop/drains").json()
    assert [(d["name"], d["app"]) for d in listed] == [("audit", "shop")]
    assert api.get("/v1/info").json()["drains"][0]["name"] == "audit"
    assert api.delete("/v1/apps/shop/drains/audit").status_code == 200
    assert api.get("/v1/apps/shop/drains").json() == []


@pytest.mark.parametrize(("path", "body", "status", "fragment"), [
    ("/v1/apps/shop/drains/audit", {"url": "ftp://x"}, 400, "the scheme must be one of"),
    ("/v1/apps/shop/drains/Bad", {"url": "syslog://x:1"}, 400, "drain name"),
    ("/v1/apps/nope/drains/audit", {"url": "syslog://x:1"}, 404, "nope"),
    ("/v1/apps/shop/drains/audit", {"url": 5}, 422, "url"),
    ("/v1/apps/shop/drains/audit", {"url": "syslog://x:1", "extra": 1}, 422, "extra"),
])
def test_bad_drain_requests_answer_one_line(api: TestClient, path: str, body: dict, status: int, fragment: str) -> None:
    answer = api.put(path, json=body)
    assert answer.status_code == status
    assert fragment in answer.json()["error"]["message"] and "\n" not in answer.json()["error"]["message"]


def test_deleting_a_drain_that_is_not_there_says_so(api: TestClient) -> None:
    answer = api.delete("/v1/apps/shop/drains/audit")
    assert answer.status_code == 400 and "has no drain named 'audit'" in answer.json()["error"]["message"]


def test_the_cli_refuses_a_bad_url_before_calling_the_daemon(home: NodeHome) -> None:
    from click.testing import CliRunner

    from fence.cli import fence
    result = CliRunner().invoke(fence, ["drain", "add", "shop", "audit", "ftp://x"])  # no daemon runs
    assert isinstance(result.exception, UsageError) and "the scheme must be one of" in result.exception.message


# --- the instance taps (fake backend) ---------------------------------------------------------


def test_the_taps_follow_running_instances_of_apps_with_drains_only() -> None:
    from fence import labels
    from fence.drains.taps import InstanceTaps
    from fence.models import ContainerSpec, Limits

    backend = FakeBackend()
    node = "n-test"
    events: list[LogEvent] = []

    class Recording(FakeSender):
        def send(self, batch: list[LogEvent]) -> None:
            events.extend(batch)

    def make(app: str, index: int) -> object:
        spec = ContainerSpec(image="fence/stack:bookworm", user="1000", command=("sleep", "infinity"),
                             limits=Limits(memory_bytes=64 * 1024 * 1024, pids=64),
                             labels=labels.owned(node, labels.ROLE_INSTANCE, app=app, instance=index, release=4,
                                                 process="worker"))
        container = backend.create(spec)
        container.start()
        return container
    source = Source()
    source.records = [DrainRecord(app="shop", name="a", url="syslog://127.0.0.1:1", created_at="t")]
    hub = DrainHub(source=source, hostname="h", make_sender=lambda url, **_: Recording())
    taps = InstanceTaps(backend=backend, hub=hub, node_id=node)
    taps.pass_once()  # the daemon's first pass: instances running then are followed from now on
    shop = make("shop", 1)  # started after it: followed from their first line
    other = make("other", 0)
    shop.log_lines.append("from shop")  # type: ignore[attr-defined]
    shop.err_lines.append("shop's error")  # type: ignore[attr-defined]
    other.log_lines.append("from other")  # type: ignore[attr-defined]
    taps.pass_once()
    _until(lambda: len(events) == 2)
    assert {(e.app, e.process, e.instance, e.release, e.stream, e.line) for e in events} == {
        ("shop", "worker", 1, 4, "stdout", "from shop"), ("shop", "worker", 1, 4, "stderr", "shop's error")}
    taps.close()
    hub.close()


# --- release-phase, cron and log-file lines reach the drains ----------------------------------


def test_release_phase_and_cron_output_reach_a_node_drain(home: NodeHome) -> None:
    from tests.drain_kit import NdjsonReceiver
    from tests.unit.test_release_phase import _app_record, _release_program, _staged

    receiver = NdjsonReceiver()
    backend = FakeBackend()
    backend.programs["bash"] = _release_program
    service = node_service(home, backend=backend, router=None)
    try:
        # No hub.sync() here: the release phase reads the drains at its start (fresh), as a staging
        # does, so a node drain configured a moment before gets its first line.
        service.config.push("fence", "logs/drains", f"http://127.0.0.1:{receiver.port}/in")
        droplet = _staged(service, "ok", "echo migrated")
        service.apps._release.run(_app_record("ok"), droplet, on_line=lambda line: None)
        service.cron._log("ok", "----- cron said this")
        _until(lambda: {"migrated", "----- cron said this"} <= {r["line"] for r in receiver.records})
        [migrated] = [r for r in receiver.records if r["line"] == "migrated"]
        assert (migrated["app"], migrated["type"], migrated["release"], migrated["instance"]) == ("ok", "release", 1, None)
        [cron] = [r for r in receiver.records if r["line"] == "----- cron said this"]
        assert (cron["app"], cron["type"]) == ("ok", "cron")
    finally:
        service.close()
        receiver.stop()


def test_a_log_file_passes_every_line_to_its_tap_past_its_cap_too(tmp_path: Path) -> None:
    from fence.logfile import LogFile

    tapped: list[str] = []
    with LogFile(tmp_path / "x.log", max_bytes=10, tap=tapped.append) as write:
        for i in range(5):
            write(f"line {i}")
    assert tapped == [f"line {i}" for i in range(5)]
    assert (tmp_path / "x.log").read_text().splitlines() == ["line 0", "fence: log cut here"]


# --- drains may not point at the node itself unless the admin allows it -----------------------


@pytest.mark.parametrize("url", ["syslog://127.0.0.1:514", "http://localhost/", "syslog+udp://[::1]:514",
                                 "http://169.254.169.254/latest", "syslog://0.0.0.0:514"])
def test_an_apps_drain_to_the_node_itself_is_refused_unless_allowed(api: TestClient, home: NodeHome, url: str) -> None:
    from fence.wiring import config_store

    config_store(home).set("fence", "logs/drain_loopback", "false")
    answer = api.put("/v1/apps/shop/drains/audit", json={"url": url})
    assert answer.status_code == 400, answer.json()
    assert "is this node itself" in answer.json()["error"]["message"] and "logs/drain_loopback" in answer.json()["error"]["message"]


def test_a_drain_whose_name_resolves_to_the_node_itself_fails_at_send() -> None:
    from fence.drains.senders import sender_for

    sender = sender_for(parse_drain_url("syslog://localhost:9"), hostname="h", timeout=1, ca_file=None, own_host=False)
    with pytest.raises(SendFailed, match="this node's own address"):
        sender.send([_event("x")])
