"""Dockerfile and image apps end to end on the real engine: push, route, redeploy, roll back, --image, refusals."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from fence import labels
from tests.integration.node_kit import Node, Poller, started_node
from tests.integration.staging_kit import EXAMPLES

pytestmark = pytest.mark.engine


def _images(*filters: str) -> list[str]:
    """Ids of the images with every ``label=…`` filter (comma-separated ones too)."""
    args = [arg for spec in filters for part in spec.split(",") for arg in ("--filter", part)]
    ids = subprocess.run(["docker", "images", "-aq", "--no-trunc", *args], capture_output=True, text=True).stdout
    return list(dict.fromkeys(ids.split()))


def _remove_images(label: str) -> None:
    for image_id in _images(f"label={label}"):
        tags = subprocess.run(["docker", "image", "inspect", "-f", "{{range .RepoTags}}{{.}} {{end}}", image_id],
                              capture_output=True, text=True).stdout.split()
        subprocess.run(["docker", "rmi", "-f", *tags, image_id], capture_output=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Iterator[Node]:
    """One node for the module; its build images (and the test's own images) go afterwards."""
    root = tmp_path_factory.mktemp("node") / "home"
    yield from started_node(root)
    _remove_images(f"{labels.NODE}={Node(root=root).home.node_id}")
    _remove_images(f"fence-test={root}")


def dockerfile_app(tmp_path: Path, greeting: str) -> Path:
    """The Dockerfile example, answering with ``greeting`` first."""
    app = tmp_path / f"dockerfile-{abs(hash(greeting)) % 10**6}"
    shutil.copytree(EXAMPLES / "dockerfile-app", app)
    source = (app / "app.py").read_text()
    (app / "app.py").write_text(source.replace("hello from a Dockerfile app", greeting))
    return app


def test_a_dockerfile_app_pushes_routes_redeploys_without_a_failed_request_and_rolls_back(
        node: Node, tmp_path: Path) -> None:
    first = node.cli("fence", "push", str(dockerfile_app(tmp_path, "v1")), "--name", "dock")
    assert first.exit_code == 0, first.stderr
    assert "Building dock from Dockerfile" in first.stdout + first.stderr
    view = node.app("dock")
    assert [i["state"] for i in view["instance_list"]] == ["running"] * 2
    status, body = node.url_get("dock")
    assert status == 200 and body.startswith("v1, uid 1000"), body  # the image's USER 1000
    v2 = dockerfile_app(tmp_path, "v2")
    with Poller(node, "dock") as poll:
        second = node.cli("fence", "push", str(v2), "--name", "dock")
        assert second.exit_code == 0, second.stderr
        time.sleep(1)
    print(f"redeploy of a Dockerfile app: {poll.total} requests, outcomes {dict(poll.outcomes)}")
    assert poll.failures == [] and poll.total > 20, poll.outcomes
    assert node.url_get("dock")[1].startswith("v2")
    again = node.cli("fence", "push", str(v2), "--name", "dock")
    assert again.exit_code == 0 and "reusing image droplet" in again.stdout + again.stderr  # warm: no build
    rolled = node.cli("fence", "rollback", "dock", "1")
    assert rolled.exit_code == 0, rolled.stderr
    assert node.url_get("dock")[1].startswith("v1")
    restaged = node.cli("fence", "restage", "dock", "--force")  # from the kept source: built again
    assert restaged.exit_code == 0 and "Building dock from Dockerfile" in restaged.stdout + restaged.stderr
    assert node.url_get("dock")[1].startswith("v1")
    built = f"label={labels.NODE}={node.home.node_id},label={labels.APP}=dock"
    assert len(_images(built)) >= 2  # both releases' images are kept
    assert node.cli("fence", "delete", "dock").exit_code == 0
    collected = node.cli("kato", "gc")
    assert collected.exit_code == 0 and "built image of dock" in collected.stdout, collected.stdout
    assert _images(built) == []  # the app's build images (and build cache) went with it


def test_an_image_with_user_root_pushed_with_image_runs_as_uid_1000_without_caps(node: Node, tmp_path: Path) -> None:
    context = tmp_path / "rootimage"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM fence/stack:bookworm\nUSER root\n"
        "CMD [\"python3\", \"-c\", \"import http.server as h, os\\n"
        "class H(h.BaseHTTPRequestHandler):\\n"
        "  def do_GET(s):\\n"
        "    b = open('/proc/self/status').read().encode(); s.send_response(200); s.end_headers(); s.wfile.write(b)\\n"
        "h.HTTPServer(('', int(os.environ['PORT'])), H).serve_forever()\"]\n")
    tag = f"fence-test/rootimage:{node.home.node_id}"
    built = subprocess.run(["docker", "build", "-q", "--label", f"fence-test={node.root}", "-t", tag, str(context)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "stackato.yml").write_text("name: rooted\nprocesses:\n  release: echo released as $(id -u)\n")
    pushed = node.cli("fence", "push", str(meta), "--image", tag)
    assert pushed.exit_code == 0, pushed.stderr
    said = pushed.stdout + pushed.stderr
    assert "runs as uid 1000 instead" in said and "released as 1000" in said  # the release phase ran, as 1000
    status, body = node.url_get("rooted")
    assert status == 200, body
    fields = dict(line.split(":", 1) for line in body.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == ["1000", "1000"], fields["Uid"]
    assert int(fields["CapEff"].strip(), 16) == 0 and fields["NoNewPrivs"].strip() == "1"
    task = node.cli("fence", "run", "rooted", "--", "sh", "-c", "id -u; echo $HOME; grep CapEff /proc/self/status")
    assert task.exit_code == 0, task.stderr  # a one-off task of an image app: the same user and hardening
    assert task.stdout.split()[:2] == ["1000", "/home/stackato"] and task.stdout.split()[-1] == "0" * 16, task.stdout


@pytest.mark.parametrize(("args", "said"), [
    (("--builder", "kaniko"), "--builder 'kaniko' is not a builder (one of: dockerfile, buildpack)"),
    (("--image", "Not An Image!"), "--image 'Not An Image!' is not an image reference"),
])
def test_a_bad_builder_or_image_value_is_one_line(node: Node, args: tuple[str, ...], said: str) -> None:
    result = node.cli("fence", "push", str(EXAMPLES / "dockerfile-app"), *args)
    assert result.exit_code != 0 and said in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_image_missing_from_the_engine_is_refused_in_one_line(node: Node, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "stackato.yml").write_text("name: ghost\n")
    result = node.cli("fence", "push", str(meta), "--image", "fence-test/no-such-image:1")
    assert result.exit_code != 0 and "is not on the node's Docker Engine" in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line.lower()]) <= 1
