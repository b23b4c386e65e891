"""Clones a git repository at a branch, tag or commit (gitpython); ``fence.rules`` parses and checks the spec."""

from __future__ import annotations

import os
from pathlib import Path

import git

from fence.errors import UsageError
from fence.rules import GitSpec

# Only these transports may run: no ext::, no fd::, whatever a URL or a submodule says.
_ALLOWED_PROTOCOLS = "file:git:http:https:ssh"


def fetch(spec: GitSpec, host_dest: Path, *, what: str) -> str:
    """Clone ``spec`` into ``host_dest`` (which must not exist) and check out its ref.

    Args:
        spec: URL and ref.
        host_dest: the folder to create.
        what: what it is, for errors.

    Returns:
        The commit checked out (40 hex digits).

    Raises:
        UsageError: the repository cannot be cloned, or the ref does not exist in it.
    """
    env = {
        "GIT_ALLOW_PROTOCOL": _ALLOWED_PROTOCOLS,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": os.environ.get("HOME", "/nonexistent"),
    }
    try:
        repo = git.Repo.clone_from(spec.url, host_dest, env=env, multi_options=["--no-tags"]
                                   if spec.ref is None else [], no_checkout=spec.ref is not None)
    except git.GitCommandError as exc:
        raise UsageError(detail=f"{what} {spec.display()}: cannot clone: {_git_reason(exc)}") from None
    if spec.ref is not None:
        try:
            repo.git.checkout("--detach", spec.ref, "--")
        except git.GitCommandError:
            try:
                repo.git.checkout("--detach", f"origin/{spec.ref}", "--")
            except git.GitCommandError as exc:
                raise UsageError(detail=f"{what} {spec.display()}: no branch, tag or commit "
                                        f"{spec.ref!r} ({_git_reason(exc)})") from None
    commit = repo.head.commit.hexsha
    repo.close()
    return commit


def _git_reason(exc: git.GitCommandError) -> str:
    lines = [line.strip() for line in str(exc.stderr or exc).splitlines() if line.strip()]
    useful = [line.removeprefix("stderr: ").strip("'") for line in lines if "fatal" in line or "error" in line]
    return (useful or lines or ["git failed"])[-1][:300]
