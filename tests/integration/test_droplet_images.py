"""Droplet images on the real engine: instances start from the stack with the droplet already
unpacked, copy nothing at start, and the images come and go with their releases."""

from __future__ import annotations

import json
import subprocess

import pytest

from fence import labels
from fence.running.starter import SCRIPT_ENV
from tests.integration.node_kit import Node, started_node
from tests.integration.staging_kit import EXAMPLES


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path_factory.mktemp("node") / "home")


def inspect(kind: str, ref: str) -> dict:
    done = subprocess.run(["docker", kind, "inspect", "--size", ref] if kind == "container"
                          else ["docker", kind, "inspect", ref], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def image_present(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def test_instances_run_from_the_droplet_image_and_copy_nothing_at_start(node: Node) -> None:
    pushed = node.cli("fence", "push", str(EXAMPLES / "python-hello"), "--name", "imaged", "--instances", "2")
    assert pushed.exit_code == 0, pushed.stderr + pushed.stdout
    [made] = [line for line in pushed.stdout.splitlines() if "Droplet image" in line]
    view = node.app("imaged")
    droplet = view["droplet"]
    stack = inspect("image", "fence/stack:bookworm")
    ref = f"fence/droplet:{node.home.node_id}-{droplet[:16]}-{stack['Id'].removeprefix('sha256:')[:12]}"
    assert ref in made
    image = inspect("image", ref)
    assert image["Parent"] == stack["Id"]  # one layer on the stack
    assert image["Config"]["Labels"][labels.DROPLET] == droplet
    assert image["Config"]["Labels"][labels.STACK_ID] == stack["Id"]
    for container_id in node.containers():
        ctr = inspect("container", container_id)
        assert ctr["Config"]["Image"] == ref
        assert ctr["Config"]["Labels"][labels.STACK_ID] == stack["Id"]
        assert ctr["Config"]["Cmd"][:2] == ["/bin/bash", "-c"] and "exec " not in ctr["Config"]["Cmd"][2]
        assert any(e.startswith(f"{SCRIPT_ENV}=#!/bin/bash") for e in ctr["Config"]["Env"])
        assert ctr["SizeRw"] < 1_000_000, f"{ctr['SizeRw']} bytes written into an instance at start"
    assert {i["image_id"] for i in view["instance_list"]} == {stack["Id"]}  # the stack, for rollouts
    seen = {node.url_get("imaged")[1].strip() for _ in range(30)}
    assert seen == {"Hello from fence (instance 0)", "Hello from fence (instance 1)"}
    # The app's processes see neither the script's variable nor its text on a command line.
    # (docker exec itself gets the container's config env, so look at the app's own process.)
    seen = subprocess.run(["docker", "exec", node.containers()[0], "bash", "-c",
                           "app=$(pgrep -P 1 | head -1); tr '\\0' ' ' < /proc/1/cmdline; echo; "
                           "tr '\\0' ' ' < /proc/$app/cmdline; echo; tr '\\0' '\\n' < /proc/$app/environ"],
                          capture_output=True, text=True)
    init, app, *environ = seen.stdout.splitlines()
    assert "export" not in init and app.startswith("python"), seen.stdout
    assert "PORT=8080" in environ and not any(e.startswith(SCRIPT_ENV) for e in environ), environ
    ran = node.cli("fence", "run", "imaged", "--", "bash", "-c", "pwd; ls -ld . | cut -d' ' -f3")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.splitlines()[-2:] == ["/home/stackato/app", "stackato"]  # after the app's hook output


def test_a_droplet_image_removed_by_hand_is_made_again_at_the_next_start(node: Node) -> None:
    assert node.cli("fence", "scale", "imaged", "0").exit_code == 0
    [ref] = _droplet_images(node)
    assert subprocess.run(["docker", "rmi", ref], capture_output=True).returncode == 0
    scaled = node.cli("fence", "scale", "imaged", "1")
    assert scaled.exit_code == 0, scaled.stderr + scaled.stdout
    assert image_present(ref)
    assert node.url_get("imaged")[0] == 200


def test_gc_removes_the_droplet_image_of_a_deleted_app(node: Node) -> None:
    refs = _droplet_images(node)
    assert refs
    assert node.cli("fence", "delete", "imaged").exit_code == 0
    dry = json.loads(node.cli("kato", "gc", "--dry-run", "--json").stdout)
    listed = {item["name"] for item in dry["items"] if item["kind"] == "droplet-image"}
    assert listed == set(refs)
    done = node.cli("kato", "gc")
    assert done.exit_code == 0, done.stderr
    assert not any(image_present(ref) for ref in refs)
    assert image_present("fence/stack:bookworm")


def _droplet_images(node: Node) -> list[str]:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                          f"label={labels.NODE}={node.home.node_id}", "--filter", f"label={labels.DROPLET}"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.split() if line.startswith("fence/droplet:"))
