"""Cron without an engine: manifest checks, the schedule decisions on a fake clock, the scheduler on the fake backend."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from pathlib import Path

import pytest

from fence import labels
from fence.backend.fake import FakeBackend
from fence.backend.fake_programs import FakeProcess
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import ManifestInvalid
from fence.home import NodeHome
from fence.layout import AppUser
from fence.models import AppRecord, CronEntry, CronRun
from fence.running.cron import FIRE, PREPARE, PREPARE_AHEAD, SKIP, CronScheduler, decide, next_run
from fence.running.images import DropletImages
from fence.running.starter import InstanceStarter
from fence.staging.manifest import parse_manifest
from fence.store import StateStore
from tests.unit.test_droplet_images import NODE, _droplet

EVERY = CronEntry(schedule="* * * * *", command="date")
HOURLY = CronEntry(schedule="0 * * * *", command="report")
# 2026-03-02 10:00:00 UTC, a Monday
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc).timestamp()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat()


def _minute(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


# --- manifest --------------------------------------------------------------------------------

def test_cron_lines_are_parsed_into_schedule_and_command() -> None:
    manifest = parse_manifest(b"name: a\ncron:\n  - '*/5 1 * * 1-5  python x.py --all'\n  - '0 0 1 jan sun echo \"a b\"'\n",
                              source_name="stackato.yml")
    assert manifest.cron == (CronEntry(schedule="*/5 1 * * 1-5", command="python x.py --all"),
                             CronEntry(schedule="0 0 1 jan sun", command='echo "a b"'))


@pytest.mark.parametrize(("text", "why"), [
    (b"cron: '* * * * * echo'\n", "line 1, column 7: cron must be a list of 'MIN HOUR DOM MON DOW command' lines"),
    (b"cron:\n  - '* * * * *'\n", "line 2, column 5: cron[0]: '* * * * *' needs five schedule fields"),
    (b"cron:\n  - '* * * * * ok'\n  - '61 * * * * echo'\n", "line 3, column 5: cron[1]: '61' is not a valid minute"),
    (b"cron:\n  - '* 24 * * * e'\n", "cron[0]: '24' is not a valid hour field"),
    (b"cron:\n  - '* * 32 * * e'\n", "cron[0]: '32' is not a valid day of month field"),
    (b"cron:\n  - '* * * 13 * e'\n", "cron[0]: '13' is not a valid month field"),
    (b"cron:\n  - '* * * * mon-xyz e'\n", "cron[0]: 'mon-xyz' is not a valid day of week field"),
    (b"cron:\n  - '@daily e'\n", "needs five schedule fields"),
    (b"cron:\n  - {a: 1}\n", "cron[0] must be a 'MIN HOUR DOM MON DOW command' line, not a mapping"),
    (b"cron:\n  - 5\n", "needs five schedule fields"),
    (b"cron:\n" + b"  - '* * * * * e'\n" * 65, "cron lists 65 entries; at most 64"),
])
def test_bad_cron_entries_are_refused_with_their_line_in_one_line(text: bytes, why: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(text, source_name="stackato.yml")
    message = caught.value.message
    assert why in message and message.startswith("stackato.yml line ") and "\n" not in message


# --- decisions on a fake clock ----------------------------------------------------------------

def test_an_entry_fires_in_its_minute_and_is_prepared_just_before_it() -> None:
    entries = {"a": (EVERY, HOURLY)}
    early = decide(entries=entries, now=T0 - 30, last={("a", EVERY.key): CronRun(minute=_iso(T0 - 60), started_at="")},
                   active={}, skipped={})
    assert early == []  # the minute before ran already, the next is not close yet
    ahead = decide(entries=entries, now=T0 - PREPARE_AHEAD + 1, last={("a", EVERY.key): CronRun(minute=_iso(T0 - 60),
                                                                                                  started_at="")},
                   active={}, skipped={})
    assert {(d.entry, d.action, d.minute.timestamp()) for d in ahead} == {(EVERY, PREPARE, T0), (HOURLY, PREPARE, T0)}
    # Not prepared (the daemon just started): both fire in their minute, late rather than never.
    late = decide(entries=entries, now=T0 + 3, last={}, active={}, skipped={})
    assert {(d.entry, d.action, d.minute.timestamp()) for d in late} == {(EVERY, FIRE, T0), (HOURLY, FIRE, T0)}
    # Prepared ones are left to their job.
    assert decide(entries=entries, now=T0 + 1, last={},
                  active={("a", EVERY.key): _minute(T0), ("a", HOURLY.key): _minute(T0)}, skipped={}) == []
    # The hourly one is not due at 10:01.
    nxt = decide(entries=entries, now=T0 + 61, last={("a", EVERY.key): CronRun(minute=_iso(T0), started_at="")},
                 active={}, skipped={})
    assert [(d.entry, d.action) for d in nxt] == [(EVERY, FIRE)]


def test_a_job_still_running_at_its_next_minute_is_skipped_once_not_started_twice() -> None:
    entries = {"a": (EVERY,)}
    last = {("a", EVERY.key): CronRun(minute=_iso(T0), started_at="")}
    active = {("a", EVERY.key): _minute(T0)}
    # Still running near the next minute: nothing is prepared beside it.
    assert decide(entries=entries, now=T0 + 55, last=last, active=active, skipped={}) == []
    skip = decide(entries=entries, now=T0 + 60.3, last=last, active=active, skipped={})
    assert [(d.action, d.minute.timestamp()) for d in skip] == [(SKIP, T0 + 60)]
    # The skip was logged: the passes after it in the same minute stay quiet.
    assert decide(entries=entries, now=T0 + 61, last=last, active=active, skipped={("a", EVERY.key): _minute(T0 + 60)}) == []


def test_a_skipped_minute_is_not_started_late_when_the_run_before_ends_within_it() -> None:
    # `sleep 90` of T0 still ran at T0 + 60 (skipped, logged) and ended at T0 + 90: the integration
    # test saw it start again at T0 + 90 for the minute it had just said it skipped.
    entries, key = {"a": (EVERY,)}, ("a", EVERY.key)
    last = {key: CronRun(minute=_iso(T0), started_at=_iso(T0), finished_at=_iso(T0 + 90), outcome="exited")}
    assert decide(entries=entries, now=T0 + 90, last=last, active={}, skipped={key: _minute(T0 + 60)}) == []
    nxt = decide(entries=entries, now=T0 + 115, last=last, active={}, skipped={key: _minute(T0 + 60)})
    assert [(d.action, d.minute.timestamp()) for d in nxt] == [(PREPARE, T0 + 120)]


def test_a_restart_in_the_same_minute_does_not_run_the_entry_again() -> None:
    ran = {("a", EVERY.key): CronRun(minute=_iso(T0), started_at=_iso(T0 + 0.2), outcome="interrupted")}
    assert decide(entries={"a": (EVERY,)}, now=T0 + 5, last=ran, active={}, skipped={}) == []


def test_minutes_missed_while_the_daemon_was_down_are_skipped_not_caught_up() -> None:
    last = {("a", HOURLY.key): CronRun(minute=_iso(T0 - 3600), started_at="")}
    # Down from 09:58 to 10:03: 10:00 is not run late, and nothing is run more than once.
    assert decide(entries={"a": (HOURLY,)}, now=T0 + 180, last=last, active={}, skipped={}) == []
    assert next_run(HOURLY, T0 + 180).timestamp() == T0 + 3600


# --- the scheduler on the fake backend -----------------------------------------------------------

class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(tmp_path: Path):  # noqa: ANN201
    backend = FakeBackend()
    home = NodeHome(host_root=tmp_path / "home")
    config = ConfigStore(host_file=tmp_path / "config.yml")
    droplets = DropletStore(host_dir=tmp_path / "droplets")
    app_user = AppUser(config=config, backend=backend, host_file=tmp_path / "app-uid")
    images = DropletImages(backend=backend, config=config, droplets=droplets, node_id=NODE, app_user=app_user)
    starter = InstanceStarter(backend=backend, config=config, images=images, node_id=NODE, app_user=app_user)
    store = StateStore(host_db=tmp_path / "state.db")
    droplet = dataclasses.replace(_droplet(droplets), cron=(EVERY,))
    store.add_droplet(droplet)
    store.put_app(AppRecord(name="web", instances=1, memory_mib=64, env={}, started=True, release=None,
                            health_timeout=None, urls=(), created_at="t"))
    store.add_release("web", droplet.id, "t", "push")
    clock = _Clock(T0 - 30)
    scheduler = CronScheduler(store=store, config=config, starter=starter, home=home, clock=clock)
    yield backend, store, scheduler, clock, (config, starter, home)
    scheduler.shutdown()
    store.close()


def _wait(condition, timeout: float = 10) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _tasks(backend: FakeBackend) -> list:
    return backend.list({labels.NODE: NODE, labels.ROLE: labels.ROLE_TASK})


def test_a_job_runs_on_its_minute_in_a_task_container_and_its_run_is_kept(node) -> None:  # noqa: ANN001
    backend, store, scheduler, clock, _ = node
    backend.programs["bash"] = lambda proc: proc.write("hello from cron\n") or 3
    store.put_cron_run("web", EVERY.key, CronRun(minute=_iso(T0 - 60), started_at="", exit_code=0, outcome="exited"))
    clock.now = T0 - 5
    assert [d.action for d in scheduler.tick()] == [PREPARE]
    _wait(lambda: len(_tasks(backend)) == 1)  # its container waits for the minute
    assert store.cron_runs()[("web", EVERY.key)].minute == _iso(T0 - 60)
    clock.now = T0 + 0.1
    _wait(lambda: store.cron_runs()[("web", EVERY.key)] == dataclasses.replace(
        store.cron_runs()[("web", EVERY.key)], minute=_iso(T0), outcome="exited"))
    run = store.cron_runs()[("web", EVERY.key)]
    assert (run.minute, run.exit_code) == (_iso(T0), 3) and run.duration is not None
    _wait(lambda: _tasks(backend) == [])
    lines = scheduler.log_lines("web", tail=100)
    assert "[cron] hello from cron" in lines and all(line.startswith("[cron] ") for line in lines)
    assert any("exited 3" in line for line in lines)
    view, = scheduler.views(store.app("web"))
    assert (view.schedule, view.command, view.last_run.exit_code) == ("* * * * *", "date", 3)
    assert view.next_run == _iso(T0 + 60)
    assert scheduler.tick() == []  # the same minute again: nothing


def test_an_overlapping_job_is_skipped_and_a_stopped_app_ends_its_job(node) -> None:  # noqa: ANN001
    backend, store, scheduler, clock, _ = node
    release = threading.Event()

    def long_job(proc: FakeProcess) -> int:
        release.wait(20)
        return 0

    backend.programs["bash"] = long_job
    clock.now = T0 + 1
    assert [d.action for d in scheduler.tick()] == [FIRE]
    _wait(lambda: store.cron_runs().get(("web", EVERY.key)) is not None)
    clock.now = T0 + 60.5
    assert [d.action for d in scheduler.tick()] == [SKIP]
    assert scheduler.tick() == []
    assert len(_tasks(backend)) == 1
    assert any("skipped at 10:01: its run before still runs" in line for line in scheduler.log_lines("web", tail=10))
    # The app stops: its job's container goes with it.
    store.put_app(dataclasses.replace(store.app("web"), started=False))
    scheduler.tick()
    _wait(lambda: _tasks(backend) == [])
    release.set()
    _wait(lambda: store.cron_runs()[("web", EVERY.key)].outcome != "running")
    assert scheduler.views(store.app("web"))[0].next_run is None


def test_a_restarted_scheduler_does_not_rerun_the_minute_and_marks_the_dead_run(node) -> None:  # noqa: ANN001
    backend, store, scheduler, clock, (config, starter, home) = node
    store.put_cron_run("web", EVERY.key, CronRun(minute=_iso(T0), started_at=_iso(T0)))  # a daemon died under it
    again = CronScheduler(store=store, config=config, starter=starter, home=home, clock=_Clock(T0 + 20))
    again.run_in_background()
    try:
        assert again.tick() == []
        assert store.cron_runs()[("web", EVERY.key)].outcome == "interrupted"
    finally:
        again.shutdown()
    assert _tasks(backend) == []


def test_cron_runs_go_with_the_app(tmp_path: Path) -> None:
    store = StateStore(host_db=tmp_path / "state.db")
    store.put_app(AppRecord(name="a", instances=1, memory_mib=64, env={}, started=True, release=None,
                            health_timeout=None, urls=(), created_at="t"))
    store.put_cron_run("a", EVERY.key, CronRun(minute=_iso(T0), started_at=_iso(T0), exit_code=0, outcome="exited"))
    assert store.cron_runs("a")[("a", EVERY.key)].exit_code == 0
    store.delete_app("a")
    assert store.cron_runs() == {}
    store.close()


@pytest.mark.parametrize("bad", ["0", "-1", "1h", "604801"])
def test_cron_timeout_refuses_bad_values_with_one_line(kato, bad: str) -> None:  # noqa: ANN001
    assert kato("config", "get", "fence", "cron/timeout").stdout == "3600\n"
    result = kato("config", "set", "fence", "cron/timeout", bad)
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: fence cron/timeout: {bad!r} is not allowed")
    assert kato("config", "set", "fence", "cron/timeout", "90").stdout == "90\n"


def test_a_job_past_cron_timeout_is_killed_and_shown_as_timed_out(node) -> None:  # noqa: ANN001
    backend, store, scheduler, clock, (config, _, _) = node
    config.set("fence", "cron/timeout", "5")
    backend.programs["bash"] = lambda proc: proc.sleep(30) or 0
    clock.now = T0 + 1
    assert [d.action for d in scheduler.tick()] == [FIRE]
    _wait(lambda: getattr(store.cron_runs().get(("web", EVERY.key)), "outcome", "") == "timed out")
    assert store.cron_runs()[("web", EVERY.key)].exit_code is None
    _wait(lambda: _tasks(backend) == [])
    assert any("timed out after 5 s (cron/timeout)" in line for line in scheduler.log_lines("web", tail=10))
