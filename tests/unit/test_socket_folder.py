"""FENCE_SOCKET in a shared folder (/tmp, /run): only the socket is chmodded and chowned, never
its folder (issue 13 item 9); FENCE_HOME and a folder made for the socket are closed to others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fence import daemon
from fence.home import NodeHome


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch) -> int:
    """A group the socket gets (the node may have no `fence` group): one this process is in."""
    gid = os.getgroups()[-1] if os.getgroups() else os.getgid()
    monkeypatch.setattr(daemon, "socket_group", lambda name=daemon.SOCKET_GROUP: gid)
    return gid


def _mode(host_path: Path) -> int:
    return stat.S_IMODE(host_path.stat().st_mode)


def test_a_socket_in_a_shared_folder_leaves_the_folder_alone(tmp_path: Path, group: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    host_shared = tmp_path / "tmp"
    host_shared.mkdir()
    os.chmod(host_shared, 0o1777)  # like /tmp
    before = host_shared.stat()
    monkeypatch.setenv("FENCE_SOCKET", str(host_shared / "fence.sock"))
    home = NodeHome(host_root=tmp_path / "home")
    home.ensure()
    sock = daemon.bind_socket(home.host_socket, host_home=home.host_root)
    try:
        after = host_shared.stat()
        assert _mode(host_shared) == 0o1777 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
        socket_stat = home.host_socket.stat()
        assert stat.S_IMODE(socket_stat.st_mode) == 0o660 and socket_stat.st_gid == group
    finally:
        sock.close()
        home.host_socket.unlink()


def test_fence_home_and_a_folder_made_for_the_socket_are_closed(tmp_path: Path, group: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FENCE_SOCKET", raising=False)
    home = NodeHome(host_root=tmp_path / "home")
    home.ensure()
    os.chmod(home.host_root, 0o755)
    sock = daemon.bind_socket(home.host_socket, host_home=home.host_root)
    sock.close()
    assert _mode(home.host_root) == 0o750 and home.host_root.stat().st_gid == group
    host_made = tmp_path / "run" / "fence"
    sock = daemon.bind_socket(host_made / "fence.sock", host_home=home.host_root)
    sock.close()
    assert _mode(host_made) == 0o750 and host_made.stat().st_gid == group
