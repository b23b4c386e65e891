"""Buildpack specs are parsed strictly, resolved to checked folders (git ones cached), and packed."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from fence.errors import BuildpackInvalid, UsageError
from fence.models import ResolvedBuildpack
from fence.staging.buildpacks import BuildpackResolver, buildpack_tar, builtin_dir, parse_buildpack

BUILTINS = ("nodejs", "procfile", "python", "static")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def make_buildpack(host_dir: Path, *, scripts: tuple[str, ...] = ("detect", "compile"),
                   executable: bool = True) -> Path:
    (host_dir / "bin").mkdir(parents=True)
    for script in scripts:
        path = host_dir / "bin" / script
        path.write_text("#!/usr/bin/env bash\nexit 0\n")
        path.chmod(0o755 if executable else 0o644)
    return host_dir


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    done = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com",
                           "-c", "init.defaultBranch=main", *args],
                          cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


class Settings:
    """The config keys the resolver reads; the test's own folder is an admin root."""

    def __init__(self, root: Path, **keys: object) -> None:
        self.keys = {"staging/buildpack_roots": [str(root)], "staging/local_roots": [], "staging/git_timeout": 300,
                     "staging/max_git": 0, "staging/max_upload": 1024, **keys}

    def fence(self, key_path: str) -> object:
        return self.keys[key_path]


@pytest.fixture
def resolver(tmp_path: Path) -> BuildpackResolver:
    return BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "bp-cache", config=Settings(tmp_path))


# --- parse_buildpack -----------------------------------------------------------------------------

def test_a_builtin_name() -> None:
    ref = parse_buildpack("python")
    assert (ref.kind, ref.location, ref.ref, ref.spec) == ("builtin", "python", None, "python")


