"""Who may use the daemon: root and the `fence` group; everyone else gets a clear refusal."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.node_kit import Node

REPO = Path(__file__).resolve().parents[2]
SITE = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))


def _as_user(node: Node, *args: str, groups: str = "") -> subprocess.CompletedProcess[str]:
    """Run `kato …` as the unprivileged user nobody (the system python, this checkout's code)."""
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3 to run the CLI as another user")
    group_args = [f"--groups={groups}"] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", *group_args, "env",
                           f"PYTHONPATH={REPO}:{SITE}", f"FENCE_HOME={node.root}", python, "-m", "kato", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def open_node(engine: str):  # noqa: ANN201
    """A node whose FENCE_HOME sits in world-traversable /tmp, so only fence's own modes protect it."""
    node = Node(root=Path(f"/tmp/fence-access-{uuid.uuid4().hex[:8]}"))
    yield node
    node.close()
    shutil.rmtree(node.root, ignore_errors=True)


def test_home_is_closed_and_other_users_get_a_clear_error(open_node: Node) -> None:
    open_node.start()
    mode = stat.S_IMODE(open_node.root.stat().st_mode)
    assert mode & 0o007 == 0, oct(mode)
    assert stat.S_IMODE(open_node.home.host_socket.stat().st_mode) == 0o660
    result = _as_user(open_node, "status")
    assert result.returncode == 6, result.stderr
    assert result.stderr == (f"error: permission denied on {open_node.home.host_socket}: the fence daemon "
                             "accepts root and members of the `fence` group only\n")


def test_members_of_the_fence_group_may_use_it(open_node: Node) -> None:
    created = False
    try:
        gid = grp.getgrnam("fence").gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", "fence"], check=True)
        created = True
        gid = grp.getgrnam("fence").gr_gid
    try:
        open_node.start()
        sock = open_node.home.host_socket.stat()
        assert sock.st_gid == gid and stat.S_IMODE(sock.st_mode) == 0o660
        assert open_node.root.stat().st_gid == gid
        member = _as_user(open_node, "status", groups=str(gid))
        assert member.returncode == 0, member.stderr
        outsider = _as_user(open_node, "status")
        assert outsider.returncode == 6 and "permission denied" in outsider.stderr
    finally:
        open_node.stop_daemon()
        if created:
            subprocess.run(["groupdel", "fence"], check=False)


def test_no_tcp_listener_is_offered(open_node: Node) -> None:
    open_node.start()
    assert open_node.proc is not None
    sockets = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    assert f"pid={open_node.proc.pid}," not in sockets, "the daemon must listen on its Unix socket only"
    assert os.environ.get("FENCE_LISTEN") is None
