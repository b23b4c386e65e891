"""The one tar-entry builder (fence/tarstream.py) and the app user's layout tars built with it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from fence.layout import Workspace
from fence.tarstream import TarMember, concat_tars, tar_bytes, tar_info, tar_stream


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_entries_of_each_kind_carry_owner_mode_and_time(tmp_path: Path) -> None:
    host_file = tmp_path / "big.bin"
    host_file.write_bytes(b"z" * 70_000)
    data = tar_bytes([
        TarMember(name="top/", mode=0o755, uid=1000, kind="dir", mtime=0),
        TarMember(name="top/small", mode=0o600, uid=1000, data=b"hello", mtime=0),
        TarMember(name="top/big", mode=0o644, uid=1000, gid=2000, host_file=host_file, mtime=0),
        TarMember(name="top/link", mode=0o777, uid=1000, kind="link", linkname="small", mtime=0),
    ])
    found = _members(data)
    assert list(found) == ["top", "top/small", "top/big", "top/link"]
    assert found["top"].isdir() and found["top/link"].issym() and found["top/link"].linkname == "small"
    assert [(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in found.values()] == \
        [(1000, 1000, "", "", 0)] * 2 + [(1000, 2000, "", "", 0), (1000, 1000, "", "", 0)]
    assert (found["top/small"].mode, found["top/big"].size) == (0o600, 70_000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("top/big").read() == b"z" * 70_000
    assert tar_bytes([TarMember(name="a", mode=0o644, uid=1, data=b"x", mtime=0)]) == \
        tar_bytes([TarMember(name="a", mode=0o644, uid=1, data=b"x", mtime=0)])


def test_without_an_mtime_entries_get_the_time_the_tar_is_built() -> None:
    [member] = _members(tar_bytes([TarMember(name="f", mode=0o644, uid=1, data=b"x")])).values()
    assert member.mtime > 1_600_000_000


def test_a_file_that_shrinks_while_it_is_read_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_file = tmp_path / "f"
    host_file.write_bytes(b"12345")
    stream = tar_stream([TarMember(name="f", mode=0o644, uid=1, host_file=host_file)])
    next(stream)  # the header, sized from the file as it was opened
    with host_file.open("r+b") as handle:
        handle.truncate(2)
    with pytest.raises(OSError, match="shrank while it was read"):
        list(stream)


def test_tar_info_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown tar entry kind"):
        tar_info("x", kind="fifo", mode=0o644, uid=1, mtime=0)


def test_in_memory_and_file_parts_concatenate_into_one_archive(tmp_path: Path) -> None:
    host_part = tmp_path / "part.tar"
    host_part.write_bytes(tar_bytes([TarMember(name="b", mode=0o644, uid=1, data=b"bb", mtime=0)]))
    joined = b"".join(concat_tars([tar_bytes([TarMember(name="a", mode=0o644, uid=1, data=b"a", mtime=0)]),
                                   host_part]))
    assert list(_members(joined)) == ["a", "b"]


def test_the_workspace_tars_lay_out_the_app_users_home() -> None:
    ws = Workspace(ctr_home=PurePosixPath("/home/stackato"), uid=1000)
    skeleton = _members(ws.skeleton_tar())
    assert list(skeleton) == ["home/stackato", "home/stackato/app", "home/stackato/cache", "home/stackato/env",
                              "home/stackato/deps", "home/stackato/buildpacks", "home/stackato/tmp"]
    assert all(m.isdir() and (m.uid, m.gid, m.mode) == (1000, 1000, 0o755) for m in skeleton.values())
    env = ws.env_tar({"A": "1", "B": "two words"})
    assert list(_members(env)) == ["env", "env/A", "env/B"]
    with tarfile.open(fileobj=io.BytesIO(env)) as tar:
        assert tar.extractfile("env/B").read() == b"two words"
        assert tar.getmember("env/A").mode == 0o644
