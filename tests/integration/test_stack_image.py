"""The stack image `make test` builds from Debian packages: app user, admin hooks, toolchain, labels."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import PurePosixPath

import pytest

from fence import labels
from fence.backend.docker import DockerBackend
from fence.models import ContainerSpec, ProcessSpec


@pytest.fixture
def container(engine: str):  # noqa: ANN201
    backend = DockerBackend()
    node = f"test-{uuid.uuid4().hex[:8]}"
    ctr = backend.create(ContainerSpec(image=engine, labels=labels.owned(node, labels.ROLE_PROBE),
                                       user="1000"))
    ctr.start()
    yield ctr
    for leftover in backend.list({labels.NODE: node}):
        leftover.destroy()


def run(ctr, *argv: str) -> tuple[int, str]:  # noqa: ANN001
    lines: list[str] = []
    result = ctr.run(ProcessSpec(argv=argv, timeout=60), on_output=lines.append)
    return result.exit_code, "\n".join(lines)


def test_app_user_and_home(container) -> None:  # noqa: ANN001
    assert run(container, "id", "-un") == (0, "stackato")
    assert run(container, "id", "-u") == (0, "1000")
    assert run(container, "bash", "-c", "getent passwd stackato | cut -d: -f6") == (0, "/home/stackato")
    assert run(container, "test", "-w", "/home/stackato")[0] == 0


def test_admin_hooks_are_installed_read_only_for_the_app_user(container) -> None:  # noqa: ANN001
    for phase in ("pre-staging", "post-staging", "pre-running"):
        code, out = run(container, "stat", "-c", "%a %u", f"/etc/stackato/hooks/{phase}")
        assert code == 0 and out == "755 0", (phase, out)
    assert run(container, "bash", "-c", "echo x > /etc/stackato/hooks/pre-staging")[0] != 0


def test_toolchain_for_the_built_in_buildpacks(container) -> None:  # noqa: ANN001
    for argv in (("python3", "-m", "venv", "--help"), ("node", "--version"), ("npm", "--version"),
                 ("git", "--version"), ("curl", "--version"), ("ps", "--version"), ("tar", "--version")):
        assert run(container, *argv)[0] == 0, argv
    code, out = run(container, "cat", "/etc/os-release")
    assert code == 0 and "bookworm" in out


def test_image_is_labelled_as_a_fence_stack(engine: str) -> None:
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", engine], capture_output=True,
                                        text=True, check=True).stdout)[0]
    image_labels = inspect["Config"]["Labels"] or {}
    assert image_labels.get(labels.STACK) == "bookworm"
    assert image_labels.get(f"{labels.STACK}.uid") == "1000"
    assert PurePosixPath(inspect["Config"]["Cmd"][0]).name == "bash"
