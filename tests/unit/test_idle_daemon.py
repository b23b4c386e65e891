"""An idle daemon sleeps (issue 18's CPU target) without losing what it watches: engine events wake
the reconciler, liveness checks keep their interval, the readiness watch sleeps until a start."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from fence import labels
from fence.backend.fake import FakeBackend
from fence.drains.models import DrainRecord
from fence.models import ContainerSpec, Limits
from fence.running.health import HealthMonitor, Probe
from tests.unit.test_drains import FakeSender, Source
from tests.unit.test_instance_manager import InlineExecutor, Node

NEVER = 3600.0  # a pass interval no test waits for: only a wake (an event, a check's outcome) brings a pass


def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def _running(node: Node, app: str, restarts: int) -> bool:
    views = node.manager.instances(app)
    return len(views) == 1 and views[0].state == "running" and views[0].restarts == restarts


@pytest.fixture
def node(tmp_path: Path) -> Node:
    built = Node(tmp_path)
    yield built
    built.manager.shutdown()


def test_a_steady_node_sees_a_crash_through_the_engines_events(node: Node) -> None:
    node.deploy("web")
    node.settle()
    assert _running(node, "web", 0) and node.manager._steady  # noqa: SLF001 - the state the loop sleeps on
    node.manager.run_in_background(interval=NEVER, steady_interval=NEVER)
    _until(lambda: node.manager._loop.following)  # noqa: SLF001
    node.container("web", 0).exit(1)  # the engine says "die": the reconciler passes at once
    _until(lambda: _running(node, "web", 1))
    [view] = node.manager.instances("web")
    assert view.last_crash == "exited 1"


def test_a_removed_container_is_seen_through_the_events_too(node: Node) -> None:
    node.deploy("web")
    node.settle()
    node.manager.run_in_background(interval=NEVER, steady_interval=NEVER)
    _until(lambda: node.manager._loop.following)  # noqa: SLF001
    node.container("web", 0).destroy()  # `docker rm -f` behind fence's back
    _until(lambda: _running(node, "web", 1))
    assert node.manager.instances("web")[0].last_crash == "the container vanished"


def test_without_the_event_stream_the_reconciler_passes_every_interval(node: Node) -> None:
    node.deploy("web")
    node.settle()
    node.manager.run_in_background(interval=0.05, steady_interval=NEVER)
    _until(lambda: node.manager._loop.following)  # noqa: SLF001
    node.backend.events_broken = True  # the engine restarts: the stream ends and cannot be opened again
    node.backend.end_events()
    _until(lambda: not node.manager._loop.following)  # noqa: SLF001
    node.container("web", 0).exit(2)  # no event tells it: the 0.05 s passes see it
    _until(lambda: _running(node, "web", 1))
    node.backend.events_broken = False  # the engine is back: the stream is opened again
    _until(lambda: node.manager._loop.following)  # noqa: SLF001


def test_a_steady_node_still_runs_liveness_checks_and_replaces_a_failing_instance(node: Node) -> None:
    node.config.set("fence", "health/failures", "1")
    node.deploy("web")
    node.settle()
    first = node.container("web", 0).id
    checks = len(node.health.checks)
    node.manager.run_in_background(interval=NEVER, steady_interval=NEVER)
    node.health.all_ready = False
    node.clock.t += 11  # the first liveness check (every 10 s) is due; no pass comes by itself
    _until(lambda: len(node.health.checks) > checks)
    # The failed check's verdict wakes the reconciler, which kills and replaces the instance.
    _until(lambda: any(v.container != first[:12] for v in node.manager.instances("web")))
    assert any((v.last_crash or "").startswith("health check port: connection refused once")
               for v in node.manager.instances("web"))


def test_the_readiness_watch_sleeps_until_an_instance_starts() -> None:
    looks: list[float] = []
    starting: list[tuple[str, str, int, Probe]] = []
    looked = threading.Event()

    def now_starting() -> list[tuple[str, str, int, Probe]]:
        looks.append(time.monotonic())
        looked.set()
        return list(starting)

    class Refused:
        def check(self, address: str, port: int, probe: Probe, timeout: float) -> str:
            return "connection refused"
    monitor = HealthMonitor(check=Refused(), executor=InlineExecutor(), failures=lambda: 3)
    stop = threading.Event()
    watch = threading.Thread(target=monitor.watch, args=(now_starting,),
                             kwargs={"stop": stop, "interval": 0.001, "idle": NEVER}, daemon=True)
    watch.start()
    try:
        assert looked.wait(10)
        time.sleep(0.3)  # a watch that polled every 0.001 s would have looked hundreds of times
        assert len(looks) == 1
        starting.append(("c1", "10.0.0.2", 8080, Probe()))
        monitor.nudge()  # an instance began starting: it is looked at every interval from now
        _until(lambda: len(looks) >= 20)
        assert monitor.last_failure("c1") == "connection refused"
        starting.clear()
        count = len(looks)
        time.sleep(0.3)
        assert len(looks) <= count + 1  # nothing starts: it sleeps again
    finally:
        stop.set()
        monitor.nudge()
        watch.join(10)
    assert not watch.is_alive()


class CountingBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.listings = 0

    def list_info(self, labels: object) -> list:  # type: ignore[override]
        self.listings += 1
        return super().list_info(labels)  # type: ignore[arg-type]


def test_the_drain_taps_ask_the_engine_nothing_while_no_drain_is_set() -> None:
    from fence.drains.hub import DrainHub
    from fence.drains.taps import InstanceTaps

    backend = CountingBackend()
    events: list = []

    class Recording(FakeSender):
        def send(self, batch: list) -> None:
            events.extend(batch)
    spec = ContainerSpec(image="fence/stack:bookworm", user="1000", command=("sleep", "infinity"),
                         limits=Limits(memory_bytes=64 * 1024 * 1024, pids=64),
                         labels=labels.owned("n-test", labels.ROLE_INSTANCE, app="shop", instance=0, release=1))
    source = Source()
    hub = DrainHub(source=source, hostname="h", make_sender=lambda url, **_: Recording())
    taps = InstanceTaps(backend=backend, hub=hub, node_id="n-test")
    try:
        taps.pass_once()
        taps.pass_once()
        assert backend.listings == 0
        # A drain appears; an instance started after the last skipped pass is read from its start.
        container = backend.create(spec)
        container.start()
        container.log_lines.append("first line")  # type: ignore[attr-defined]
        source.records = [DrainRecord(app="shop", name="a", url="syslog://127.0.0.1:1", created_at="t")]
        taps.pass_once()
        assert backend.listings == 1
        _until(lambda: [e.line for e in events] == ["first line"])
    finally:
        taps.close()
        hub.close()


def test_an_engine_event_stream_reports_start_die_and_destroy_of_labelled_containers_only() -> None:
    backend = FakeBackend()
    spec = ContainerSpec(image="fence/stack:bookworm", user="1000", command=("sleep", "infinity"),
                         limits=Limits(memory_bytes=64 * 1024 * 1024, pids=64),
                         labels=labels.owned("n-a", labels.ROLE_INSTANCE, app="shop", instance=0, release=1))
    other = ContainerSpec(**{**spec.__dict__, "labels": labels.owned("n-b", labels.ROLE_INSTANCE, app="shop",
                                                                        instance=0, release=1)})
    stream = backend.container_events({labels.NODE: "n-a"})
    mine = backend.create(spec)
    mine.start()
    backend.create(other).start()
    mine.exit(1)
    mine.destroy()
    got = [next(stream) for _ in range(3)]
    assert [(e.container_id, e.action) for e in got] == [(mine.id, "start"), (mine.id, "die"), (mine.id, "destroy")]
    stream.close()
    assert list(stream) == []


def test_manager_shutdown_ends_its_event_stream(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.manager.run_in_background(interval=NEVER, steady_interval=NEVER)
    _until(lambda: node.manager._loop.following)  # noqa: SLF001
    node.manager.shutdown()
    _until(lambda: not node.manager._loop.following)  # noqa: SLF001


def test_a_refused_router_config_keeps_the_short_passes(node: Node) -> None:
    node.deploy("web")
    node.settle()
    assert node.manager._steady  # noqa: SLF001
    node.manager._route_sink.refuse = True  # noqa: SLF001 - nginx refuses: the next pass must try again soon
    node.manager.wake()
    node.manager.tick()
    assert not node.manager._steady  # noqa: SLF001
    node.manager._route_sink.refuse = False  # noqa: SLF001
    node.manager.tick()
    assert node.manager._steady  # noqa: SLF001


def test_fence_stats_json_prints_what_the_models_would(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fence.cli import fence
    from fence.client import FenceClient, model_from_wire
    from fence.console import render
    from fence.usage_models import InstanceStats
    from fence.wire import to_wire

    answer = [{"app": "shop", "type": "web", "index": i, "state": "running", "container": f"{i:012x}", "release": 3,
               "cpu_percent": 1.5 * i, "cpu_seconds": 0.25, "memory_bytes": 1 << 20, "memory_limit_bytes": 32 << 20,
               "net_rx_bytes": 10, "net_tx_bytes": 20, "restarts": 0, "uptime": 61.0} for i in range(3)]
    monkeypatch.setattr(FenceClient, "_get", lambda self, path, params=None: [dict(a) for a in answer])
    monkeypatch.setenv("FENCE_HOME", str(tmp_path))
    result = CliRunner().invoke(fence, ["stats", "shop", "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == render(to_wire([model_from_wire(InstanceStats, a) for a in answer]), "json")
    text = CliRunner().invoke(fence, ["stats", "shop"])
    assert text.exit_code == 0 and text.output.splitlines()[1].split() == ["web.0", "running", "0.0%", "1.0MiB", "32.0MiB",
                                                                  "10B", "20B", "0", "1m"]
