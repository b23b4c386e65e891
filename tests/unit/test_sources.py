"""App source preparation: folders, archives and git in; one checked tar out; every bad entry refused."""

from __future__ import annotations

import io
import os
import socket
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import git
import pytest

from fence.errors import (
    InvalidName,
    ManifestInvalid,
    ProcfileInvalid,
    SourceRefused,
    UsageError,
)
from fence.models import PreparedSource, SourceLimits
from fence.staging.ignores import IgnoreRules, parse_ignore_file
from fence.staging.gitfetch import FetchPolicy
from fence.staging.sources import (
    SOURCE_TAR_NAME,
    pack_directory_for_upload,
    prepare_source,
)

UID, GID = 4321, 8765
PAYLOAD = "pwned-by-fence-test"

# These tests are about checking and packing, not about where a source may come from.
ANYWHERE = FetchPolicy(local_roots=(Path("/"),))


# --- helpers -----------------------------------------------------------------------------------

def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, link: str = "",
            mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _tar(host_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], *, gz: bool = True,
         encoding: str = "utf-8") -> str:
    with tarfile.open(host_path, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT if encoding == "utf-8"
                      else tarfile.GNU_FORMAT, encoding=encoding) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return str(host_path)


def _prepare(origin: str | Path, workdir: Path, **limits: int) -> PreparedSource:
    return prepare_source(str(origin), policy=ANYWHERE, host_workdir=workdir, limits=SourceLimits(**limits), uid=UID, gid=GID)


def _refused(tmp_path: Path, origin: str | Path, *, entry: str, **limits: int) -> str:
    workdir = tmp_path / "work"
    with pytest.raises(SourceRefused) as caught:
        _prepare(origin, workdir, **limits)
    message = caught.value.message
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("source refused: "), message
    assert entry in message, message
    _assert_nothing_written(tmp_path, workdir)
    return message


def _assert_nothing_written(tmp_path: Path, workdir: Path) -> None:
    """No payload landed anywhere under tmp_path, and the workdir holds no (partial) tar."""
    for host_dir, dirs, files in os.walk(tmp_path):
        for name in dirs + files:
            assert PAYLOAD not in name, os.path.join(host_dir, name)
    if workdir.exists():
        assert [p.name for p in workdir.iterdir() if p.suffix in (".tar", ".part")] == []


def _listing(prepared: PreparedSource) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(prepared.host_tar) as archive:
        members = archive.getmembers()
    for member in members:
        assert member.name == "app" or member.name.startswith("app/"), member.name
        assert (member.uid, member.gid, member.uname, member.gname) == (UID, GID, "", "")
    return {member.name: member for member in members}


def _content(prepared: PreparedSource, name: str) -> bytes:
    with tarfile.open(prepared.host_tar) as archive:
        handle = archive.extractfile(name)
        assert handle is not None
        return handle.read()


# --- bad archives ------------------------------------------------------------------------------

def test_dotdot_entry_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("ok.txt", data=b"x"), _member(f"../{PAYLOAD}", data=b"x")])
    assert "'..'" in _refused(tmp_path, origin, entry=f"'../{PAYLOAD}'")


def test_dotdot_in_the_middle_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar", [_member(f"a/../../{PAYLOAD}", data=b"x")], gz=False)
    _refused(tmp_path, origin, entry=f"'a/../../{PAYLOAD}'")


def test_absolute_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / PAYLOAD
    origin = _tar(tmp_path / "a.tar.gz", [_member(str(target), data=b"x")])
    assert "absolute path" in _refused(tmp_path, origin, entry=repr(str(target)))


@pytest.mark.parametrize("target", ["../../../etc", "/etc/passwd", "sub/../../x", "sub/up/.."])
def test_symlink_pointing_outside_is_refused(tmp_path: Path, target: str) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [
        _member("sub", tarfile.DIRTYPE), _member("sub/up", tarfile.SYMTYPE, link=".."),
        _member(PAYLOAD, tarfile.SYMTYPE, link=target)])
    message = _refused(tmp_path, origin, entry=f"'{PAYLOAD}'")
    assert "symlink" in message


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("a", tarfile.SYMTYPE, link="b"),
                                          _member("b", tarfile.SYMTYPE, link="a/c")])
    assert "loops" in _refused(tmp_path, origin, entry="'a'")


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "missing-file"])
def test_hardlink_escape_or_dangling_is_refused(tmp_path: Path, target: str) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("ok.txt", data=b"x"),
                                          _member(PAYLOAD, tarfile.LNKTYPE, link=target)])
    assert "hardlink" in _refused(tmp_path, origin, entry=f"'{PAYLOAD}'")


