"""Fixtures every tier shares: an isolated FENCE_HOME, CLI runners, and the real engine when present."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fence.home import NodeHome

STACK_IMAGE = os.environ.get("FENCE_TEST_IMAGE", "fence/stack:bookworm")


@dataclass(frozen=True)
class CliResult:
    """What a CLI process did."""

    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NodeHome:
    """A fresh FENCE_HOME for this test, also set in the environment for child processes."""
    root = tmp_path / "fence-home"
    monkeypatch.setenv("FENCE_HOME", str(root))
    monkeypatch.delenv("FENCE_SOCKET", raising=False)
    node = NodeHome(host_root=root)
    node.ensure()
    return node


def run_cli(program: str, *args: str, stdin: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> CliResult:
    """Run `fence` or `kato` as a real process (so exit codes and stderr are the user's)."""
    proc = subprocess.run([sys.executable, "-m", program, *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, env=env or os.environ.copy(),
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def kato(home: NodeHome):  # noqa: ANN201
    """Runs `kato ARGS…` against this test's FENCE_HOME."""
    return lambda *args, stdin=None: run_cli("kato", *args, stdin=stdin)


def engine_problem() -> str | None:
    """Why the real Docker Engine cannot be used, or ``None`` when it can."""
    try:
        proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"no Docker Engine: {exc}"
    if proc.returncode != 0:
        return f"no Docker Engine answers: {proc.stderr.strip()[:200]}"
    image = subprocess.run(["docker", "image", "inspect", STACK_IMAGE], capture_output=True)
    if image.returncode != 0:
        return f"stack image {STACK_IMAGE} is missing (make test builds it)"
    return None


@pytest.fixture(scope="session")
def engine() -> str:
    """The stack image to use on the real engine; skips (with the reason) when there is none."""
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    return STACK_IMAGE


# --- the suite-level leak check: nothing a test started survives the suite -------------------

def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.leaks import LeakWatch

    session.config._fence_leaks = LeakWatch()  # noqa: SLF001 - pytest's config carries plugin state
    session.config._fence_leaks.start()  # noqa: SLF001


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201
    yield
    watch = getattr(item.config, "_fence_leaks", None)
    if watch is not None:
        watch.after(item.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    watch = getattr(session.config, "_fence_leaks", None)
    if watch is None:
        return
    leaks = watch.leaks(scope=session.config._tmp_path_factory.getbasetemp())  # noqa: SLF001
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"LEAK: {item.kind} {item.ident} ({item.what}) left running by {test}"
             for item, test in leaks.items()]
    for line in lines:
        (reporter.write_line if reporter else print)(line)
    for item in leaks:
        watch.stop(item)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
