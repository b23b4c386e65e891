"""Every process type on the real engine: the whole-app sample's web and worker, scaling per type, re-adoption, start-first workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fence import labels
from tests.integration.node_kit import Node, Poller, started_node, wait_for
from tests.integration.staging_kit import EXAMPLES

APP = "whole"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path_factory.mktemp("node") / "home")


@pytest.fixture(scope="module")
def pushed(node: Node) -> Node:
    result = node.cli("fence", "push", str(EXAMPLES / "whole-app"), "--name", APP)
    assert result.exit_code == 0, result.stderr + result.stdout
    return node



def engine_instances(node: Node, app: str = APP) -> dict[str, list[str]]:
    """The app's running instance containers in the engine, by their fence.process label."""
    out = subprocess.run(["docker", "ps", "--no-trunc", "--filter", f"label={labels.NODE}={node.home.node_id}",
                          "--filter", f"label={labels.APP}={app}", "--filter", f"label={labels.ROLE}=instance",
                          "--format", f'{{{{.ID}}}} {{{{.Label "{labels.PROCESS}"}}}} {{{{.Label "{labels.INSTANCE}"}}}}'],
                         capture_output=True, text=True, check=True)
    found: dict[str, list[str]] = {}
    for line in out.stdout.split("\n"):
        if line.strip():
            _, process, index = line.split()
            found.setdefault(process, []).append(index)
    return {kind: sorted(indexes) for kind, indexes in found.items()}


def ps(node: Node) -> list[dict]:
    result = node.cli("fence", "ps", APP, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_whole_app_runs_web_and_worker_and_the_worker_logs(pushed: Node) -> None:
    node = pushed
    assert node.url_get(APP) == (200, "Hello from whole-app (web.0)\n")
    assert engine_instances(node) == {"web": ["0"], "worker": ["0"]}
    rows = {row["name"]: row for row in ps(node)}
    assert set(rows) == {"web.0", "worker.0"}
    assert rows["worker.0"]["state"] == "running" and rows["worker.0"]["health"] == "process: passing"
    assert rows["worker.0"]["host_port"] is None and rows["web.0"]["host_port"]
    logs = wait_for(lambda: (out := node.cli("fence", "logs", APP).stdout) and "beat 1" in out and out, timeout=90)
    assert "[worker.0] whole-app worker.0 beat" in logs and "(PORT=unset)" in logs
    assert "[web.0] whole-app web listening on port 8080" in logs
    apps = node.cli("fence", "apps")
    assert "web 1/1, worker 1/1" in apps.stdout, apps.stdout
    shown = node.cli("fence", "app", APP).stdout
    assert "  worker: 1/1 running" in shown and "worker.0" in shown, shown
    human = node.cli("fence", "ps", APP).stdout
    assert human.splitlines()[0].split() == ["INSTANCE", "STATE", "RELEASE", "RESTARTS", "UPTIME", "HEALTH",
                                             "CONTAINER"]


def test_the_sample_ran_its_release_before_any_instance_and_lists_its_two_cron_entries(pushed: Node) -> None:
    import datetime as dt

    logs = pushed.cli("fence", "logs", APP, "--release")
    assert logs.exit_code == 0, logs.stderr
    [line] = [line for line in logs.stdout.splitlines() if "whole-app release phase" in line]
    ran_at = float(line.split(" at ")[1].split(":")[0])
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label={labels.NODE}={pushed.home.node_id}",
                          "--filter", f"label={labels.APP}={APP}", "--filter", f"label={labels.ROLE}=instance"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert ids
    for item in json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                          check=True).stdout):
        whole, _, frac = item["State"]["StartedAt"].rstrip("Z").partition(".")
        started = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{frac or 0}")
        assert started > ran_at, (item["Config"]["Labels"].get(labels.PROCESS), started, ran_at)
    cron = pushed.cli("fence", "cron", APP, "--json")
    assert cron.exit_code == 0, cron.stderr
    assert [entry["schedule"] for entry in json.loads(cron.stdout)] == ["* * * * *", "30 3 * * *"]


def test_scale_worker_up_and_to_zero_shows_in_ps_and_the_engine(pushed: Node) -> None:
    node = pushed
    up = node.cli("fence", "scale", APP, "worker=3")
    assert up.exit_code == 0, up.stderr + up.stdout
    assert sorted(row["name"] for row in ps(node)) == ["web.0", "worker.0", "worker.1", "worker.2"]
    assert engine_instances(node) == {"web": ["0"], "worker": ["0", "1", "2"]}
    down = node.cli("fence", "scale", APP, "worker=0")
    assert down.exit_code == 0, down.stderr + down.stdout
    wait_for(lambda: engine_instances(node) == {"web": ["0"]}, timeout=60)
    assert [row["name"] for row in ps(node)] == ["web.0"]
    assert node.cli("fence", "scale", APP, "worker=1").exit_code == 0
    for args, fragment in ((["clock=1"], "has no process type 'clock'"), (["worker=-1"], "whole number"),
                           (["web="], "no count after '='"), (["worker=x"], "whole number")):
        bad = node.cli("fence", "scale", APP, *args)
        assert bad.exit_code != 0 and fragment in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_kill_9_of_the_daemon_readopts_every_type_without_a_restart(pushed: Node) -> None:
    node = pushed
    wait_for(lambda: engine_instances(node) == {"web": ["0"], "worker": ["0"]}, timeout=60)
    before = node.containers()
    node.kill_daemon()
    time.sleep(1)
    node.start()
    time.sleep(3)  # a few passes of the reconciler
    assert node.containers() == before
    rows = {row["name"]: row for row in ps(node)}
    assert set(rows) == {"web.0", "worker.0"}
    assert all(row["state"] == "running" and row["restarts"] == 0 for row in rows.values()), rows


def test_a_redeploy_serves_every_request_and_always_keeps_a_worker(pushed: Node, tmp_path: Path) -> None:
    node = pushed
    app = tmp_path / "whole-v2"
    shutil.copytree(EXAMPLES / "whole-app", app)
    source = app / "app.py"
    source.write_text(source.read_text().replace("Hello from whole-app", "Hello v2 from whole-app"))
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:  # every 100 ms: how many worker containers run in the engine
        while not stop.is_set():
            samples.append(len(engine_instances(node).get("worker", [])))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    with Poller(node, APP) as poll:
        sampler.start()
        result = node.cli("fence", "push", str(app), "--name", APP)
        assert result.exit_code == 0, result.stderr + result.stdout
        time.sleep(1)
    stop.set()
    sampler.join(timeout=30)
    print(f"redeploy web + worker: {poll.total} requests, outcomes {dict(poll.outcomes)}; "
          f"{len(samples)} engine samples, workers seen {sorted(set(samples))}")
    assert poll.failures == [] and poll.total > 20, poll.outcomes
    assert samples and min(samples) >= 1, samples
    assert max(samples) >= 2  # the new worker ran beside the old one (start-first)
    assert node.url_get(APP)[1] == "Hello v2 from whole-app (web.0)\n"
    wait_for(lambda: sorted(row["name"] for row in ps(node)) == ["web.0", "worker.0"], timeout=60)