def test_symlink_then_file_two_step_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [
        _member("sub", tarfile.DIRTYPE), _member("escape", tarfile.SYMTYPE, link="sub"),
        _member(f"escape/{PAYLOAD}", data=b"owned")])
    message = _refused(tmp_path, origin, entry=f"'escape/{PAYLOAD}'")
    assert "lies below 'escape', which is a symlink" in message


def test_symlink_outside_then_file_two_step_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    origin = _tar(tmp_path / "a.tar.gz", [_member("escape", tarfile.SYMTYPE, link=str(outside)),
                                          _member(f"escape/{PAYLOAD}", data=b"owned")])
    _refused(tmp_path, origin, entry="'escape'")
    assert list(outside.iterdir()) == []


def test_file_after_its_symlinked_parent_in_any_order_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member(f"d/{PAYLOAD}", data=b"x"),
                                          _member("d", tarfile.SYMTYPE, link=".")])
    _refused(tmp_path, origin, entry=f"'d/{PAYLOAD}'")


@pytest.mark.parametrize(("kind", "why"), [(tarfile.CHRTYPE, "character device"),
                                           (tarfile.BLKTYPE, "block device"),
                                           (tarfile.FIFOTYPE, "FIFO")])
def test_device_files_and_fifos_in_archives_are_refused(tmp_path: Path, kind: bytes, why: str) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("dev/" + PAYLOAD, kind)])
    assert why in _refused(tmp_path, origin, entry=f"'dev/{PAYLOAD}'")


def test_fifo_and_socket_in_a_folder_are_refused(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    os.mkfifo(app / "pipe")
    assert "FIFO" in _refused(tmp_path, app, entry="'pipe'")
    (app / "pipe").unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        os.chdir(app)
        try:
            sock.bind("sock")
        finally:
            os.chdir(tmp_path)
        assert "socket" in _refused(tmp_path, app, entry="'sock'")


def test_oversize_with_honest_headers_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("small", data=b"x" * 1000),
                                          _member("big.bin", data=b"\0" * 300_000)])
    assert "max_bytes" in _refused(tmp_path, origin, entry="'big.bin'", max_bytes=100_000)


def test_zip_bomb_with_honest_headers_stops_before_reading(tmp_path: Path) -> None:
    origin = tmp_path / "bomb.zip"
    with zipfile.ZipFile(origin, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.bin", b"\0" * (40 * 1024 * 1024))
    started = time.monotonic()
    assert "max_bytes" in _refused(tmp_path, origin, entry="'bomb.bin'", max_bytes=1024 * 1024)
    assert time.monotonic() - started < 2.0


def test_zip_bomb_whose_headers_lie_stops_at_the_declared_size(tmp_path: Path) -> None:
    """Headers claim 100 bytes, the data inflates to 40 MiB: reading stops early and is refused."""
    host_zip = tmp_path / "liar.zip"
    with zipfile.ZipFile(host_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.bin", b"\0" * (40 * 1024 * 1024))
    data = bytearray(host_zip.read_bytes())
    struct.pack_into("<I", data, 22, 100)  # local header: uncompressed size
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)  # central directory: uncompressed size
    host_zip.write_bytes(bytes(data))
    started = time.monotonic()
    message = _refused(tmp_path, host_zip, entry="'bomb.bin'", max_bytes=1024 * 1024)
    assert "cannot be read" in message
    assert time.monotonic() - started < 2.0


def test_too_many_files_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member(f"f{i:02}", data=b"x") for i in range(20)])
    assert "max_files" in _refused(tmp_path, origin, entry="'f10'", max_files=10)


def test_too_many_files_in_a_zip_is_refused_before_reading(tmp_path: Path) -> None:
    origin = tmp_path / "many.zip"
    with zipfile.ZipFile(origin, "w") as archive:
        for i in range(20):
            archive.writestr(f"f{i:02}", b"x")
    assert "max_files" in _refused(tmp_path, origin, entry="'f10'", max_files=10)


