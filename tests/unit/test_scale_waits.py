"""What `fence scale` no longer waits for: a passed readiness check wakes the reconciler, the watch
keeps looking, and a deploy's wait does not miss a pass that ended while it looked."""

from __future__ import annotations

import threading
from pathlib import Path

from fence.running.health import HealthMonitor, Probe
from tests.unit.test_instance_manager import InlineExecutor, Node


class _Refuses:
    """Refuses ``refusals`` connections, then accepts."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    def check(self, address: str, port: int, probe: Probe, timeout: float) -> str | None:
        self.calls += 1
        return "connection refused" if self.calls <= self.refusals else None


def test_a_passed_readiness_check_calls_on_ready_once_and_a_failed_one_does_not() -> None:
    woken: list[str] = []
    check = _Refuses(1)
    monitor = HealthMonitor(check=check, executor=InlineExecutor(), failures=lambda: 3,
                            on_ready=lambda: woken.append("wake"))
    assert not monitor.ready("c1", "10.0.0.2", 8080, Probe())  # refused: nobody is woken
    assert woken == [] and monitor.last_failure("c1") == "connection refused"
    assert monitor.ready("c1", "10.0.0.2", 8080, Probe())
    assert monitor.ready("c1", "10.0.0.2", 8080, Probe())  # known ready: no new check, no new wake
    assert woken == ["wake"] and check.calls == 2


def test_the_watch_checks_starting_instances_until_they_pass_then_wakes() -> None:
    stop = threading.Event()
    check = _Refuses(5)
    monitor = HealthMonitor(check=check, executor=InlineExecutor(), failures=lambda: 3, on_ready=stop.set)
    watch = threading.Thread(target=monitor.watch, args=(lambda: [("c1", "10.0.0.2", 8080, Probe())],),
                             kwargs={"stop": stop, "interval": 0.001}, daemon=True)
    watch.start()
    watch.join(timeout=30)
    assert not watch.is_alive(), "the watch never saw the instance pass"
    assert check.calls == 6 and monitor.ready("c1", "10.0.0.2", 8080, Probe())


def test_wait_pass_does_not_miss_a_pass_that_ended_while_the_caller_looked(tmp_path: Path) -> None:
    node = Node(tmp_path)
    returned = threading.Event()

    def waiter() -> None:
        node.manager.wait_pass(0)  # this thread has now seen every pass so far
        node.manager.tick()  # a pass ends while it looks at the state (no other pass comes)
        node.manager.wait_pass(120)
        returned.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert returned.is_set(), "wait_pass waited for another pass after one had ended"


def test_wait_pass_waits_for_the_next_pass_when_none_ended(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.manager.wait_pass(0)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: (node.manager.wait_pass(120), outcome.append("returned")), daemon=True)
    thread.start()
    thread.join(timeout=0.2)
    assert outcome == []  # no pass yet: still waiting
    node.manager.tick()
    thread.join(timeout=30)
    assert outcome == ["returned"]
