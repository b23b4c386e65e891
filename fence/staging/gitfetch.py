"""Clones a git repository at a branch, tag or commit as a bounded, cancellable subprocess with no identity of the daemon's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import unquote, urlsplit

from fence.errors import StagingFailed, UsageError
from fence.rules import GitSpec

# Only these transports may run: no ext::, no fd::, whatever a URL or a submodule says; file
# only for a repository under an admin root.
_NETWORK_PROTOCOLS = "https:http:git:ssh"
# ssh without the daemon's keys, agent or config: a clone is anonymous or it fails.
_SSH_COMMAND = ("ssh -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o IdentityAgent=none "
                "-o BatchMode=yes -F /dev/null")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_POLL_SECONDS = 0.2
_MAX_REASON = 300


class FenceSettings(Protocol):
    """Reads the node's ``fence`` config keys (``ConfigStore`` is one)."""

    def fence(self, key_path: str) -> Any:
        """The value of ``key_path`` (or its default)."""


@dataclass(frozen=True)
class FetchPolicy:
    """How far a clone may go.

    Attributes:
        local_roots: folders under which a ``file://`` repository may be cloned (none: no
            ``file://`` at all).
        timeout: seconds the whole fetch (clone and checkout) may take.
        max_bytes: the most the clone's folder may grow to while it is fetched and checked out.
        cancelled: says whether the client went away (the clone is then killed).
    """

    local_roots: tuple[Path, ...] = ()
    timeout: float = 300.0
    max_bytes: int = 1024 * 1024 * 1024
    cancelled: Callable[[], bool] = field(default=lambda: False, compare=False)

    @classmethod
    def from_config(cls, config: FenceSettings, *, extra_roots: Sequence[Path] = (),
                    cancelled: Callable[[], bool] = lambda: False) -> FetchPolicy:
        """The policy of ``staging/local_roots``, ``staging/git_timeout`` and ``staging/max_git``.

        Args:
            config: the node's config.
            extra_roots: more folders ``file://`` may read (the buildpack roots, for buildpacks).
            cancelled: says whether the client went away.
        """
        max_mib = int(config.fence("staging/max_git")) or int(config.fence("staging/max_upload"))
        roots = tuple(Path(p) for p in config.fence("staging/local_roots")) + tuple(extra_roots)
        return cls(local_roots=roots, timeout=float(config.fence("staging/git_timeout")),
                   max_bytes=max_mib * 1024 * 1024, cancelled=cancelled)


def under_roots(host_path: str | Path, roots: Sequence[Path]) -> bool:
    """Whether ``host_path``, with every symlink resolved, lies in one of ``roots`` (also resolved)."""
    real = os.path.realpath(host_path)
    for root in roots:
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
            return True
    return False


def file_url_path(url: str) -> str | None:
    """The local path of a ``file://`` URL, or ``None`` for any other URL."""
    if not url.startswith("file://"):
        return None
    return unquote(urlsplit(url).path) or "/"


def fetch(spec: GitSpec, host_dest: Path, *, what: str, policy: FetchPolicy) -> str:
    """Clone ``spec`` into ``host_dest`` (which must not exist) and check out its ref.

    git runs with an empty environment and config: a throwaway HOME, no system or global
    config, no credential helper or prompt, ssh without keys, agent or config. It is killed when
    it passes ``policy.timeout`` or ``policy.max_bytes`` or when ``policy.cancelled()`` says so;
    on every failure ``host_dest`` is removed.

    Args:
        spec: URL and ref.
        host_dest: the folder to create.
        what: what it is, for errors (``source``, ``buildpack``).
        policy: roots, time and size bounds, cancellation.

    Returns:
        The commit checked out (40 hex digits).

    Raises:
        UsageError: a ``file://`` URL outside the admin roots, the repository cannot be cloned,
            the ref does not exist in it, or the clone passed a bound (one line naming the key).
        StagingFailed: cancelled (the client went away).
    """
    local = file_url_path(spec.url)
    if local is not None and not under_roots(local, policy.local_roots):
        raise UsageError(detail=f"{what} {spec.display()}: file:// repositories may only be read from "
                                "the admin's folders (staging/local_roots)")
    runner = _GitRunner(spec=spec, host_dest=host_dest, what=what, policy=policy,
                        allow_file=local is not None)
    try:
        options = ["--no-checkout"] if spec.ref is not None else ["--no-tags"]
        runner.run(["clone", "--quiet", *options, "--", spec.url, str(host_dest)], fail="cannot clone")
        if spec.ref is not None:
            try:
                runner.run(["-C", str(host_dest), "checkout", "--quiet", "--detach", spec.ref, "--"])
            except _GitFailed:
                try:
                    runner.run(["-C", str(host_dest), "checkout", "--quiet", "--detach",
                                f"origin/{spec.ref}", "--"])
                except _GitFailed as exc:
                    raise UsageError(detail=f"{what} {spec.display()}: no branch, tag or commit "
                                            f"{spec.ref!r} ({exc.reason})") from None
        return runner.run(["-C", str(host_dest), "rev-parse", "HEAD"]).strip()
    except _GitFailed as exc:
        shutil.rmtree(host_dest, ignore_errors=True)
        raise UsageError(detail=f"{what} {spec.display()}: {exc.fail}: {exc.reason}") from None
    except BaseException:
        shutil.rmtree(host_dest, ignore_errors=True)
        raise
    finally:
        runner.close()