@pytest.mark.parametrize("text", ["/opt/bp", "./bp", "../bp", "~/bp", "."])
def test_paths_become_absolute(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ref = parse_buildpack(text, base_dir=tmp_path / "app")
    assert ref.kind == "path" and ref.spec == text
    assert Path(ref.location).is_absolute() and ".." not in Path(ref.location).parts


def test_relative_paths_follow_the_base_dir(tmp_path: Path) -> None:
    assert parse_buildpack("./bp", base_dir=tmp_path).location == str(tmp_path / "bp")
    assert parse_buildpack("../bp", base_dir=tmp_path / "app").location == str(tmp_path / "bp")


def test_a_git_url_with_a_ref() -> None:
    ref = parse_buildpack("https://example.com/org/my-buildpack.git#v1.2")
    assert (ref.kind, ref.location, ref.ref) == ("git", "https://example.com/org/my-buildpack.git", "v1.2")
    assert parse_buildpack("file:///srv/bp").ref is None


@pytest.mark.parametrize("text", [
    "",
    "; rm -rf /",
    "$(x)",
    "`id`",
    "python; rm -rf /",
    "python\n",
    "py\nthon",
    "py\x00thon",
    "./bp\x00",
    "-oProxyCommand=touch /tmp/pwned",
    "--upload-pack=touch /tmp/pwned",
    "ext::sh -c touch% /tmp/pwned",
    "fd::17",
    "Python",
    "heroku/python",
    "python" * 1000,
    "https://example.com/bp.git#$(x)",
    "https://example.com/bp.git#--upload-pack=x",
    "https://example.com/bp.git#a..b",
    "https://example.com/b p.git",
    "ssh://-oProxyCommand=touch%20x/repo",
    "ssh://user@-oProxyCommand=x/repo",
    "https://example.com/" + "a" * 3000,
])
def test_hostile_specs_are_refused_in_one_line(text: str) -> None:
    with pytest.raises((BuildpackInvalid, UsageError)) as caught:
        parse_buildpack(text)
    message = caught.value.message
    assert "\n" not in message and "\x00" not in message and len(message) < 400


@pytest.mark.parametrize("text", ["ssh://secret@-bad/repo", "https://user:secret@example.com/bp.git#$(x)",
                                  "https://user:secret@example.com/bp.git#a..b"])
def test_credentials_stay_out_of_errors(text: str) -> None:
    with pytest.raises((BuildpackInvalid, UsageError)) as caught:
        parse_buildpack(text)
    assert "secret" not in caught.value.message


# --- resolver: built-in and path -----------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_resolves(name: str, resolver: BuildpackResolver) -> None:
    resolved = resolver.resolve(parse_buildpack(name))
    assert resolved.host_dir == builtin_dir() / name and resolved.name == name
    assert re.fullmatch(r"builtin-[0-9a-f]{12}", resolved.version)
    for script in ("detect", "compile", "release"):
        assert os.access(resolved.host_dir / "bin" / script, os.X_OK), script


def test_builtin_names_are_listed(resolver: BuildpackResolver) -> None:
    assert resolver.builtin_names() == BUILTINS


def test_an_unknown_builtin_lists_the_known_ones(resolver: BuildpackResolver) -> None:
    with pytest.raises(BuildpackInvalid) as caught:
        resolver.resolve(parse_buildpack("ruby"))
    assert "ruby" in caught.value.message and "python" in caught.value.message


def test_a_path_buildpack_is_versioned_by_content(tmp_path: Path, resolver: BuildpackResolver) -> None:
    host_bp = make_buildpack(tmp_path / "My Buildpack")
    first = resolver.resolve(parse_buildpack(str(host_bp)))
    assert first.name == "my-buildpack" and re.fullmatch(r"path-[0-9a-f]{12}", first.version)
    assert resolver.resolve(parse_buildpack(str(host_bp))).version == first.version
    (host_bp / "bin" / "compile").write_text("#!/usr/bin/env bash\necho changed\n")
    assert resolver.resolve(parse_buildpack(str(host_bp))).version != first.version


def test_a_cloud_foundry_buildpack_is_accepted(tmp_path: Path, resolver: BuildpackResolver) -> None:
    host_bp = make_buildpack(tmp_path / "cf", scripts=("supply",))
    assert resolver.resolve(parse_buildpack(str(host_bp))).host_dir == host_bp


@pytest.mark.parametrize(("scripts", "executable", "why"), [
    ((), True, "not a buildpack"),
    (("compile",), True, "not a buildpack"),
    (("detect",), True, "not a buildpack"),
    (("detect", "compile"), False, "not executable"),
])
def test_a_path_that_is_not_a_buildpack_is_refused(tmp_path: Path, resolver: BuildpackResolver,
                                                   scripts: tuple[str, ...], executable: bool,
                                                   why: str) -> None:
    host_bp = make_buildpack(tmp_path / "bp", scripts=scripts, executable=executable)
    with pytest.raises(BuildpackInvalid, match=why):
        resolver.resolve(parse_buildpack(str(host_bp)))


def test_missing_folders_and_files_are_refused(tmp_path: Path, resolver: BuildpackResolver) -> None:
    with pytest.raises(BuildpackInvalid, match="no such folder"):
        resolver.resolve(parse_buildpack(str(tmp_path / "absent")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildpackInvalid, match="not a folder"):
        resolver.resolve(parse_buildpack(str(tmp_path / "file")))


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "../.."])
def test_links_out_of_a_buildpack_are_refused(tmp_path: Path, resolver: BuildpackResolver,
                                              target: str) -> None:
    host_bp = make_buildpack(tmp_path / "bp")
    (host_bp / "lib").mkdir()
    (host_bp / "lib" / "escape").symlink_to(target)
    with pytest.raises(BuildpackInvalid, match="out of the buildpack"):
        resolver.resolve(parse_buildpack(str(host_bp)))


# --- resolver: git -------------------------------------------------------------------------------

@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str, str]:
    """A local repository: tag v1 at a buildpack commit, then one more commit on main."""
    host_repo = make_buildpack(tmp_path / "origin" / "git-bp")
    (host_repo / "VERSION").write_text("1\n")
    git(host_repo, "init", "-q")
    git(host_repo, "add", "-A")
    git(host_repo, "commit", "-q", "-m", "v1")
    git(host_repo, "tag", "v1")
    tagged = git(host_repo, "rev-parse", "HEAD")
    (host_repo / "VERSION").write_text("2\n")
    git(host_repo, "commit", "-q", "-am", "v2")
    return host_repo, tagged, git(host_repo, "rev-parse", "HEAD")


