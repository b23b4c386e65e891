"""Staging-input reuse on the real engine: unchanged inputs hand back their droplet without a
container; a changed source, env or buildpack, --force, or a droplet or kept source gc removed
stage for real; a reused droplet becomes a release and can be restaged like a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from fence import labels
from fence.home import NodeHome
from fence.models import DropletRecord
from fence.service import NodeService
from tests.integration.node_kit import Node, started_node
from tests.integration.staging_kit import checked_service, stage, write_app, write_buildpack

COMPILE = """
echo "compiled by $(basename "$(dirname "$(dirname "$0")")")" > "$1/compiled.txt"
"""
RELEASE = """
printf -- '---\\ndefault_process_types:\\n  web: sleep 1000\\n'
"""


@pytest.fixture
def node(home: NodeHome, engine: str):  # noqa: ANN201
    yield from checked_service(home)


def staging_creates(node_id: str, since: float) -> list[str]:
    """Ids of this node's staging containers the engine created since ``since`` (engine events)."""
    out = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 1:.3f}",
                          "--filter", "type=container", "--filter", "event=create",
                          "--filter", f"label={labels.NODE}={node_id}",
                          "--filter", f"label={labels.ROLE}={labels.ROLE_STAGING}",
                          "--format", "{{.Actor.ID}}"], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.split()


def staged_for_real(node: NodeService, app: Path, pack: Path, **kwargs: object) -> tuple[DropletRecord, list[str]]:
    """Stage, and check that it did run a staging container."""
    since, log = time.time() - 0.5, []
    record = stage(node, app, buildpacks=(str(pack),), log=log, **kwargs)  # type: ignore[arg-type]
    assert any(line.startswith("-----> Staging app on ") for line in log), log
    assert not any("Staging inputs unchanged" in line for line in log), log
    assert len(staging_creates(node.node_id, since)) == 1
    return record, log


def reused(node: NodeService, app: Path, pack: Path, expected: DropletRecord, **kwargs: object) -> list[str]:
    """Stage, and check that the expected droplet came back with no container created."""
    since, log = time.time() - 0.5, []
    record = stage(node, app, buildpacks=(str(pack),), log=log, **kwargs)  # type: ignore[arg-type]
    assert record.id == expected.id and record.inputs_key == expected.inputs_key
    assert any(line.startswith("-----> Staging inputs unchanged (source ")
               and f"reusing droplet {expected.id[:12]}; use --force to stage again" in line for line in log), log
    assert not any(line.startswith("-----> Staging app on ") for line in log), log
    assert staging_creates(node.node_id, since) == []
    return log


def test_unchanged_inputs_reuse_the_droplet_and_each_change_stages_again(node: NodeService, tmp_path: Path) -> None:
    pack = write_buildpack(tmp_path / "pack", detect="echo Pack\n", compile=COMPILE, release=RELEASE)
    app = write_app(tmp_path / "app", {"index.txt": "one\n", "lib/util.txt": "u\n"})
    first, _ = staged_for_real(node, app, pack)
    assert len(first.inputs_key) == 64
    log = reused(node, app, pack, first)
    assert (node.home.host_root / "logs" / "staging" / "app").is_dir()
    assert any("buildpack pack path-" in line for line in log), log

    # Same bytes, new modification times: still the same inputs.
    for host_file in app.rglob("*"):
        os.utime(host_file, (1_000_000, 1_000_000))
    reused(node, app, pack, first)

    with_env, _ = staged_for_real(node, app, pack, env={"GREETING": "hi"})
    assert with_env.id != first.id and with_env.inputs_key != first.inputs_key
    reused(node, app, pack, with_env, env={"GREETING": "hi"})
    # Back to no env: the first droplet's source was pruned (an app keeps the sources of its
    # releases and of its newest droplet), so it cannot be reused: it is staged again.
    staged_for_real(node, app, pack)

    (app / "lib" / "util.txt").write_text("changed\n")
    changed_source, _ = staged_for_real(node, app, pack)
    assert changed_source.inputs_key not in (first.inputs_key, with_env.inputs_key)

    (pack / "bin" / "compile").write_text((pack / "bin" / "compile").read_text() + "echo v2\n")
    changed_pack, log = staged_for_real(node, app, pack)
    assert changed_pack.inputs_key != changed_source.inputs_key
    assert any("v2" in line for line in log)

    node.config.set("fence", "staging/memory", "640")
    more_memory, _ = staged_for_real(node, app, pack)
    assert more_memory.inputs_key != changed_pack.inputs_key

    forced, _ = staged_for_real(node, app, pack, force=True)
    assert forced.id != more_memory.id and forced.inputs_key == more_memory.inputs_key
    reused(node, app, pack, forced)  # the newest droplet of a key is the one reused


