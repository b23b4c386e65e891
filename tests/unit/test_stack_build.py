"""Stack image build: the mmdebstrap command, refusals of bad input, failure reporting, import."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from fence.backend.fake import FakeBackend
from fence.errors import StackBuildFailed, UsageError
from fence.stack.build import StackRecipe, build_stack, mmdebstrap_argv, project_hooks_dir


class FakePopen:
    """Stands in for mmdebstrap: writes a tarball (or fails) and prints log lines."""

    def __init__(self, exit_code: int, lines: list[str]) -> None:
        self.exit_code = exit_code
        self.lines = lines
        self.argv: list[str] = []

    def __call__(self, argv: list[str], **_: object) -> "FakePopen":
        self.argv = argv
        if self.exit_code == 0:
            Path(argv[argv.index("bookworm") + 1]).write_bytes(b"\0" * 4096)
        self.stdout = io.StringIO("".join(line + "\n" for line in self.lines))
        self.returncode = self.exit_code
        return self

    def wait(self) -> int:
        return self.exit_code


def test_argv_installs_the_stack_packages_user_and_hooks(tmp_path: Path) -> None:
    argv = mmdebstrap_argv(StackRecipe(), tmp_path / "out.tar")
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv
    include = next(a for a in argv if a.startswith("--include="))
    for package in ("bash", "python3-venv", "nodejs", "npm", "git", "curl", "procps", "ca-certificates"):
        assert package in include.split("=", 1)[1].split(",")
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert any("useradd --create-home --uid 1000 --gid 1000 --shell /bin/bash stackato" in h for h in hooks)
    assert any(f"sync-in {project_hooks_dir()} /etc/stackato/hooks" in h for h in hooks)
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in argv


def test_project_ships_the_three_admin_hooks() -> None:
    for phase in ("pre-staging", "post-staging", "pre-running"):
        hook = project_hooks_dir() / phase
        assert hook.is_file() and hook.stat().st_mode & 0o111, phase


@pytest.mark.parametrize(("recipe", "ref", "fragment"), [
    (StackRecipe(), "Not An Image", "--tag"),
    (StackRecipe(suite="bookworm; rm -rf /"), "fence/stack:x", "--suite"),
    (StackRecipe(mirror="ftp://mirror"), "fence/stack:x", "mirror"),
    (StackRecipe(host_hooks=Path("/nonexistent/hooks")), "fence/stack:x", "hooks folder"),
])
def test_bad_input_is_refused_before_any_work(tmp_path: Path, recipe: StackRecipe, ref: str,
                                              fragment: str) -> None:
    runner = FakePopen(0, [])
    with pytest.raises(UsageError, match=fragment):
        build_stack(recipe=recipe, ref=ref, backend=FakeBackend(), host_workdir=tmp_path,
                    on_line=lambda _: None, run=runner)
    assert runner.argv == []


def test_mmdebstrap_failure_reports_its_last_lines_and_cleans_up(tmp_path: Path) -> None:
    runner = FakePopen(1, ["I: downloading", "E: cannot resolve deb.example"])
    with pytest.raises(StackBuildFailed, match="E: cannot resolve deb.example"):
        build_stack(recipe=StackRecipe(), ref="fence/stack:t", backend=FakeBackend(),
                    host_workdir=tmp_path, on_line=lambda _: None, run=runner)
    assert list(tmp_path.iterdir()) == []


def test_success_imports_with_labels_and_shows_progress(tmp_path: Path) -> None:
    backend = FakeBackend(images=())
    lines: list[str] = []
    image = build_stack(recipe=StackRecipe(), ref="fence/stack:t", backend=backend,
                        host_workdir=tmp_path, on_line=lines.append,
                        run=FakePopen(0, ["I: chroot architecture amd64", "noise"]))
    assert backend.image_info("fence/stack:t") == image
    assert lines[0].startswith("-----> Building the bookworm root filesystem")
    assert "       I: chroot architecture amd64" in lines and "noise" not in "".join(lines)
    assert any(line.startswith("-----> Importing") for line in lines)
    assert lines[-1].startswith("-----> Stack fence/stack:t is")
    assert list(tmp_path.iterdir()) == []


def test_missing_mmdebstrap_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fence.errors import ToolMissing
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="mmdebstrap is not installed"):
        build_stack(recipe=StackRecipe(), ref="fence/stack:t", backend=FakeBackend(),
                    host_workdir=tmp_path / "w", on_line=lambda _: None, run=subprocess.Popen)
