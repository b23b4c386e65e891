"""Staging on the real engine: buildpacks by name, path and git URL, chains, hooks, cache, failures."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest

from fence.errors import NoBuildpackDetected, StagingFailed, StagingTimeout
from fence.home import NodeHome
from fence.service import NodeService
from tests.integration.staging_kit import (
    EXAMPLES,
    checked_service,
    droplet_files,
    git_repo,
    stage,
    staging_info,
    write_app,
    write_buildpack,
)

ECHO_RELEASE = """
cat <<'YAML'
---
default_process_types:
  web: ./run-web
  clock: ./run-clock
config_vars:
  FROM_RELEASE: "yes"
YAML
"""


@pytest.fixture
def node(home: NodeHome, engine: str):  # noqa: ANN201
    yield from checked_service(home)


def test_custom_buildpack_by_path_merges_release_with_procfile(node: NodeService, tmp_path: Path) -> None:
    pack = write_buildpack(tmp_path / "pack", detect="echo Echo\n",
                           compile='echo "compiled by $(id -u) in $(pwd)" > "$1/compiled.txt"\n',
                           release=ECHO_RELEASE)
    app = write_app(tmp_path / "app", {"Procfile": "web: ./from-procfile\nworker: ./work\n", "a.txt": "x"})
    log: list[str] = []
    record = stage(node, app, buildpacks=(str(pack),), log=log)
    info = staging_info(node, record)
    assert info["process_types"] == {"web": "./from-procfile", "clock": "./run-clock", "worker": "./work"}
    assert info["start_command"] == "./from-procfile" == record.start_command
    assert info["config_vars"] == {"FROM_RELEASE": "yes"}
    assert info["buildpacks"][0]["version"].startswith("path-")
    assert info["stack"]["image_id"].startswith("sha256:")
    files = droplet_files(node, record)
    assert files["app/compiled.txt"] == b"compiled by 1000 in /home/stackato/app\n"
    assert "app/a.txt" in files and "staging_info.yml" in files
    assert any(line.startswith("-----> ") for line in log)
    assert node.droplet(record.id) == record


def test_buildpack_from_local_git_url_at_a_tag(node: NodeService, tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "packrepo", {
        "bin/detect": "#!/bin/bash\necho Gitpack\n",
        "bin/compile": "#!/bin/bash\necho from-git > \"$1/marker\"\n",
    }, executable=("bin/detect", "bin/compile"))
    app = write_app(tmp_path / "app", {"Procfile": "web: sleep 1000\n"})
    record = stage(node, app, buildpacks=(f"file://{tmp_path / 'packrepo'}#v1",))
    assert record.buildpacks[0].version == commit
    assert droplet_files(node, record)["app/marker"] == b"from-git\n"


def test_multi_buildpack_supply_then_finalize(node: NodeService, tmp_path: Path) -> None:
    first = write_buildpack(tmp_path / "supplier", detect="exit 0\n",
                            supply='mkdir -p "$3/$4"; echo "supplied by $4" > "$3/$4/dep"\n')
    last = write_buildpack(tmp_path / "finisher", detect="exit 0\n",
                           finalize='cat "$3/0/dep" > "$1/from-deps"; echo "finalized at $4" >> "$1/from-deps"\n',
                           release="echo 'default_process_types: {web: ./go}'\n")
    app = write_app(tmp_path / "app", {"index.txt": "hi"})
    record = stage(node, app, buildpacks=(str(first), str(last)))
    assert droplet_files(node, record)["app/from-deps"] == b"supplied by 0\nfinalized at 1\n"
    assert [b.name for b in record.buildpacks] == ["supplier", "finisher"]
    assert record.start_command == "./go"


def test_hooks_run_in_order_as_the_app_user_and_admin_hooks_after(node: NodeService, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {
        "Procfile": "web: sleep 1000\n",
        "stackato.yml": """
            name: hooked
            hooks:
              pre-staging:
                - echo "pre1 $(id -u) $(pwd) $STACKATO_APP_NAME $HOME" >> order.txt
                - echo pre2 >> order.txt; echo user-pre-hook-ran
              post-staging: echo post >> order.txt
              pre-running: echo "running hook" > ran.txt
        """,
    })
    log: list[str] = []
    record = stage(node, app, app=None, buildpacks=("procfile",), log=log)
    assert record.app == "hooked"
    order = droplet_files(node, record)["app/order.txt"].decode().splitlines()
    assert order == ["pre1 1000 /home/stackato/app hooked /home/stackato", "pre2", "post"]
    user_hook = next(i for i, line in enumerate(log) if "user-pre-hook-ran" in line)
    admin_hook = next(i for i, line in enumerate(log) if "Running admin pre-staging hook" in line)
    assert user_hook < admin_hook
    assert staging_info(node, record)["hooks"]["pre-running"] == ['echo "running hook" > ran.txt']


def test_failing_hook_aborts_with_its_output_but_dash_hooks_may_fail(node: NodeService, tmp_path: Path) -> None:
    tolerant = write_app(tmp_path / "tolerant", {
        "Procfile": "web: sleep 1000\n",
        "stackato.yml": "hooks:\n  pre-staging:\n    - '-false'\n    - echo ok > ok.txt\n",
    })
    record = stage(node, tolerant, buildpacks=("procfile",))
    assert droplet_files(node, record)["app/ok.txt"] == b"ok\n"
    failing = write_app(tmp_path / "failing", {
        "Procfile": "web: sleep 1000\n",
        "stackato.yml": "hooks:\n  pre-staging: echo the-reason-it-broke; exit 3\n",
    })
    before = len(node.droplets.digests())
    with pytest.raises(StagingFailed) as caught:
        stage(node, failing, buildpacks=("procfile",))
    assert "pre-staging hook" in caught.value.message and "exited 3" in caught.value.message
    assert "the-reason-it-broke" in caught.value.message and "\n" not in caught.value.message
    assert len(node.droplets.digests()) == before


def test_second_staging_reuses_the_build_cache(node: NodeService, tmp_path: Path) -> None:
    pack = write_buildpack(tmp_path / "cachey", detect="echo Cachey\n", compile="""
        if [ -f "$2/marker" ]; then echo "found cached marker: $(cat "$2/marker")"
        else echo "cache was empty"; echo first-run > "$2/marker"; fi
    """)
    app = write_app(tmp_path / "app", {"Procfile": "web: sleep 1000\n"})
    first: list[str] = []
    stage(node, app, buildpacks=(str(pack),), log=first)
    assert any("cache was empty" in line for line in first)
    second: list[str] = []
    stage(node, app, buildpacks=(str(pack),), log=second, force=True)
    assert any("found cached marker: first-run" in line for line in second)


def test_timeout_kills_staging_and_leaves_nothing(node: NodeService, tmp_path: Path) -> None:
    node.config.set("fence", "staging/timeout", "4")
    pack = write_buildpack(tmp_path / "sleepy", detect="echo Sleepy\n", compile="sleep 100000\n")
    app = write_app(tmp_path / "app", {"x": "y"})
    started = time.monotonic()
    with pytest.raises(StagingTimeout) as caught:
        stage(node, app, buildpacks=(str(pack),))
    assert time.monotonic() - started < 60
    assert "timed out after 4 s in compile" in caught.value.message
    assert node.droplets.digests() == [] and node.droplets_of() == []


def test_no_buildpack_detected_lists_what_was_tried(node: NodeService, tmp_path: Path) -> None:
    node.config.set("fence", "staging/buildpacks", "python,nodejs")
    app = write_app(tmp_path / "app", {"README": "nothing to build"})
    with pytest.raises(NoBuildpackDetected) as caught:
        stage(node, app)
    assert "tried: python, nodejs" in caught.value.message


@pytest.mark.parametrize(("step", "scripts", "fragment"), [
    ("compile", {"detect": "exit 0\n", "compile": "echo compile-broke-here; exit 9\n"},
     "staging failed in compile (buildpack broken): bin/compile exited 9: compile-broke-here"),
    ("release", {"detect": "exit 0\n", "compile": "true\n", "release": "echo '{not: [yaml'\n"},
     "staging failed in release (buildpack broken): output is not YAML"),
    ("release", {"detect": "exit 0\n", "compile": "true\n", "release": "echo release-broke; exit 4\n"},
     "bin/release exited 4: release-broke"),
])
def test_failing_buildpack_steps_name_phase_and_buildpack(node: NodeService, tmp_path: Path, step: str,
                                                          scripts: dict[str, str], fragment: str) -> None:
    pack = write_buildpack(tmp_path / "broken", **scripts)
    app = write_app(tmp_path / "app", {"x": "y"})
    with pytest.raises(StagingFailed) as caught:
        stage(node, app, buildpacks=(str(pack),))
    assert fragment in caught.value.message
    assert node.droplets.digests() == []


def test_failing_detect_in_configured_order_is_no_buildpack(node: NodeService, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"nothing.bin": "x"})
    node.config.set("fence", "staging/buildpacks", "static")
    with pytest.raises(NoBuildpackDetected):
        stage(node, app)


def test_a_github_style_archive_of_one_folder_stages_its_contents(node: NodeService, tmp_path: Path) -> None:
    host_archive = tmp_path / "procfile-hello-main.tar.gz"
    with tarfile.open(host_archive, "w:gz") as archive:
        archive.add(EXAMPLES / "procfile-hello", arcname="procfile-hello-main")
    log: list[str] = []
    record = stage(node, host_archive, app="wrapped", log=log)
    assert "warning: the archive holds one folder, procfile-hello-main/: staging what is inside it" in \
        "\n".join(log)
    assert record.start_command == (EXAMPLES / "procfile-hello" / "Procfile").read_text().split(": ", 1)[1].strip()
    assert "app/Procfile" in droplet_files(node, record)
