"""Helpers for staging tests: a node on the real engine, buildpacks and apps written on the fly."""

from __future__ import annotations

import subprocess
import tarfile
import textwrap
import uuid
from pathlib import Path
from typing import Iterator

import yaml

from fence import labels
from fence.models import DropletRecord
from fence.home import NodeHome
from fence.service import NodeService, StageOrder
from fence.wiring import node_service

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def write_buildpack(host_dir: Path, **scripts: str) -> Path:
    """A buildpack folder with the given bin/ scripts (bash bodies; keys: detect, compile, …)."""
    (host_dir / "bin").mkdir(parents=True)
    for name, body in scripts.items():
        script = host_dir / "bin" / name
        script.write_text("#!/bin/bash\nset -euo pipefail\n" + textwrap.dedent(body).lstrip())
        script.chmod(0o755)
    return host_dir


def write_app(host_dir: Path, files: dict[str, str]) -> Path:
    """An app folder holding ``files`` (relative name → text)."""
    for name, text in files.items():
        path = host_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return host_dir


def stage(node: NodeService, origin: Path | str, *, app: str | None = "app", buildpacks: tuple[str, ...] = (),
          env: dict[str, str] | None = None, log: list[str] | None = None, force: bool = False) -> DropletRecord:
    """Stage through the service facade, collecting the log (``force``: no droplet reuse)."""
    lines = log if log is not None else []
    return node.stage(StageOrder(origin=str(origin), app=app, buildpacks=buildpacks, env=env or {}, force=force),
                      staging_id=uuid.uuid4().hex[:12], on_line=lines.append)


def droplet_files(node: NodeService, record: DropletRecord) -> dict[str, bytes]:
    """Every regular file of a droplet, by name (read from the tgz, not extracted)."""
    found = {}
    with tarfile.open(node.droplets.host_path(record.id), "r:gz") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                found[member.name] = handle.read() if handle else b""
    return found


def staging_info(node: NodeService, record: DropletRecord) -> dict:
    """The droplet's staging_info.yml."""
    return yaml.safe_load(droplet_files(node, record)["staging_info.yml"])


def staging_containers(node_id: str) -> list[str]:
    """Ids of this node's staging containers that the engine still has."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={labels.NODE}={node_id}",
                          "--filter", f"label={labels.ROLE}={labels.ROLE_STAGING}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def git_repo(host_dir: Path, files: dict[str, str], *, executable: tuple[str, ...] = ()) -> str:
    """A git repository with one commit of ``files`` tagged v1; returns that commit."""
    write_app(host_dir, files)
    for name in executable:
        (host_dir / name).chmod(0o755)
    run = lambda *args: subprocess.run(["git", "-C", str(host_dir), *args], check=True,  # noqa: E731
                                       capture_output=True, text=True).stdout.strip()
    run("init", "-q", "-b", "main")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "v1")
    run("tag", "v1")
    return run("rev-parse", "HEAD")


def trust_test_folders(service: NodeService, home: NodeHome) -> NodeService:
    """Make this pytest session's temporary folder an admin root for sources and buildpacks: these
    tests stage folders, archives and buildpack paths they write there (``staging/local_roots``,
    ``staging/buildpack_roots``; by default a node takes neither)."""
    import json

    base = str(home.host_root.parents[1])
    # The samples in examples/ are staged straight from the checkout too.
    service.config.set("fence", "staging/local_roots", json.dumps([base, str(EXAMPLES)]), as_json=True)
    service.config.set("fence", "staging/buildpack_roots", json.dumps([base]), as_json=True)
    return service


def checked_service(home: NodeHome) -> Iterator[NodeService]:
    """An in-process node service (``yield from`` it in a fixture); after the test it is closed and
    no staging container or scratch folder of it may be left."""
    service = trust_test_folders(node_service(home), home)
    yield service
    service.close()
    assert staging_containers(service.node_id) == [], "a staging container was left behind"
    assert not list((home.host_root / "work").glob("*")), "a scratch folder was left behind"
