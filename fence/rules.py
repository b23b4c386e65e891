"""The input rules every entry point applies: app names, env variables, memory sizes, DNS host names and git specs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from fence.errors import InvalidName, UsageError

# Stdlib and fence.errors only: the CLIs import this module, and a CLI must start fast.

# App and buildpack names, and each label of a DNS name: no shell or path tricks.
NAME_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME_PATTERN = rf"{NAME_PATTERN}(?:\.{NAME_PATTERN})*"
MAX_DNS_NAME = 253
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_NAME = 255
MAX_ENV_VALUE = 64 * 1024
# Memory of an app instance (``--mem``, the manifest's ``mem``, ``container/memory``), in MiB.
APP_MEMORY_MIB = (16, 1024 * 1024)

_APP_NAME = re.compile(NAME_PATTERN)
_DNS_NAME = re.compile(DNS_NAME_PATTERN)
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*")
_SIZE_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_GIT_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_GIT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


def check_app_name(name: object, *, what: str = "app name") -> str:
    """Refuse an app name that is not 1-63 lower-case letters, digits and inner dashes (``NAME_PATTERN``).

    Args:
        name: the candidate name.
        what: what the name is, for the error (the manifest puts its file and line here).

    Returns:
        The name, unchanged.

    Raises:
        InvalidName: it breaks the pattern.
    """
    return _checked(name, _APP_NAME, 63, what=what, why="use 1-63 lower-case letters, digits and inner dashes")


def check_dns_name(name: object, *, what: str = "host name") -> str:
    """Refuse a DNS name that is not dot-separated ``NAME_PATTERN`` labels, at most 253 characters.

    Returns:
        The name, unchanged.

    Raises:
        InvalidName: it breaks the pattern (``what`` says what the name is).
    """
    return _checked(name, _DNS_NAME, MAX_DNS_NAME, what=what,
                    why="use dot-separated labels of lower-case letters, digits and inner dashes, "
                        f"at most {MAX_DNS_NAME} characters")


def is_app_name(name: object) -> bool:
    """Whether ``name`` passes ``check_app_name`` (for code that skips rather than refuses)."""
    return isinstance(name, str) and len(name) <= 63 and _APP_NAME.fullmatch(name) is not None


def is_dns_name(name: object) -> bool:
    """Whether ``name`` passes ``check_dns_name`` (for code that skips rather than refuses)."""
    return isinstance(name, str) and len(name) <= MAX_DNS_NAME and _DNS_NAME.fullmatch(name) is not None


def check_env_name(name: object, *, what: str = "env variable") -> str:
    """Refuse an env variable name that is not an identifier (``ENV_NAME``) of at most 255 characters.

    Returns:
        The name, unchanged.

    Raises:
        InvalidName: it breaks the pattern (``what`` says what the name is and where).
    """
    return _checked(name, ENV_NAME, MAX_ENV_NAME, what=what,
                    why=f"use letters, digits and '_', not starting with a digit, at most {MAX_ENV_NAME} characters")


def _checked(name: object, pattern: re.Pattern[str], longest: int, *, what: str, why: str) -> str:
    if not isinstance(name, str) or len(name) > longest or not pattern.fullmatch(name):
        raise InvalidName(what=what, value=_shorten(name), why=why)
    return name


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Refuse env names that are not identifiers and values holding NUL or over 64 KiB.

    Returns:
        The env as a new dict.

    Raises:
        InvalidName: a bad name or value.
    """
    for name, value in env.items():
        check_env_name(name)
        if not isinstance(value, str) or "\0" in value or len(value) > MAX_ENV_VALUE:
            raise InvalidName(what="value of env variable", value=name,
                              why="values may not hold NUL or exceed 64 KiB")
    return dict(env)