def test_a_git_tag_resolves_to_its_commit(origin: tuple[Path, str, str],
                                          resolver: BuildpackResolver) -> None:
    host_repo, tagged, _ = origin
    resolved = resolver.resolve(parse_buildpack(f"{host_repo.as_uri()}#v1"))
    assert resolved.version == tagged and resolved.name == "git-bp"
    assert (resolved.host_dir / "VERSION").read_text() == "1\n"
    assert os.access(resolved.host_dir / "bin" / "detect", os.X_OK)
    assert not (resolved.host_dir / ".git").exists()


def test_the_default_branch_is_fetched_again(origin: tuple[Path, str, str],
                                             resolver: BuildpackResolver) -> None:
    host_repo, _, head = origin
    assert resolver.resolve(parse_buildpack(host_repo.as_uri())).version == head
    (host_repo / "VERSION").write_text("3\n")
    git(host_repo, "commit", "-q", "-am", "v3")
    again = resolver.resolve(parse_buildpack(host_repo.as_uri()))
    assert again.version == git(host_repo, "rev-parse", "HEAD") != head
    assert (again.host_dir / "VERSION").read_text() == "3\n"


def test_a_commit_ref_is_reused_from_the_cache_without_the_origin(
        origin: tuple[Path, str, str], resolver: BuildpackResolver) -> None:
    host_repo, tagged, _ = origin
    first = resolver.resolve(parse_buildpack(f"{host_repo.as_uri()}#{tagged}"))
    shutil.rmtree(host_repo)
    second = resolver.resolve(parse_buildpack(f"{host_repo.as_uri()}#{tagged}"))
    assert second == first and second.version == tagged
    # A tag may have moved, so it is fetched again, and the origin is gone.
    with pytest.raises(UsageError, match="cannot clone"):
        resolver.resolve(parse_buildpack(f"{host_repo.as_uri()}#v1"))


def test_a_missing_ref_is_one_clear_line(origin: tuple[Path, str, str],
                                         resolver: BuildpackResolver, tmp_path: Path) -> None:
    host_repo, _, _ = origin
    with pytest.raises(UsageError, match="no-such-tag") as caught:
        resolver.resolve(parse_buildpack(f"{host_repo.as_uri()}#no-such-tag"))
    assert "\n" not in caught.value.message
    assert not list((tmp_path / "bp-cache").rglob(".tmp-*")), "the failed clone was left behind"


def test_a_git_repository_that_is_not_a_buildpack_is_refused(tmp_path: Path,
                                                             resolver: BuildpackResolver) -> None:
    host_repo = tmp_path / "not-bp"
    host_repo.mkdir()
    (host_repo / "README").write_text("hello\n")
    git(host_repo, "init", "-q")
    git(host_repo, "add", "-A")
    git(host_repo, "commit", "-q", "-m", "x")
    with pytest.raises(BuildpackInvalid, match="not a buildpack"):
        resolver.resolve(parse_buildpack(host_repo.as_uri()))
    assert not list((tmp_path / "bp-cache" / "git").glob("*/*")), "a checkout was kept"


# --- buildpack_tar -------------------------------------------------------------------------------

