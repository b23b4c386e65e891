"""Hostile or broken uploads through the whole staging path: one line each, and nothing left behind."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Callable

import pytest

from fence.errors import FenceError
from fence.home import NodeHome
from fence.wiring import node_service
from tests.integration.staging_kit import stage, staging_containers, trust_test_folders


def _tar(host_out: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(host_out, "w:gz") as tar:
        add(tar)
    return host_out


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _entry(tar: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


CASES: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "dotdot": (lambda t: _file(t, "../escape.txt"), "'../escape.txt'"),
    "absolute": (lambda t: _file(t, "/tmp/fence-abs-escape.txt"), "fence-abs-escape.txt"),
    "outside symlink": (lambda t: _entry(t, "link", tarfile.SYMTYPE, "/etc/passwd"), "'link'"),
    "device file": (lambda t: _entry(t, "dev", tarfile.CHRTYPE), "'dev'"),
    "oversize": (lambda t: _file(t, "big.bin", b"\0" * (2 * 1024 * 1024)), "big.bin"),
    "too many files": (lambda t: [_file(t, f"f{n}") for n in range(60)], "f5"),
    "malformed stackato.yml": (lambda t: _file(t, "stackato.yml", b"name: [unclosed\n"), "stackato.yml line"),
    "yaml alias bomb": (lambda t: _file(t, "stackato.yml", b"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"),
                        "stackato.yml"),
    "bad procfile line": (lambda t: _file(t, "Procfile", b"web: ok\nthis line is wrong\n"), "Procfile line 2"),
    "bad app name": (lambda t: _file(t, "stackato.yml", b"name: 'Bad Name; rm -rf /'\n"), "app name"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_is_one_line_and_leaves_nothing(home: NodeHome, engine: str, tmp_path: Path, case: str) -> None:
    node = trust_test_folders(node_service(home), home)
    node.config.set("fence", "staging/max_upload", "1")       # 1 MiB
    node.config.set("fence", "staging/max_files", "50")
    add, fragment = CASES[case]
    upload = _tar(tmp_path / "upload.tar.gz", add)
    try:
        with pytest.raises(FenceError) as caught:
            stage(node, upload, app=None if "name" in case else "hostile", buildpacks=("procfile",))
    finally:
        node.close()
    message = caught.value.message
    assert caught.value.user_error and "\n" not in message and fragment in message, message
    assert staging_containers(node.node_id) == []
    assert node.droplets.digests() == []
    assert not any((home.host_root / "work").iterdir())
    assert not Path("/tmp/fence-abs-escape.txt").exists() and not (tmp_path / "escape.txt").exists()