def test_a_droplet_or_kept_source_that_gc_removed_is_not_reused(node: NodeService, tmp_path: Path) -> None:
    pack = write_buildpack(tmp_path / "pack", detect="echo Pack\n", compile=COMPILE, release=RELEASE)
    app = write_app(tmp_path / "app", {"index.txt": "one\n"})
    first, _ = staged_for_real(node, app, pack)
    node.droplets.delete(first.id)
    second, _ = staged_for_real(node, app, pack)
    assert second.id != first.id and second.inputs_key == first.inputs_key
    for kept in node.sources.files():
        if kept.droplet == second.id:
            node.sources.remove(kept)
    third, _ = staged_for_real(node, app, pack)
    assert node.sources.has(app="app", droplet=third.id)
    reused(node, app, pack, third)


@pytest.fixture
def daemon_node(tmp_path: Path, engine: str):  # noqa: ANN201
    yield from started_node(tmp_path / "home")


def test_push_and_restage_accept_a_reused_droplet_and_force_stages_again(daemon_node: Node, tmp_path: Path) -> None:
    node = daemon_node
    pack = write_buildpack(tmp_path / "pack", detect="echo Pack\n", compile=COMPILE, release="""
        printf -- '---\\ndefault_process_types:\\n  web: python3 -m http.server $PORT\\n'
    """)
    app = write_app(tmp_path / "app", {"index.html": "hello\n"})
    pushed = node.cli("fence", "push", str(app), "--name", "again", "--buildpack", str(pack))
    assert pushed.exit_code == 0, pushed.stderr + pushed.stdout
    first = node.app("again")

    since = time.time() - 0.5
    again = node.cli("fence", "push", str(app), "--name", "again", "--buildpack", str(pack))
    assert again.exit_code == 0, again.stderr + again.stdout
    assert f"reusing droplet {first['droplet'][:12]}" in again.stdout
    view = node.app("again")
    assert view["release"] == 2 and view["droplet"] == first["droplet"] and view["running"] == 1
    assert node.url_get("again")[0] == 200

    restaged = node.cli("fence", "restage", "again")
    assert restaged.exit_code == 0, restaged.stderr + restaged.stdout
    assert "Staging inputs unchanged" in restaged.stdout
    assert node.app("again")["release"] == 3 and node.app("again")["droplet"] == first["droplet"]
    assert staging_creates(node.home.node_id, since) == []

    forced = node.cli("fence", "restage", "again", "--force")
    assert forced.exit_code == 0, forced.stderr + forced.stdout
    assert "Staging inputs unchanged" not in forced.stdout and "-----> Staging again on " in forced.stdout
    view = node.app("again")
    assert view["release"] == 4 and view["droplet"] != first["droplet"] and view["running"] == 1
    assert len(staging_creates(node.home.node_id, since)) == 1

    staged = node.cli("fence", "stage", str(app), "--name", "again", "--buildpack", str(pack), "--json")
    assert staged.exit_code == 0, staged.stderr
    assert json.loads(staged.stdout)["id"] == view["droplet"]  # the forced restage's droplet, reused
    forced_stage = node.cli("fence", "stage", str(app), "--name", "again", "--buildpack", str(pack), "--force")
    assert forced_stage.exit_code == 0 and "-----> Staging again on " in forced_stage.stdout
    assert len(staging_creates(node.home.node_id, since)) == 2