def test_depth_2000_is_refused(tmp_path: Path) -> None:
    deep = "d/" * 1999 + PAYLOAD
    origin = _tar(tmp_path / "a.tar.gz", [_member(deep, data=b"x")])
    message = _refused(tmp_path, origin, entry="'d/d/d/", max_path=100_000)
    assert "2000 levels deep (limit 64)" in message and len(message) < 400


def test_overlong_path_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("x" * 200, data=b"x")])
    assert "characters long (limit 100)" in _refused(tmp_path, origin, entry="'xxx", max_path=100)


def test_non_utf8_name_in_a_tar_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar", [_member("caf\u00e9.txt", data=b"x")], gz=False, encoding="latin-1")
    assert "not a UTF-8 name" in _refused(tmp_path, origin, entry="'caf\\xe9.txt'")


def test_non_utf8_name_in_a_folder_is_refused(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "ok.txt").write_text("x")
    with open(os.path.join(os.fsencode(app), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"x")
    _refused(tmp_path, app, entry="'caf\\xe9.txt'")


def test_non_utf8_name_in_a_zip_is_refused(tmp_path: Path) -> None:
    origin = tmp_path / "a.zip"
    with zipfile.ZipFile(origin, "w") as archive:
        archive.writestr("cafX.txt", b"x")
    data = origin.read_bytes().replace(b"cafX.txt", b"caf\xe9.txt")
    origin.write_bytes(data)
    _refused(tmp_path, origin, entry="'caf\\xe9.txt'")


def test_duplicate_entry_is_refused(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("x", data=b"1"), _member("x", tarfile.SYMTYPE, link=".")])
    assert "appears twice" in _refused(tmp_path, origin, entry="'x'")


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    origin = tmp_path / "junk.tar.gz"
    origin.write_bytes(b"\x1f\x8b this is not gzip at all")
    assert "not a readable" in _refused(tmp_path, origin, entry="'junk.tar.gz'")


def test_missing_origin_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        _prepare(tmp_path / "nope", tmp_path / "work")


def test_malformed_manifest_in_source_names_line_and_column(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("stackato.yml", data=b"name: a\nenv: [x\n")])
    with pytest.raises(ManifestInvalid) as caught:
        _prepare(origin, tmp_path / "work")
    assert caught.value.message.startswith("stackato.yml line ") and ", column " in caught.value.message
    _assert_nothing_written(tmp_path, tmp_path / "work")


def test_bad_procfile_and_bad_name_in_source(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "a.tar.gz", [_member("Procfile", data=b"web: ok\nbroken line\n")])
    with pytest.raises(ProcfileInvalid) as caught:
        _prepare(origin, tmp_path / "work")
    assert caught.value.message.startswith("Procfile line 2:")
    origin = _tar(tmp_path / "b.tar.gz", [_member("stackato.yml", data=b"name: 'Bad Name'\n")])
    with pytest.raises(InvalidName):
        _prepare(origin, tmp_path / "work")


# --- good sources ------------------------------------------------------------------------------

def _make_app(app: Path) -> None:
    (app / "src" / "pkg").mkdir(parents=True)
    (app / "src" / "pkg" / "mod.py").write_text("print('hi')\n")
    (app / "run.sh").write_text("#!/bin/sh\n")
    (app / "run.sh").chmod(0o700)
    (app / "current").symlink_to("src/pkg")
    (app / "debug.log").write_text("noise")
    (app / "keep.log").write_text("kept")
    (app / "build").mkdir()
    (app / "build" / "out.o").write_text("o")
    (app / "src" / "build").write_text("a file named build is kept")
    (app / "src" / "tmp").mkdir()
    (app / "src" / "tmp" / "cache").write_text("c")
    (app / ".git").mkdir()
    (app / ".git" / "config").write_text("[core]")
    (app / "node_modules").mkdir()
    (app / "node_modules" / "dep.js").write_text("dep")
    (app / ".stackatoignore").write_text("# comment\n*.log\n!keep.log\n/build/\n**/tmp\n")
    (app / ".cfignore").write_text("node_modules/\n")
    (app / "stackato.yml").write_text("name: demo\nignores: ['*.secret']\nhooks:\n  pre-staging: [a, b]\n")
    (app / "key.secret").write_text("s")
    (app / "Procfile").write_text("web: ./run.sh\n")