def env_from_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["K=V", …]`` as a checked mapping (later pairs win).

    Raises:
        InvalidName: a pair without ``=``, a bad name, or a bad value.
    """
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidName(what="env setting", value=_shorten(pair), why="write it as NAME=VALUE")
        env[name] = value
    return check_env(env)


def size_mib(text: str) -> int:
    """A size such as ``256``, ``256M``, ``1G``, ``1.5G`` or ``2048KiB`` in whole MiB (no unit: MiB).

    Raises:
        ValueError: not such a size, or not a whole number of MiB.
    """
    match = _SIZE.fullmatch(text.upper())
    if not match:
        raise ValueError(f"{text[:40]!r} is not a size")
    mib = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if mib != int(mib):
        raise ValueError(f"{text[:40]!r} is not a whole number of MiB")
    return int(mib)


def memory_allowed(minimum_mib: int, maximum_mib: int) -> str:
    """The phrase saying which memory sizes are allowed, for errors and ``kato config``."""
    return f"a memory size in MiB from {minimum_mib} to {maximum_mib}, like 256, 512M or 1G"


APP_MEMORY_ALLOWED = memory_allowed(*APP_MEMORY_MIB)


def parse_memory(text: str) -> int:
    """An app instance's memory size such as ``256M``, ``1G`` or ``512`` (MiB), in MiB.

    Raises:
        UsageError: not a size from 16 MiB to 1 TiB.
    """
    try:
        mib = size_mib(text)
    except ValueError:
        mib = 0
    if not APP_MEMORY_MIB[0] <= mib <= APP_MEMORY_MIB[1]:
        raise UsageError(detail=f"memory {text[:40]!r} is not a size like 256M or 1G ({APP_MEMORY_ALLOWED})")
    return mib


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
    return text.startswith(_GIT_SCHEMES)


def parse_git_spec(text: str, *, what: str) -> GitSpec:
    """Parse ``URL[#ref]``, refusing anything that could reach a shell or an option parser.

    Args:
        text: the URL as given.
        what: what it is, for the error (``--buildpack``, ``source``).

    Raises:
        UsageError: an unsupported scheme, control characters, or a malformed ref.
    """
    url, _, ref = text.partition("#")
    if not url.startswith(_GIT_SCHEMES):
        raise UsageError(detail=f"{what} {text!r}: git URLs must start with one of {', '.join(_GIT_SCHEMES)}")
    if len(text) > 2048 or any(ord(ch) < 0x20 or ch in " \x7f" for ch in text):
        raise UsageError(detail=f"{what} {text[:80]!r}: a git URL may not hold spaces or control characters")
    if "#" in text and not _GIT_REF.fullmatch(ref or ""):
        raise UsageError(detail=f"{what} {text!r}: the ref after '#' must be a branch, tag or commit name")
    if ref and (".." in ref or ref.startswith("-") or ref.endswith((".lock", "/"))):
        raise UsageError(detail=f"{what} {text!r}: the ref after '#' is not a valid git ref")
    return GitSpec(url=url, ref=ref or None)


def _shorten(value: object) -> object:
    """A value short enough for a one-line error (names can be megabytes long)."""
    if isinstance(value, str) and len(value) > 64:
        return value[:60] + "..."
    return value


# --- process types (issue 14, P1) ---------------------------------------------------------------

PROCESS_TYPE_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
_PROCESS_TYPE = re.compile(PROCESS_TYPE_PATTERN)
MAX_INSTANCES = 100
_COUNT = re.compile(r"[0-9]{1,3}")


def parse_scale(specs: Iterable[str]) -> dict[str, int]:
    """Instance counts per process type from ``fence scale`` arguments: ``TYPE=N`` each, or one
    bare ``N`` for ``web``.

    Raises:
        UsageError: no argument, a malformed one, a count that is not a whole number from 0 to
            ``MAX_INSTANCES``, ``release`` (it runs once per release), or a type given twice.
    """
    given = list(specs)
    if not given:
        raise UsageError(detail="give instance counts: fence scale APP 3, or fence scale APP web=3 worker=2")
    if len(given) == 1 and "=" not in given[0]:
        given = [f"web={given[0]}"]
    counts: dict[str, int] = {}
    for spec in given:
        kind, sep, value = spec.partition("=")
        if not sep:
            raise UsageError(detail=f"scale: {_shorten(spec)!r} is not TYPE=COUNT (e.g. web=2)")
        if not _PROCESS_TYPE.fullmatch(kind):
            raise UsageError(detail=f"scale: process type {_shorten(kind)!r} is not allowed "
                                    f"(use {PROCESS_TYPE_PATTERN})")
        if kind == "release":
            raise UsageError(detail="scale: release runs once per release, it has no instances to scale")
        if not value:
            raise UsageError(detail=f"scale: {spec!r} gives no count after '=' (e.g. {kind}=2)")
        if not _COUNT.fullmatch(value) or int(value) > MAX_INSTANCES:
            raise UsageError(detail=f"scale: {kind}={_shorten(value)!r}: the count must be a whole number "
                                    f"from 0 to {MAX_INSTANCES}")
        if kind in counts:
            raise UsageError(detail=f"scale: process type {kind!r} is given twice")
        counts[kind] = int(value)
    return counts
# --- end process types ---
