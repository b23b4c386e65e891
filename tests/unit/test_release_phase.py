"""The release phase on the fake engine: it runs before the release exists, a failure changes nothing, its output is kept."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
from fastapi.testclient import TestClient

from fence import labels
from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.backend.fake_programs import FakeProcess
from fence.errors import ReleaseFailed
from fence.home import NodeHome
from fence.models import AppRecord, DeploySettings, DropletRecord
from fence.running import release as release_module
from fence.service import NodeService
from fence.wiring import node_service
from tests.conftest import run_cli
from tests.unit.test_droplet_images import _droplet


def _release_program(proc: FakeProcess) -> int:
    """The task's start script (bash -c SCRIPT): its last line execs ``bash -c COMMAND``;
    the fake acts out the few commands these tests give."""
    command = shlex.split(proc.argv[2].strip().splitlines()[-1])[-1]
    exported = [line for line in proc.argv[2].splitlines() if line.startswith("export GREETING=")]
    proc.write(f"release env GREETING={shlex.split(exported[0])[1][9:] if exported else ''}\n")
    if command.startswith("sleep "):
        proc.sleep(float(command.split()[1]))
    for line in command.split(";"):
        if line.strip().startswith("echo "):
            proc.write(line.strip()[5:] + "\n")
        if line.strip().startswith("exit "):
            return int(line.strip()[5:])
    return 0


@pytest.fixture
def service(home: NodeHome) -> NodeService:
    backend = FakeBackend()
    backend.programs["bash"] = _release_program
    service = node_service(home, backend=backend, router=None)
    yield service
    service.close()


def _staged(service: NodeService, app: str, release: str | None) -> DropletRecord:
    droplet = _droplet(service.droplets, app)
    types = {"web": "python app.py", **({"release": release} if release else {})}
    droplet = dataclasses.replace(droplet, process_types=types, staging_id=f"s-{release}")
    service.store.add_droplet(droplet)
    return droplet


def _containers(service: NodeService, app: str) -> list:
    return service.backend.list({labels.NODE: service.node_id, labels.APP: app})


def test_a_failing_release_command_records_nothing_and_leaves_no_container(service: NodeService) -> None:
    droplet = _staged(service, "mig", "echo migrating; exit 3")
    lines: list[str] = []
    with pytest.raises(ReleaseFailed) as failed:
        service.apps.deploy(droplet, DeploySettings(env={"GREETING": "hi"}), on_line=lines.append)
    assert failed.value.message == ("release command `echo migrating; exit 3` of mig exited 3: "
                                    "release 1 was not deployed")
    assert "\n" not in failed.value.message and failed.value.exit_code == 4
    assert "-----> Running release command: echo migrating; exit 3" in lines
    assert "       migrating" in lines and "       release env GREETING=hi" in lines
    assert service.store.app("mig") is None and service.store.releases("mig") == []
    assert _containers(service, "mig") == []
    kept = list(service.apps.release_log("mig"))  # the app was never made: its release log is kept all the same
    assert "[release] migrating" in kept and kept[-1] == "[release] fence: exited 3"


def test_the_release_phase_runs_first_and_its_output_is_kept(service: NodeService) -> None:
    droplet = _staged(service, "ok", "echo done")
    lines: list[str] = []
    phase = service.apps._release
    record = dataclasses.replace(_app_record("ok"), env={"GREETING": "yo"})
    phase.run(record, droplet, on_line=lines.append)
    assert lines[0] == "-----> Running release command: echo done"
    assert "       done" in lines and lines[-1].startswith("-----> Release command finished in ")
    kept = list(phase.last_log("ok"))
    assert kept[0] == "[release] fence: release command of release 1: echo done"
    assert "[release] release env GREETING=yo" in kept and kept[-1] == "[release] fence: exited 0"
    assert _containers(service, "ok") == []


def test_no_release_command_runs_nothing(service: NodeService) -> None:
    droplet = _staged(service, "plain", None)
    lines: list[str] = []
    service.apps._release.run(_app_record("plain"), droplet, on_line=lines.append)
    assert lines == [] and not service.home.host_app_release_logs("plain").exists()


def test_release_timeout_kills_the_command_and_aborts(service: NodeService) -> None:
    service.config.set("fence", "release/timeout", "5")
    droplet = _staged(service, "slow", "sleep 60")
    with pytest.raises(ReleaseFailed) as failed:
        service.apps.deploy(droplet, DeploySettings(), on_line=lambda _: None)
    assert failed.value.message == ("release command `sleep 60` of slow did not finish within 5 s "
                                    "(release/timeout) and was killed: release 1 was not deployed")
    assert service.store.app("slow") is None and _containers(service, "slow") == []
    assert list(service.apps._release.last_log("slow"))[-1] == "[release] fence: killed after 5 s (release/timeout)"


def test_a_failing_env_change_keeps_the_env_and_the_release(service: NodeService) -> None:
    store = service.store
    store.put_app(dataclasses.replace(_app_record("envy"), env={"GREETING": "old"}, started=True))
    store.add_release("envy", _staged(service, "envy", "exit 2").id, "t", "push")  # recorded by hand:
    store.add_release("envy", _staged(service, "envy", "exit 1").id, "t", "push")  # no release phase ran
    with pytest.raises(ReleaseFailed) as failed:
        service.apps.set_env("envy", {"GREETING": "new"}, (), on_line=lambda _: None)
    assert failed.value.message.endswith("release 3 was not deployed; release 2 keeps serving")
    assert store.app("envy").env == {"GREETING": "old"} and store.app("envy").release == 2
    assert [r.number for r in store.releases("envy")] == [2, 1]
    # A rollback runs the target's release command too (Heroku: a rollback makes a release).
    with pytest.raises(ReleaseFailed):
        service.apps.rollback("envy", 2, on_line=lambda _: None)
    assert store.app("envy").release == 2


def test_logs_release_through_the_api(service: NodeService) -> None:
    droplet = _staged(service, "api", "echo hello from release")
    service.store.put_app(_app_record("api"))
    service.apps._release.run(_app_record("api"), droplet, on_line=lambda _: None)
    client = TestClient(create_app(service, service.apps))
    body = client.get("/v1/apps/api/logs", params={"release": "true"}).text
    assert '"[release] hello from release"' in body
    missing = client.get("/v1/apps/nope/logs", params={"release": "true"})
    assert missing.status_code == 404


def test_only_the_last_runs_are_kept(service: NodeService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release_module, "KEEP_LOGS", 2)
    droplet = _staged(service, "many", "echo again")
    for _ in range(4):
        service.apps._release.run(_app_record("many"), droplet, on_line=lambda _: None)
    assert len(list(service.home.host_app_release_logs("many").glob("*.log"))) == 2


@pytest.mark.parametrize("bad", ["0", "-1", "5m", "86401", "lots"])
def test_release_timeout_refuses_bad_values_with_one_line(kato, bad: str) -> None:  # noqa: ANN001
    result = kato("config", "set", "fence", "release/timeout", bad)
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: fence release/timeout: {bad!r} is not allowed")
    assert kato("config", "get", "fence", "release/timeout").stdout == "300\n"


def test_logs_release_with_staging_or_follow_is_a_usage_error(home: NodeHome) -> None:
    result = run_cli("fence", "logs", "app", "--release", "--follow")
    assert result.exit_code == 2 and "--release shows the last release command's output" in result.stderr


def _app_record(name: str) -> AppRecord:
    return AppRecord(name=name, instances=1, memory_mib=64, env={}, started=False, release=None,
                     health_timeout=None, urls=(), created_at="t")