def test_directory_with_ignores_nested_dirs_and_an_in_root_symlink(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    _make_app(app)
    prepared = _prepare(app, tmp_path / "work")
    members = _listing(prepared)
    assert set(members) == {"app", "app/.cfignore", "app/.stackatoignore", "app/Procfile", "app/current",
                            "app/keep.log", "app/run.sh", "app/src", "app/src/build", "app/src/pkg",
                            "app/src/pkg/mod.py", "app/stackato.yml"}
    assert members["app/current"].issym() and members["app/current"].linkname == "src/pkg"
    assert members["app/run.sh"].mode == 0o755 and members["app/keep.log"].mode == 0o644
    assert members["app/src"].isdir() and members["app/src"].mode == 0o755
    assert prepared.host_tar == tmp_path / "work" / SOURCE_TAR_NAME
    assert prepared.manifest.name == "demo" and prepared.manifest.hooks.pre_staging == ("a", "b")
    assert prepared.procfile == {"web": "./run.sh"} and prepared.commit is None
    assert prepared.files == len(members) and prepared.size == sum(m.size for m in members.values())
    assert any("ignored" in w and "node_modules" in w for w in prepared.warnings)
    assert _content(prepared, "app/src/pkg/mod.py") == b"print('hi')\n"


def test_tar_gz_source_with_hardlink_rewritten_as_file(tmp_path: Path) -> None:
    origin = _tar(tmp_path / "app.tgz", [
        _member("./", tarfile.DIRTYPE), _member("./bin/start", data=b"#!/bin/sh\n", mode=0o755),
        _member("./data.txt", data=b"payload"), _member("./copy.txt", tarfile.LNKTYPE, link="./data.txt"),
        _member("./link", tarfile.SYMTYPE, link="bin/../data.txt"),
        _member("./.git/HEAD", data=b"ref"), _member("./manifest.yml", data=b"applications:\n- name: tg\n")])
    prepared = _prepare(origin, tmp_path / "work")
    members = _listing(prepared)
    assert set(members) == {"app", "app/bin", "app/bin/start", "app/data.txt", "app/copy.txt",
                            "app/link", "app/manifest.yml"}
    assert members["app/copy.txt"].isreg() and _content(prepared, "app/copy.txt") == b"payload"
    assert members["app/bin/start"].mode == 0o755 and members["app/bin"].isdir()
    assert prepared.manifest.name == "tg" and prepared.manifest.source_name == "manifest.yml"
    assert prepared.procfile is None


def test_zip_source(tmp_path: Path) -> None:
    origin = tmp_path / "app.zip"
    with zipfile.ZipFile(origin, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("web/index.html", b"<h1>hi</h1>")
        script = zipfile.ZipInfo("start.sh")
        script.create_system, script.external_attr = 3, (0o100755 << 16)
        archive.writestr(script, b"#!/bin/sh\n")
        link = zipfile.ZipInfo("home")
        link.create_system, link.external_attr = 3, (0o120777 << 16)
        archive.writestr(link, b"web")
        archive.writestr("Procfile", b"web: ./start.sh\n")
    prepared = _prepare(origin, tmp_path / "work")
    members = _listing(prepared)
    assert set(members) == {"app", "app/web", "app/web/index.html", "app/start.sh", "app/home", "app/Procfile"}
    assert members["app/start.sh"].mode == 0o755 and members["app/home"].linkname == "web"
    assert _content(prepared, "app/web/index.html") == b"<h1>hi</h1>"
    assert prepared.procfile == {"web": "./start.sh"}


def test_zip_symlink_outside_is_refused(tmp_path: Path) -> None:
    origin = tmp_path / "app.zip"
    with zipfile.ZipFile(origin, "w") as archive:
        link = zipfile.ZipInfo(PAYLOAD)
        link.create_system, link.external_attr = 3, (0o120777 << 16)
        archive.writestr(link, b"../../../../etc")
    _refused(tmp_path, origin, entry=f"'{PAYLOAD}'")


def test_cf_manifest_in_source(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.yml").write_text("applications:\n- name: cfapp\n  memory: 1G\n  command: ./go\n"
                                      "  routes: [{route: cfapp.example.com}]\n")
    prepared = _prepare(app, tmp_path / "work")
    manifest = prepared.manifest
    assert (manifest.name, manifest.mem_mib, dict(manifest.processes), manifest.urls) == \
        ("cfapp", 1024, {"web": "./go"}, ("cfapp.example.com",))


def _git_repo(host_repo: Path) -> tuple[str, str]:
    repo = git.Repo.init(host_repo)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
    (host_repo / "app.py").write_text("v1\n")
    repo.index.add(["app.py"])
    first = repo.index.commit("one").hexsha
    repo.create_tag("v1")
    (host_repo / "app.py").write_text("v2\n")
    (host_repo / "Procfile").write_text("web: python app.py\n")
    repo.index.add(["app.py", "Procfile"])
    second = repo.index.commit("two").hexsha
    repo.close()
    return first, second


def test_git_source_at_a_tag_and_at_a_commit(tmp_path: Path) -> None:
    first, second = _git_repo(tmp_path / "repo")
    at_tag = _prepare(f"file://{tmp_path / 'repo'}#v1", tmp_path / "work1")
    assert at_tag.commit == first and at_tag.origin == f"file://{tmp_path / 'repo'}#v1"
    assert set(_listing(at_tag)) == {"app", "app/app.py"}
    assert _content(at_tag, "app/app.py") == b"v1\n" and at_tag.procfile is None
    at_commit = _prepare(f"file://{tmp_path / 'repo'}#{second}", tmp_path / "work2")
    assert at_commit.commit == second and _content(at_commit, "app/app.py") == b"v2\n"
    assert not any(".git" in name for name in _listing(at_commit))
    assert at_commit.procfile == {"web": "python app.py"}
    assert [p.name for p in (tmp_path / "work2").iterdir()] == [SOURCE_TAR_NAME]  # clone removed


def test_local_repository_with_a_ref(tmp_path: Path) -> None:
    first, _ = _git_repo(tmp_path / "repo")
    prepared = _prepare(f"{tmp_path / 'repo'}#v1", tmp_path / "work")
    assert prepared.commit == first


def test_git_source_with_a_missing_ref_is_a_usage_error(tmp_path: Path) -> None:
    _git_repo(tmp_path / "repo")
    with pytest.raises(UsageError) as caught:
        _prepare(f"file://{tmp_path / 'repo'}#nope", tmp_path / "work")
    assert "\n" not in caught.value.message


def test_pack_directory_for_upload_round_trips(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    _make_app(app)
    host_upload = tmp_path / "upload.tar.gz"
    count = pack_directory_for_upload(app, host_upload, limits=SourceLimits())
    with tarfile.open(host_upload, "r:gz") as archive:
        names = archive.getnames()
    assert count == len(names) and "run.sh" in names and "current" in names
    assert not any(n.startswith((".git", "node_modules", "build")) for n in names)
    prepared = _prepare(host_upload, tmp_path / "work")
    assert {n for n in _listing(prepared)} == {"app"} | {f"app/{n}" for n in names}


def test_pack_directory_refuses_an_escaping_symlink(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "etc").symlink_to("/etc")
    with pytest.raises(SourceRefused) as caught:
        pack_directory_for_upload(app, tmp_path / "up.tar.gz", limits=SourceLimits())
    assert "'etc'" in caught.value.message
    assert not (tmp_path / "up.tar.gz").exists()


@pytest.mark.parametrize(("patterns", "path", "is_dir", "ignored"), [
    (("*.log",), "a.log", False, True),
    (("*.log",), "x/y/a.log", False, True),
    (("*.log", "!keep.log"), "keep.log", False, False),
    (("/build/",), "build", True, True),
    (("/build/",), "build", False, False),
    (("/build/",), "src/build", True, False),
    (("/build/",), "build/deep/file.o", False, True),
    (("**/tmp",), "tmp", True, True),
    (("**/tmp",), "a/b/tmp", True, True),
    (("a/**/b",), "a/b", False, True),
    (("a/**/b",), "a/x/y/b", False, True),
    (("docs/*.md",), "docs/a.md", False, True),
    (("docs/*.md",), "x/docs/a.md", False, False),
    (("docs/*.md",), "docs/x/a.md", False, False),
    (("lib/**",), "lib/x/y", False, True),
    (("[ab].txt",), "b.txt", False, True),
    (("[ab].txt",), "c.txt", False, False),
    (("\\#x", "# a comment"), "#x", False, True),
    (("node_modules/", "!node_modules/keep.js"), "node_modules/keep.js", False, True),
])
def test_ignore_patterns(patterns: tuple[str, ...], path: str, is_dir: bool, ignored: bool) -> None:
    lines = parse_ignore_file("\n".join(patterns).encode(), source=".stackatoignore")
    assert IgnoreRules(patterns=lines).ignored(tuple(path.split("/")), is_dir=is_dir) is ignored


# --- archives of one folder (GitHub downloads, git archive --prefix) -----------------------------

def _one_folder_members(top: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [_member(f"{top}/", tarfile.DIRTYPE, mode=0o755),
            _member(f"{top}/stackato.yml", data=b"name: wrapped\n"),
            _member(f"{top}/Procfile", data=b"web: python3 app.py\n"),
            _member(f"{top}/.cfignore", data=b"secret.txt\n"),
            _member(f"{top}/secret.txt", data=b"not shipped\n"),
            _member(f"{top}/app.py", data=b"print('hi')\n"),
            _member(f"{top}/lib/", tarfile.DIRTYPE, mode=0o755),
            _member(f"{top}/lib/util.py", data=b"x = 1\n"),
            _member(f"{top}/lib/copy.py", tarfile.LNKTYPE, link=f"{top}/lib/util.py"),
            _member(f"{top}/current", tarfile.SYMTYPE, link="lib")]


def test_a_tar_of_one_folder_stages_what_is_inside_it(tmp_path: Path) -> None:
    prepared = _prepare(_tar(tmp_path / "myapp-main.tar.gz", _one_folder_members("myapp-main")), tmp_path / "w")
    listing = _listing(prepared)
    assert set(listing) == {"app", "app/stackato.yml", "app/Procfile", "app/.cfignore", "app/app.py", "app/lib",
                            "app/lib/util.py", "app/lib/copy.py", "app/current"}
    assert prepared.manifest.name == "wrapped" and prepared.procfile == {"web": "python3 app.py"}
    assert _content(prepared, "app/lib/copy.py") == b"x = 1\n"  # the hardlink, made a file
    assert listing["app/current"].linkname == "lib"
    assert prepared.warnings[0] == "the archive holds one folder, myapp-main/: staging what is inside it"


def test_a_zip_of_one_folder_stages_what_is_inside_it(tmp_path: Path) -> None:
    host_zip = tmp_path / "myapp-main.zip"
    with zipfile.ZipFile(host_zip, "w") as archive:
        archive.writestr("myapp-main/", b"")
        archive.writestr("myapp-main/Procfile", b"web: python3 app.py\n")
        archive.writestr("myapp-main/app.py", b"print('hi')\n")
    prepared = _prepare(host_zip, tmp_path / "w")
    assert set(_listing(prepared)) == {"app", "app/Procfile", "app/app.py"}
    assert prepared.procfile == {"web": "python3 app.py"}


@pytest.mark.parametrize("extra", [
    _member("README.md", data=b"a file beside the folder\n"),  # something at the top level
    _member("other/", tarfile.DIRTYPE, mode=0o755),  # a second folder
])
def test_an_archive_with_more_than_one_folder_at_the_top_is_taken_as_it_is(tmp_path: Path, extra) -> None:  # noqa: ANN001
    prepared = _prepare(_tar(tmp_path / "a.tar.gz", [*_one_folder_members("myapp-main"), extra]), tmp_path / "w")
    assert "app/myapp-main/app.py" in _listing(prepared)
    assert prepared.manifest.name is None and prepared.procfile is None  # one level down: not the app's
    assert not any("one folder" in warning for warning in prepared.warnings)


def test_a_folder_holding_one_folder_is_taken_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "src" / "inner").mkdir(parents=True)
    (tmp_path / "src" / "inner" / "Procfile").write_text("web: run\n")
    prepared = _prepare(tmp_path / "src", tmp_path / "w")
    assert "app/inner/Procfile" in _listing(prepared) and prepared.procfile is None


def test_in_a_one_folder_archive_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    members = [*_one_folder_members("top"), _member("top/up", tarfile.SYMTYPE, link="../top/app.py")]
    _refused(tmp_path, _tar(tmp_path / "a.tar.gz", members), entry="up")


# --- one member loop for tar and zip; a folder the client packed is never unwrapped ------------

def _zip(host_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> str:
    """The same members as ``_tar`` writes, as a zip (directories end in '/'; modes kept)."""
    with zipfile.ZipFile(host_path, "w") as archive:
        for info, data in members:
            name = info.name.rstrip("/") + ("/" if info.isdir() else "")
            entry = zipfile.ZipInfo(name)
            entry.create_system = 3
            entry.external_attr = ((0o040755 if info.isdir() else 0o100000 | info.mode) << 16)
            archive.writestr(entry, data)
    return str(host_path)


_WRITERS = {"tar": lambda path, members: _tar(path.with_suffix(".tar.gz"), members), "zip": _zip}
_PLAIN_MEMBERS = [m for m in _one_folder_members("top") if m[0].type in (tarfile.DIRTYPE, tarfile.REGTYPE)]


@pytest.mark.parametrize("kind", sorted(_WRITERS))
def test_tar_and_zip_go_through_the_same_member_loop(tmp_path: Path, kind: str) -> None:
    """Same members, same outcome: specials read, one folder unwrapped, counts and sizes capped."""
    write = _WRITERS[kind]
    prepared = _prepare(write(tmp_path / "a", _PLAIN_MEMBERS), tmp_path / "w")
    assert set(_listing(prepared)) == {"app", "app/stackato.yml", "app/Procfile", "app/.cfignore", "app/app.py",
                                       "app/lib", "app/lib/util.py"}
    assert prepared.manifest.name == "wrapped" and prepared.procfile == {"web": "python3 app.py"}
    assert prepared.warnings[0] == "the archive holds one folder, top/: staging what is inside it"
    assert "'top/secret.txt'" in _refused(tmp_path, write(tmp_path / "b", _PLAIN_MEMBERS), entry="'top/secret.txt'",
                                          max_files=4)
    assert "max_bytes" in _refused(tmp_path, write(tmp_path / "c", _PLAIN_MEMBERS), entry="'top/secret.txt'",
                                   max_bytes=50)


@pytest.mark.parametrize("kind", sorted(_WRITERS))
def test_an_archive_packed_from_a_folder_is_staged_as_it_is(tmp_path: Path, kind: str) -> None:
    origin = _WRITERS[kind](tmp_path / "a", _PLAIN_MEMBERS)
    prepared = prepare_source(origin, policy=ANYWHERE, host_workdir=tmp_path / "w", limits=SourceLimits(), uid=UID, gid=GID,
                              packed_folder=True)
    assert "app/top/app.py" in _listing(prepared) and "app/app.py" not in _listing(prepared)
    assert prepared.manifest.name is None and prepared.procfile is None
    assert not any("one folder" in warning for warning in prepared.warnings)


def test_a_folder_that_is_only_bin_is_uploaded_and_staged_as_it_is(tmp_path: Path) -> None:
    """What `fence push DIR` does for an inline-buildpack app: pack, then prepare as a packed folder."""
    app = tmp_path / "inline"
    (app / "bin").mkdir(parents=True)
    for name in ("detect", "compile", "release"):
        (app / "bin" / name).write_text("#!/bin/sh\nexit 0\n")
        (app / "bin" / name).chmod(0o755)
    host_upload = tmp_path / "upload.tar.gz"
    pack_directory_for_upload(app, host_upload, limits=SourceLimits())
    prepared = prepare_source(str(host_upload), policy=ANYWHERE, host_workdir=tmp_path / "w", limits=SourceLimits(), uid=UID,
                              gid=GID, packed_folder=True)
    listing = _listing(prepared)
    assert {"app/bin", "app/bin/detect", "app/bin/compile", "app/bin/release"} <= set(listing)
    assert listing["app/bin/compile"].mode == 0o755
    unwrapped = prepare_source(str(host_upload), policy=ANYWHERE, host_workdir=tmp_path / "w2", limits=SourceLimits(), uid=UID,
                               gid=GID)  # the same archive given by a user: one folder, unwrapped
    assert "app/compile" in _listing(unwrapped)
