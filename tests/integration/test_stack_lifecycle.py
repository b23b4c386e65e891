"""Stack lifecycle on the real engine: rollouts onto a new and a broken stack, fallbacks, gc, admission, restage."""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from fence import labels
from tests.integration.node_kit import Node, Poller, started_node
from tests.integration.staging_kit import write_app

SERVER = """
import os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def stack():
    try:
        return open("/etc/fence-test-stack").read().strip()
    except OSError:
        return "base"

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['STACKATO_APP_NAME']} {os.environ['INSTANCE_INDEX']} on {stack()}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
"""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=300)


def image_id(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def derive_stack(base: str, ref: str, script: str) -> str:
    """A second stack made cheaply from ``base``: run ``script`` as root in a throwaway
    container (test set-up, not fence), then commit it."""
    name = f"fence-test-build-{uuid.uuid4().hex[:8]}"
    try:
        docker("run", "--name", name, "--user", "0", "--network", "none", base, "bash", "-c", script)
        docker("commit", "--change", f"LABEL fence.test.stack={ref.rsplit(':', 1)[-1]}", name, ref)
    finally:
        docker("rm", "-f", name, check=False)
    return image_id(ref)


@dataclass
class Stacks:
    """Images this module made (all removed at its end)."""

    base: str
    next: str
    broken: str
    later: str
    tag: str

    def all(self) -> list[str]:
        return [self.next, self.broken, self.later]


@pytest.fixture(scope="module")
def stacks(engine: str) -> Iterator[Stacks]:
    tag = uuid.uuid4().hex[:8]
    made = Stacks(base=engine, next=f"fence-test/stack:next-{tag}", broken=f"fence-test/stack:broken-{tag}",
                  later=f"fence-test/stack:later-{tag}", tag=tag)
    try:
        derive_stack(engine, made.next, "echo next > /etc/fence-test-stack")
        derive_stack(engine, made.later, "echo later > /etc/fence-test-stack")
        derive_stack(engine, made.broken, "rm -f /usr/bin/bash /bin/bash")
        yield made
    finally:
        for ref in made.all():
            docker("rmi", ref, check=False)


@pytest.fixture
def node(tmp_path: Path, engine: str) -> Iterator[Node]:
    yield from started_node(tmp_path / "home")


def push(node: Node, tmp_path: Path, name: str, *extra: str, text: str = "") -> None:
    app = write_app(tmp_path / f"{name}-{uuid.uuid4().hex[:6]}", {
        "Procfile": "web: python3 server.py\n", "server.py": SERVER + text})
    result = node.cli("fence", "push", str(app), "--name", name, "--buildpack", "procfile", *extra)
    assert result.exit_code == 0, result.stderr + result.stdout[-2000:]


def instance_images(node: Node, app: str) -> list[str]:
    """The stack image ids of the app's current release's instances (an old release's may still drain)."""
    view = node.app(app)
    return [i["image_id"] for i in view["instance_list"] if i["release"] == view["release"]]


def test_rollout_moves_every_instance_onto_the_new_stack_without_a_failed_request(
        node: Node, stacks: Stacks, tmp_path: Path) -> None:
    push(node, tmp_path, "alpha", "--instances", "2")
    push(node, tmp_path, "beta")
    base_id, next_id = image_id(stacks.base), image_id(stacks.next)
    assert set(instance_images(node, "alpha") + instance_images(node, "beta")) == {base_id}
    releases = {app: node.app(app)["release"] for app in ("alpha", "beta")}
    assert node.cli("kato", "config", "set", "fence", "docker/image", stacks.next).exit_code == 0
    with Poller(node, "alpha") as poll_alpha, Poller(node, "beta") as poll_beta:
        result = node.cli("kato", "stack", "rollout")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert poll_alpha.failures == [] and poll_beta.failures == [], (poll_alpha.outcomes, poll_beta.outcomes)
    assert poll_alpha.total > 20 and poll_beta.total > 20
    assert any(body.endswith("on next") for body in poll_alpha.bodies)
    out = result.stdout
    assert f"-----> Rolling 2 apps onto {stacks.next}" in out
    assert out.count("starting a replacement on the new stack") == 3
    assert "alpha: 2 instances on the new stack" in out and "beta: 1 instance on the new stack" in out
    assert "2 moved; 3 instances replaced" in out.splitlines()[-1]
    assert instance_images(node, "alpha") == [next_id, next_id] and instance_images(node, "beta") == [next_id]
    assert {app: node.app(app)["release"] for app in ("alpha", "beta")} == releases  # no restaging
    assert node.url_get("beta")[1].strip() == "beta 0 on next"
    assert len(node.containers()) == 3
    images = {i["ref"]: i for i in json.loads(node.cli("kato", "image", "list", "--json").stdout)}
    assert images[stacks.next]["apps"] == ["alpha", "beta"] and images[stacks.next]["containers"] == 3
    assert images[stacks.base]["apps"] == []
    listing = node.cli("kato", "image", "list").stdout
    assert any(line.startswith(stacks.next) and line.endswith("alpha, beta") for line in listing.splitlines())
    again = node.cli("kato", "stack", "rollout")
    assert again.exit_code == 0 and "2 already" in again.stdout


def test_rollout_onto_a_broken_stack_stops_and_the_old_instances_keep_serving(
        node: Node, stacks: Stacks, tmp_path: Path) -> None:
    push(node, tmp_path, "steady", "--instances", "2")
    before = sorted(i["container"] for i in node.app("steady")["instance_list"])
    with Poller(node, "steady") as poll:
        result = node.cli("kato", "config", "set", "fence", "docker/image", stacks.broken, "--rollout")
    assert result.exit_code == 4, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: rollout onto {stacks.broken} failed for 1 of 1 apps: steady: instance 0:")
    assert result.stderr.count("\n") == 1
    assert "bash" in result.stderr  # why: the new stack has no bash
    assert "steady: FAILED: instance 0:" in result.stdout and "its old instances keep serving" in result.stdout
    assert poll.failures == [] and poll.total > 5, poll.outcomes
    view = node.app("steady")
    assert sorted(i["container"] for i in view["instance_list"]) == before
    assert [(i["state"], i["restarts"]) for i in view["instance_list"]] == [("running", 0), ("running", 0)]
    assert set(instance_images(node, "steady")) == {image_id(stacks.base)}
    assert len(node.containers()) == 2  # the failed replacement is gone


def test_fallback_stack_is_used_when_the_configured_one_is_absent(node: Node, stacks: Stacks, tmp_path: Path) -> None:
    absent = f"fence-test/absent:{stacks.tag}"
    assert node.cli("kato", "config", "set", "fence", "docker/image", absent).exit_code == 0
    assert node.cli("kato", "config", "set", "fence", "docker/images", f"{stacks.later},{stacks.next}").exit_code == 0
    push(node, tmp_path, "fallen")
    assert instance_images(node, "fallen") == [image_id(stacks.later)]
    assert node.url_get("fallen")[1].strip() == "fallen 0 on later"
    status = node.cli("kato", "status")
    assert f"warning: stack image {absent} is missing; using fallback {stacks.later} from docker/images" in status.stderr
    images = {i["ref"]: i for i in json.loads(node.cli("kato", "image", "list", "--json").stdout)}
    assert images[absent]["image_id"] is None and images[stacks.later]["in_use"] is True
    assert images[stacks.later]["apps"] == ["fallen"]


def test_gc_dry_run_lists_what_gc_removes_and_leaves_what_is_needed_or_not_ours(
        node: Node, stacks: Stacks, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    own_old = f"fence-test/stack:gc-old-{tag}"
    old_id = derive_stack(stacks.base, own_old, "echo gc-old > /etc/fence-test-stack")
    unrelated_tar = tmp_path / "unrelated.tar"
    (tmp_path / "hello.txt").write_text("not fence's\n")
    with tarfile.open(unrelated_tar, "w") as tar:
        tar.add(tmp_path / "hello.txt", arcname="hello.txt")
    unrelated_image = f"fence-test/unrelated:{tag}"
    unrelated_ctr = f"fence-test-unrelated-{tag}"
    owned_ctr = f"fence-test-owned-{tag}"
    try:
        docker("import", str(unrelated_tar), unrelated_image)
        docker("run", "--name", unrelated_ctr, "--network", "none", stacks.base, "true")  # exited, no fence.node
        assert node.cli("kato", "config", "set", "fence", "docker/image", own_old).exit_code == 0
        push(node, tmp_path, "keep")
        push(node, tmp_path, "keep", text="# v2\n")
        stage_only = node.cli("fence", "stage", str(write_app(tmp_path / "extra", {
            "Procfile": "web: python3 server.py\n", "server.py": SERVER + "# v3\n"})), "--name", "keep",
            "--buildpack", "procfile", "--json")
        assert stage_only.exit_code == 0, stage_only.stderr
        orphan = json.loads(stage_only.stdout)["id"]
        assert node.cli("kato", "config", "set", "fence", "docker/image", stacks.next, "--rollout").exit_code == 0
        docker("run", "--name", owned_ctr, "--network", "none", "--label", f"{labels.NODE}={node.home.node_id}",
               "--label", f"{labels.ROLE}={labels.ROLE_TASK}", stacks.base, "true")
        (node.root / "caches").mkdir(exist_ok=True)  # an empty build cache is never saved
        (node.root / "caches" / "ghost.tar").write_bytes(b"g" * 4096)

        dry = node.cli("kato", "gc", "--dry-run", "--json")
        assert dry.exit_code == 0, dry.stderr
        planned = json.loads(dry.stdout)
        text = node.cli("kato", "gc", "--dry-run").stdout
        assert "would remove" in text and text.splitlines()[-1].startswith("would free")
        real = node.cli("kato", "gc", "--json")
        assert real.exit_code == 0, real.stderr
        removed = json.loads(real.stdout)
        assert removed["items"] == planned["items"] and removed["errors"] == []
        assert removed["freed"] == planned["freed"] > 0
        found = {(i["kind"], i["name"]) for i in removed["items"]}
        owned_id = docker("ps", "-aq", "--no-trunc", "--filter", f"name={owned_ctr}").stdout.strip()
        assert ("droplet", orphan) in found and ("image", old_id) in found and ("cache", "ghost") in found
        assert {k for k, _ in found} <= {"droplet", "source", "droplet-image", "image", "cache", "container",
                                         "staging-log"}
        assert docker("image", "inspect", own_old, check=False).returncode != 0
        assert docker("ps", "-aq", "--filter", f"name={owned_ctr}").stdout.strip() == "" and owned_id == ""
        # untouched: what is not fence's, and what the app's kept releases need
        assert docker("image", "inspect", unrelated_image, check=False).returncode == 0
        assert docker("ps", "-aq", "--filter", f"name={unrelated_ctr}").stdout.strip() != ""
        for ref in (stacks.base, stacks.next):
            assert docker("image", "inspect", ref, check=False).returncode == 0
        releases = json.loads(node.cli("fence", "releases", "keep", "--json").stdout)
        assert [r["number"] for r in releases] == [2, 1]
        droplets = {d["id"] for d in json.loads(node.cli("fence", "droplets", "--json").stdout)}
        assert {r["droplet"] for r in releases} <= droplets and orphan not in droplets
        assert node.cli("fence", "rollback", "keep").exit_code == 0  # release 1's droplet is still there
        assert node.url_get("keep")[0] == 200
        assert json.loads(node.cli("kato", "gc", "--dry-run", "--json").stdout)["items"] == []
    finally:
        docker("rm", "-f", unrelated_ctr, owned_ctr, check=False)
        docker("rmi", unrelated_image, own_old, check=False)


def test_admission_refuses_an_instance_bigger_than_the_node(node: Node, tmp_path: Path) -> None:
    too_big = f"{2 * psutil.virtual_memory().total // 2**30 + 1}G"
    app = write_app(tmp_path / "big", {"Procfile": "web: python3 server.py\n", "server.py": SERVER})
    result = node.cli("fence", "push", str(app), "--name", "big", "--buildpack", "procfile", "--mem", too_big)
    assert result.exit_code == 4, result.stdout[-2000:] + result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: release 1 of big did not start: could not start: not enough memory "
                                    "on this node for instance 0 of big")
    assert "node/memory_overcommit 1 x" in result.stderr
    [instance] = node.app("big")["instance_list"]
    assert instance["state"] == "crashed" and instance["reason"].startswith("could not start: not enough memory")
    assert node.containers() == []
    status = node.cli("kato", "status")
    assert "warning: app big is crash-looping: instance 0 restarted" in status.stderr
    info = json.loads(node.cli("kato", "node", "info", "--json").stdout)
    assert info["memory_promised_mib"] == 0 and info["disks"][0]["label"] == "FENCE_HOME"
    assert info["disks"][1]["label"] == "engine data root"
    assert node.cli("kato", "node", "info").stdout.startswith(f"node:        {node.home.node_id}")


def test_restage_from_the_kept_source_and_rollout_restage(node: Node, stacks: Stacks, tmp_path: Path) -> None:
    push(node, tmp_path, "again")
    first = node.app("again")
    assert node.cli("kato", "config", "set", "fence", "docker/image", stacks.later).exit_code == 0
    result = node.cli("fence", "restage", "again")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "-----> Restaging again from the source of release 1" in result.stdout
    view = node.app("again")
    assert view["release"] == 2 and view["droplet"] != first["droplet"] and view["stack_image"] == stacks.later
    assert node.app("again")["releases"][0]["note"] == "restage of release 1"
    assert node.url_get("again")[1].strip() == "again 0 on later"
    assert node.cli("kato", "config", "set", "fence", "docker/image", stacks.next).exit_code == 0
    rolled = node.cli("kato", "stack", "rollout", "--restage")
    assert rolled.exit_code == 0, rolled.stderr + rolled.stdout
    assert "1 restaged" in rolled.stdout.splitlines()[-1] and node.app("again")["release"] == 3
    assert instance_images(node, "again") == [image_id(stacks.next)]
    for host_file in (node.root / "sources" / "again").iterdir():
        host_file.unlink()
    missing = node.cli("fence", "restage", "again")
    assert missing.exit_code == 4 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: cannot restage again:") and "push the app again" in missing.stderr
