"""Restart backoff (fake clock), instance state transitions, and the rendered start script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from fence.running.backoff import BackoffPolicy, CrashCount
from fence.running.script import SLOT_ENV, StartScript, render_start_script
from fence.states import InstanceState as S
from fence.states import TransitionError, check_transition


def test_cloud_foundry_backoff_delays() -> None:
    policy = BackoffPolicy()
    assert [policy.delay(n) for n in (1, 2, 3)] == [0, 0, 0]
    assert [policy.delay(n) for n in (4, 5, 6, 7, 8, 9)] == [30, 60, 120, 240, 480, 960]
    assert policy.delay(10) == policy.delay(199) == 960
    assert policy.delay(200) == 960 and policy.delay(201) is None


def test_crash_count_gives_up_and_resets_after_five_healthy_minutes() -> None:
    policy = BackoffPolicy()
    count, now = CrashCount(), 1000.0
    for crash in range(1, 201):
        count.started(now)
        now += 1
        assert count.crashed(now, policy) == policy.delay(crash)
        assert count.restart_at == now + policy.delay(crash)
    count.started(now)
    assert count.crashed(now + 1, policy) is None and count.gave_up
    fresh = CrashCount()
    fresh.started(0.0)
    fresh.crashed(10.0, policy)
    fresh.crashed(11.0, policy)
    assert fresh.crashes == 2
    fresh.started(20.0)
    fresh.healthy_for(20.0 + 299, policy)
    assert fresh.crashes == 2
    fresh.healthy_for(20.0 + 300, policy)
    assert fresh.crashes == 0


def test_a_crash_after_a_long_healthy_run_counts_as_the_first() -> None:
    policy = BackoffPolicy()
    count = CrashCount(crashes=7)
    count.started(0.0)
    assert count.crashed(301.0, policy) == 0.0 and count.crashes == 1


@pytest.mark.parametrize(("old", "new", "ok"), [
    (S.STARTING, S.RUNNING, True), (S.STARTING, S.CRASHED, True), (S.RUNNING, S.CRASHED, True),
    (S.RUNNING, S.STOPPING, True), (S.CRASHED, S.STARTING, True), (S.STOPPING, S.STOPPED, True),
    (S.STOPPED, S.STARTING, False), (S.RUNNING, S.STARTING, False), (S.STOPPING, S.RUNNING, False),
    (S.CRASHED, S.RUNNING, False),
])
def test_state_transitions(old: S, new: S, ok: bool) -> None:
    if ok:
        assert check_transition(old, new) is new
    else:
        with pytest.raises(TransitionError):
            check_transition(old, new)


HOSTILE = ["$(touch {canary})", "`touch {canary}`", "a'b\"c", "line1\nline2", "; touch {canary} #", "*", "~root"]


def test_start_script_quotes_every_value(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    values = {f"V{n}": text.format(canary=canary) for n, text in enumerate(HOSTILE)}
    app_dir = tmp_path / "app"
    (app_dir / ".profile.d").mkdir(parents=True)
    (app_dir / ".profile.d" / "x.sh").write_text("export FROM_PROFILE=yes\n")
    script = render_start_script(StartScript(
        app="demo", role="instance", index=0, process="web", ctr_app=PurePosixPath(str(app_dir)),
        env=tuple(sorted(values.items())), hooks=("echo hook-ran > hook.txt", "-false"),
        ctr_admin_hook=PurePosixPath(str(tmp_path / "no-admin-hook")),
        command='for n in 0 1 2 3 4 5 6; do v="V$n"; printf "%s\\0" "${!v}"; done > out.bin; echo $FROM_PROFILE > profile.txt'))
    (tmp_path / "start.sh").write_text(script)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(tmp_path / "start.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert not canary.exists()
    got = (app_dir / "out.bin").read_bytes().split(b"\0")[:-1]
    assert [g.decode() for g in got] == [values[f"V{n}"] for n in range(7)]
    assert (app_dir / "hook.txt").read_text() == "hook-ran\n"
    assert (app_dir / "profile.txt").read_text() == "yes\n"
    assert "ignored (it starts with '-')" in proc.stderr


def test_failing_pre_running_hook_stops_the_start(tmp_path: Path) -> None:
    script = render_start_script(StartScript(
        app="demo", role="instance", index=0, process="web", ctr_app=PurePosixPath(str(tmp_path)),
        env=(), hooks=("exit 5",), ctr_admin_hook=PurePosixPath("/nonexistent"), command="echo never > ran"))
    (tmp_path / "start.sh").write_text(script)
    proc = subprocess.run(["bash", str(tmp_path / "start.sh")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 5 and not (tmp_path / "ran").exists()
    assert "pre-running hook exited 5" in proc.stderr


def test_env_names_that_are_not_identifiers_never_reach_the_script() -> None:
    from fence.errors import InternalError
    with pytest.raises(InternalError):
        render_start_script(StartScript(app="a", role="instance", index=0, process="web",
                                        ctr_app=PurePosixPath("/a"), env=(("A;rm", "x"),), hooks=(),
                                        ctr_admin_hook=PurePosixPath("/h"), command="true"))


@pytest.mark.parametrize("slot, expected", [("1", 3), ("3", 5), (None, 3)])
def test_a_swarm_task_takes_its_index_from_its_slot(tmp_path: Path, slot: str | None, expected: int) -> None:
    vcap = json.dumps({"application_name": "demo", "instance_index": 0, "limits": {"mem": 64}}, sort_keys=True)
    script = render_start_script(StartScript(
        app="demo", role="instance", index=0, process="web", ctr_app=PurePosixPath(str(tmp_path)),
        env=(("INSTANCE_INDEX", "0"), ("VCAP_APPLICATION", vcap)), hooks=(),
        ctr_admin_hook=PurePosixPath("/nonexistent"), command='echo "$INSTANCE_INDEX"; echo "$VCAP_APPLICATION"',
        slot_base=3))
    env = {"PATH": os.environ["PATH"], **({SLOT_ENV: slot} if slot else {})}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    index, seen = proc.stdout.splitlines()
    assert int(index) == expected and json.loads(seen)["instance_index"] == expected