def test_buildpack_tar_layout(tmp_path: Path, resolver: BuildpackResolver) -> None:
    host_bp = make_buildpack(tmp_path / "bp")
    (host_bp / "lib").mkdir()
    (host_bp / "lib" / "data.txt").write_text("data\n")
    (host_bp / "lib" / "alias.txt").symlink_to("data.txt")
    (host_bp / "bin" / "tool").symlink_to("../lib/data.txt")
    (host_bp / ".git").mkdir()
    (host_bp / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    resolved = resolver.resolve(parse_buildpack(str(host_bp)))

    data = buildpack_tar(resolved, ctr_prefix="buildpacks/0-bp/", uid=1000, gid=1000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members)[:2] == ["buildpacks", "buildpacks/0-bp"]
        assert set(members) == {"buildpacks", "buildpacks/0-bp", "buildpacks/0-bp/bin",
                                "buildpacks/0-bp/bin/detect", "buildpacks/0-bp/bin/compile",
                                "buildpacks/0-bp/bin/tool", "buildpacks/0-bp/lib",
                                "buildpacks/0-bp/lib/data.txt", "buildpacks/0-bp/lib/alias.txt"}
        assert all((m.uid, m.gid) == (1000, 1000) for m in members.values())
        assert members["buildpacks/0-bp/bin/detect"].mode == 0o755
        assert members["buildpacks/0-bp/lib/data.txt"].mode == 0o644
        assert members["buildpacks/0-bp/lib/alias.txt"].issym()
        assert members["buildpacks/0-bp/lib/alias.txt"].linkname == "data.txt"
        assert tar.extractfile("buildpacks/0-bp/lib/data.txt").read() == b"data\n"
    assert buildpack_tar(resolved, ctr_prefix="buildpacks/0-bp/", uid=1000, gid=1000) == data


def test_buildpack_tar_of_a_builtin_keeps_exec_bits(resolver: BuildpackResolver) -> None:
    resolved = resolver.resolve(parse_buildpack("python"))
    with tarfile.open(fileobj=io.BytesIO(buildpack_tar(resolved, ctr_prefix="buildpacks/1-python",
                                                       uid=1000, gid=1000))) as tar:
        assert tar.getmember("buildpacks/1-python/bin/compile").mode == 0o755
        assert tar.getmember("buildpacks/1-python/README.md").mode == 0o644


def test_buildpack_tar_refuses_links_added_after_resolving(tmp_path: Path,
                                                           resolver: BuildpackResolver) -> None:
    host_bp = make_buildpack(tmp_path / "bp")
    resolved = resolver.resolve(parse_buildpack(str(host_bp)))
    (host_bp / "bin" / "steal").symlink_to("/etc/shadow")
    with pytest.raises(BuildpackInvalid, match="out of the buildpack"):
        buildpack_tar(resolved, ctr_prefix="buildpacks/0-bp/", uid=1000, gid=1000)


@pytest.mark.parametrize("prefix", ["", "/buildpacks/0-bp", "../0-bp", "buildpacks/../../x", "./bp"])
def test_buildpack_tar_refuses_bad_prefixes(prefix: str, tmp_path: Path) -> None:
    resolved = ResolvedBuildpack(name="bp", host_dir=make_buildpack(tmp_path / "bp"),
                                 version="path-0", origin="./bp")
    with pytest.raises(Exception, match="relative folder"):
        buildpack_tar(resolved, ctr_prefix=prefix, uid=1000, gid=1000)


# --- the built-in buildpacks' detect and release, on this host's bash --------------------------

@pytest.mark.parametrize(("example", "detected"), [
    ("python-hello", ["python", "procfile"]),
    ("node-hello", ["nodejs"]),
    ("static-hello", ["static"]),
    ("procfile-hello", ["procfile"]),
])
def test_builtin_detect_on_the_examples(example: str, detected: list[str]) -> None:
    accepted = [name for name in BUILTINS
                if subprocess.run([str(builtin_dir() / name / "bin" / "detect"), str(EXAMPLES / example)],
                                  capture_output=True, text=True).returncode == 0]
    assert sorted(accepted) == sorted(detected)


@pytest.mark.parametrize(("name", "example", "web"), [
    ("python", "python-hello", "python app.py"),
    ("static", "static-hello", 'python3 -m http.server "$PORT" --bind 0.0.0.0'),
    ("procfile", "procfile-hello", None),
])
def test_builtin_release_is_yaml(name: str, example: str, web: str | None) -> None:
    out = subprocess.run([str(builtin_dir() / name / "bin" / "release"), str(EXAMPLES / example)],
                         capture_output=True, text=True, check=True).stdout
    assert yaml.safe_load(out)["default_process_types"].get("web") == web


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this host")
def test_nodejs_release_prefers_npm_start(tmp_path: Path) -> None:
    release = str(builtin_dir() / "nodejs" / "bin" / "release")

    def web() -> str | None:
        out = subprocess.run([release, str(tmp_path)], capture_output=True, text=True, check=True).stdout
        return yaml.safe_load(out)["default_process_types"].get("web")

    (tmp_path / "package.json").write_text('{"name": "x"}')
    assert web() is None
    (tmp_path / "index.js").write_text("")
    assert web() == "node index.js"
    (tmp_path / "server.js").write_text("")
    assert web() == "node server.js"
    (tmp_path / "package.json").write_text('{"scripts": {"start": "node server.js"}}')
    assert web() == "npm start"