class _GitFailed(Exception):
    def __init__(self, fail: str, reason: str) -> None:
        super().__init__(reason)
        self.fail = fail
        self.reason = reason


class _GitRunner:
    """Runs git commands under one deadline, watching the clone's size and the client."""

    def __init__(self, *, spec: GitSpec, host_dest: Path, what: str, policy: FetchPolicy,
                 allow_file: bool) -> None:
        self._spec, self._host_dest, self._what, self._policy = spec, host_dest, what, policy
        self._deadline = time.monotonic() + policy.timeout
        host_dest.parent.mkdir(parents=True, exist_ok=True)
        self._host_home = Path(tempfile.mkdtemp(prefix=".git-home-", dir=host_dest.parent))
        self._env = {
            "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
            "HOME": str(self._host_home),
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/true",
            "SSH_ASKPASS": "/bin/true",
            "GIT_SSH_COMMAND": _SSH_COMMAND,
            "GIT_ALLOW_PROTOCOL": _NETWORK_PROTOCOLS + (":file" if allow_file else ""),
        }

    def close(self) -> None:
        shutil.rmtree(self._host_home, ignore_errors=True)

    def run(self, args: list[str], *, fail: str = "git failed") -> str:
        """Run ``git args``; its stdout, or ``_GitFailed`` with the last useful stderr line."""
        host_out = self._host_home / "out"
        host_err = self._host_home / "err"
        # Empty config on the command line too: a credential helper is never asked.
        argv = ["git", "-c", "credential.helper=", "-c", "core.hooksPath=/dev/null", *args]
        with open(host_out, "wb") as out, open(host_err, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self._env,
                                    cwd=self._host_home, start_new_session=True)
            try:
                self._watch(proc)
            finally:
                if proc.poll() is None:
                    _kill(proc)
        if proc.returncode != 0:
            raise _GitFailed(fail, _reason(host_err.read_bytes()[-8192:]))
        return host_out.read_bytes()[:4096].decode("utf-8", "replace")

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        shown = f"{self._what} {self._spec.display()}"
        while True:
            try:
                proc.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            else:  # a clone that finished between two looks is measured once more
                self._check_size(proc, shown)
                return
            if self._policy.cancelled():
                _kill(proc)
                raise StagingFailed(phase="fetching", buildpack="", detail=f"{shown}: cancelled")
            if time.monotonic() > self._deadline:
                _kill(proc)
                raise UsageError(detail=f"{shown}: fetching took longer than {self._policy.timeout:g} s "
                                        "(staging/git_timeout); stopped")
            self._check_size(proc, shown)

    def _check_size(self, proc: subprocess.Popen[bytes], shown: str) -> None:
        if _folder_size(self._host_dest, self._policy.max_bytes) > self._policy.max_bytes:
            _kill(proc)
            raise UsageError(detail=f"{shown}: the clone grew past "
                                    f"{self._policy.max_bytes // (1024 * 1024)} MiB (staging/max_git); stopped")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill git and every helper it started (remote-http, index-pack, ssh): its whole session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _folder_size(host_dir: Path, stop_above: int) -> int:
    """Bytes of the regular files under ``host_dir`` (stops counting once past ``stop_above``)."""
    total = 0
    pending = [str(host_dir)]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                for child in listing:
                    try:
                        if child.is_dir(follow_symlinks=False):
                            pending.append(child.path)
                        elif child.is_file(follow_symlinks=False):
                            total += child.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # git renamed or removed it meanwhile
                    if total > stop_above:
                        return total
        except OSError:
            continue
    return total


def _reason(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    useful = [line for line in lines if "fatal" in line or "error" in line]
    return (useful or lines or ["git failed"])[-1][:_MAX_REASON]
