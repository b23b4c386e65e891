"""Health checks on the real engine and nginx: an http check that fails is never routed; a running instance whose check starts failing is replaced, the crash reported."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.node_kit import Node, Poller, started_node, wait_for
from tests.integration.staging_kit import write_app

# A web process whose /healthz answers 500 when SICK is set or once /tmp/fence-sick exists (a
# signal file the test creates inside the running container); every other path answers VERSION.
APP_PY = """
import http.server, os

SICK = "/tmp/fence-sick"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            code = 500 if os.environ.get("SICK") or os.path.exists(SICK) else 200
            body = b"sick\\n" if code == 500 else b"ok\\n"
        else:
            code, body = 200, (os.environ.get("VERSION", "?") + "\\n").encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("request", self.path, flush=True)

http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def health_app(root: Path, *, version: str, sick: bool = False) -> Path:
    env = f"env:\n  VERSION: {version}\n" + ("  SICK: '1'\n" if sick else "")
    return write_app(root, {
        "Procfile": "web: python3 app.py\n",
        "app.py": APP_PY,
        "stackato.yml": env + "health:\n  type: http\n  path: /healthz\n  timeout: 5\n  interval: 1\n",
    })


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path_factory.mktemp("node") / "home")



def test_http_check_returning_500_is_never_routed_and_the_old_release_keeps_serving(
        node: Node, tmp_path: Path) -> None:
    first = node.cli("fence", "push", str(health_app(tmp_path / "v1", version="v1")), "--name", "hc")
    assert first.exit_code == 0, first.stderr + first.stdout
    assert node.url_get("hc") == (200, "v1\n")
    with Poller(node, "hc") as poller:
        failed = node.cli("fence", "push", str(health_app(tmp_path / "v2", version="v2", sick=True)),
                          "--name", "hc")
    assert failed.exit_code != 0
    [line] = failed.stderr.strip().splitlines()
    assert "release 2 of hc did not start" in line and "the previous release keeps serving" in line
    assert "health check http /healthz did not pass within 5 s (last: 500)" in line
    # The router never sent the sick release a request: every answer came from release 1.
    assert poller.total > 0 and poller.failures == [] and set(poller.bodies) == {"v1"}
    assert {node.url_get("hc")[1] for _ in range(10)} == {"v1\n"}
    view = node.app("hc")
    assert all(i["state"] != "running" for i in view["instance_list"] if i["release"] == 2)
    assert node.cli("fence", "delete", "hc").exit_code == 0


def test_running_instance_whose_check_starts_failing_is_replaced_and_the_crash_reported(
        node: Node, tmp_path: Path) -> None:
    pushed = node.cli("fence", "push", str(health_app(tmp_path / "live", version="live")), "--name", "live")
    assert pushed.exit_code == 0, pushed.stderr + pushed.stdout
    [instance] = node.app("live")["instance_list"]
    sick = instance["container"]
    subprocess.run(["docker", "exec", sick, "touch", "/tmp/fence-sick"], check=True, capture_output=True)
    reason = "health check http /healthz: 500 three times"
    # Three failed checks a second apart, then a fresh container (no signal file) passes: generous
    # bounds, the node is loaded.
    view = wait_for(lambda: (v := node.app("live"))["instance_list"] and all(
        i["state"] == "running" and i["container"] != sick and i["restarts"] == 1 for i in v["instance_list"])
        and v, timeout=90)
    assert view["instance_list"][0]["last_crash"] == reason
    shown = node.cli("fence", "app", "live")
    assert shown.exit_code == 0 and f"(last crash: {reason})" in shown.stdout
    assert node.url_get("live") == (200, "live\n")
    assert sick not in " ".join(node.containers())  # the sick container is gone
    assert node.cli("fence", "delete", "live").exit_code == 0
