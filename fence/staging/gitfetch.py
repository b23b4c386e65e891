"""Fetches a git repository at a branch, tag or commit (gitpython), for app sources and buildpacks."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import git

from fence.errors import UsageError

_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
# Only these transports may run: no ext::, no fd::, whatever a URL or a submodule says.
_ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


@dataclass(frozen=True)
class GitSpec:
    """A repository URL and an optional ref, parsed from ``URL#ref``.

    Attributes:
        url: the repository URL.
        ref: branch, tag or commit; ``None`` for the default branch.
    """

    url: str
    ref: str | None = None

    def display(self) -> str:
        """The URL without credentials (``https://user:secret@host`` → ``https://host``)."""
        return re.sub(r"^([a-z]+://)[^/@]*@", r"\1", self.url) + (f"#{self.ref}" if self.ref else "")


def looks_like_git_url(text: str) -> bool:
    """Whether ``text`` names a git repository by URL (``https://``, ``ssh://``, ``git://``, ``file://``)."""
    return text.startswith(_SCHEMES)


def parse_git_spec(text: str, *, what: str) -> GitSpec:
    """Parse ``URL[#ref]``, refusing anything that could reach a shell or an option parser.

    Args:
        text: the URL as given.
        what: what it is, for the error (``--buildpack``, ``source``).

    Raises:
        UsageError: an unsupported scheme, control characters, or a malformed ref.
    """
    url, _, ref = text.partition("#")
    if not url.startswith(_SCHEMES):
        raise UsageError(detail=f"{what} {text!r}: git URLs must start with one of {', '.join(_SCHEMES)}")
    if len(text) > 2048 or any(ord(ch) < 0x20 or ch in " \x7f" for ch in text):
        raise UsageError(detail=f"{what} {text[:80]!r}: a git URL may not hold spaces or control characters")
    if "#" in text and not _REF.fullmatch(ref or ""):
        raise UsageError(detail=f"{what} {text!r}: the ref after '#' must be a branch, tag or commit name")
    if ref and (".." in ref or ref.startswith("-") or ref.endswith((".lock", "/"))):
        raise UsageError(detail=f"{what} {text!r}: the ref after '#' is not a valid git ref")
    return GitSpec(url=url, ref=ref or None)


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
