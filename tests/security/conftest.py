"""A node with one running app, shared by the security tests of a module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.node_kit import Node, started_node
from tests.integration.staging_kit import write_app

WEB = "web: python3 -m http.server $PORT\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path_factory.mktemp("secnode") / "home")


@pytest.fixture(scope="module")
def app(node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A running app whose staging hooks recorded their identity into the droplet."""
    source = write_app(tmp_path_factory.mktemp("secapp") / "app", {
        "Procfile": WEB,
        "secret.txt": "app-one-secret\n",
        "stackato.yml": "name: target\nhooks:\n  pre-staging:\n"
                        "    - grep -E '^(Uid|CapEff|NoNewPrivs)' /proc/self/status > staging-identity.txt\n",
    })
    result = node.cli("fence", "push", str(source))
    assert result.exit_code == 0, result.stderr
    return "target"


def task(node: Node, app: str, script: str) -> tuple[int, str]:
    """Run a bash script as a one-off task of the app; returns its exit code and output."""
    result = node.cli("fence", "run", app, "--", "bash", "-c", script, timeout=300)
    lines = [line for line in result.stdout.splitlines() if not line.startswith("pre-running")]
    return result.exit_code, "\n".join(lines)


def in_instance(node: Node, app: str, script: str) -> tuple[int, str]:
    """Run a bash script inside the app's running instance 0 as the app user (test set-up uses
    the docker CLI; fence itself never execs into instances)."""
    import subprocess
    [instance] = [i for i in node.app(app)["instance_list"] if i["index"] == 0]
    proc = subprocess.run(["docker", "exec", "--user", "1000:1000", instance["container"], "bash", "-c", script],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def host_path(node: Node) -> Path:
    return node.root
