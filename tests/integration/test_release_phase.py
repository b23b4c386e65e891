"""The release phase on the real engine: it runs before any instance, a failure or timeout leaves the old release serving."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from fence import labels
from tests.integration.node_kit import Node, Poller, started_node
from tests.integration.staging_kit import write_app

# The Procfile buildpack stages offline in seconds; the web process answers with its greeting.
WEB = ("web: python3 -c 'import os, http.server as s; s.HTTPServer.allow_reuse_address = True; "
       "H = type(\"H\", (s.BaseHTTPRequestHandler,), {\"do_GET\": lambda r: (r.send_response(200), "
       "r.end_headers(), r.wfile.write(os.environ.get(\"GREETING\", \"hi\").encode()))}); "
       "s.HTTPServer((\"0.0.0.0\", int(os.environ[\"PORT\"])), H).serve_forever()'\n")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path_factory.mktemp("node") / "home")


def _app(host_dir: Path, release: str | None) -> Path:
    return write_app(host_dir, {"Procfile": WEB + (f"release: {release}\n" if release else "")})


def _push(node: Node, host_dir: Path, name: str, *more: str):  # noqa: ANN202
    return node.cli("fence", "push", str(host_dir), "--name", name, "--buildpack", "procfile", *more)


def _instances(node: Node, app: str) -> list[dict]:
    ids = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={labels.NODE}={node.home.node_id}",
                          "--filter", f"label={labels.APP}={app}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                     check=True).stdout) if ids else []


def _started(container: dict) -> float:
    stamp = container["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{frac or 0}")


def test_the_release_command_runs_before_any_instance_starts(node: Node, tmp_path: Path) -> None:
    app = _app(tmp_path / "first", 'echo "release-marker $(date +%s.%N) greeting=$GREETING"')
    result = _push(node, app, "relfirst", "--env", "GREETING=hello")
    assert result.exit_code == 0, result.stderr + result.stdout
    out = result.stdout
    heading = out.index('-----> Running release command: echo "release-marker')
    assert heading < out.index("-----> Release 1: starting")
    [marker] = [line.split() for line in out.splitlines() if line.strip().startswith("release-marker ")]
    assert marker[2] == "greeting=hello"  # the app's env
    ran_at = float(marker[1])
    instances = _instances(node, "relfirst")
    assert [c["Config"]["Labels"][labels.ROLE] for c in instances] == [labels.ROLE_INSTANCE]  # the task is gone
    assert all(_started(c) > ran_at for c in instances)
    logs = node.cli("fence", "logs", "relfirst", "--release")
    assert logs.exit_code == 0 and "[release] release-marker" in logs.stdout, logs.stderr
    assert logs.stdout.splitlines()[-1] == "[release] fence: exited 0"
    # An env change makes a release: the release command runs again, with the new env.
    changed = node.cli("fence", "env", "relfirst", "set", "GREETING=again")
    assert changed.exit_code == 0, changed.stderr
    assert "greeting=again" in node.cli("fence", "logs", "relfirst", "--release").stdout
    assert node.cli("fence", "delete", "relfirst").exit_code == 0


def test_a_failing_release_command_leaves_the_previous_release_serving(node: Node, tmp_path: Path) -> None:
    assert _push(node, _app(tmp_path / "good", "echo fine"), "relkeep", "--env", "GREETING=v1").exit_code == 0
    assert node.url_get("relkeep") == (200, "v1")
    with Poller(node, "relkeep") as poll:
        failed = _push(node, _app(tmp_path / "bad", "echo broken migration; exit 1"), "relkeep",
                       "--env", "GREETING=v2")
    assert failed.exit_code == 4, failed.stderr + failed.stdout
    assert failed.stderr == ("error: release command `echo broken migration; exit 1` of relkeep exited 1: "
                             "release 2 was not deployed; release 1 keeps serving\n")
    assert "       broken migration" in failed.stdout
    assert poll.failures == [] and poll.total > 0, poll.outcomes
    assert set(poll.bodies) == {"v1"}
    view = node.app("relkeep")
    assert view["release"] == 1 and [r["number"] for r in view["releases"]] == [1]
    assert view["env"]["GREETING"] == "v1"
    containers = _instances(node, "relkeep")
    assert [(c["Config"]["Labels"][labels.ROLE], c["Config"]["Labels"][labels.RELEASE]) for c in containers] == \
        [(labels.ROLE_INSTANCE, "1")]
    logs = node.cli("fence", "logs", "relkeep", "--release")
    assert "[release] broken migration" in logs.stdout and logs.stdout.splitlines()[-1] == "[release] fence: exited 1"
    assert node.cli("fence", "delete", "relkeep").exit_code == 0


def test_release_timeout_kills_the_command_and_leaves_nothing(node: Node, tmp_path: Path) -> None:
    assert node.cli("kato", "config", "set", "fence", "release/timeout", "3").exit_code == 0
    try:
        failed = _push(node, _app(tmp_path / "slow", "echo waiting; sleep 120"), "relslow")
    finally:
        assert node.cli("kato", "config", "set", "fence", "release/timeout", "300").exit_code == 0
    assert failed.exit_code == 4, failed.stderr + failed.stdout
    assert failed.stderr == ("error: release command `echo waiting; sleep 120` of relslow did not finish within "
                             "3 s (release/timeout) and was killed: release 1 was not deployed\n")
    assert _instances(node, "relslow") == [] and node.containers(labels.ROLE_TASK) == []
    assert node.cli("fence", "app", "relslow").exit_code == 3  # a first push that failed made no app
    logs = node.cli("fence", "logs", "relslow", "--release")
    assert logs.exit_code == 0 and logs.stdout.splitlines()[-1] == "[release] fence: killed after 3 s (release/timeout)"
