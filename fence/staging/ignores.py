"""Decides which app files ``.stackatoignore``, ``.cfignore``, ``.slugignore`` and ``ignores:`` leave out."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fence.errors import SourceRefused

IGNORE_FILES = (".stackatoignore", ".cfignore", ".slugignore")
MAX_IGNORE_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class IgnoreRule:
    """One compiled pattern.

    Attributes:
        pattern: the pattern as written.
        regex: matches the whole ``/``-joined path relative to the app root.
        negated: a ``!`` pattern, which brings back what earlier patterns left out.
        dir_only: a pattern ending in ``/``, which matches directories only.
    """

    pattern: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


class IgnoreRules:
    """Gitignore-like rules, all anchored at the app root.

    Syntax: blank lines and ``#`` comments are skipped; ``*`` and ``?`` match within one path
    component, ``[abc]`` a character class; ``**/`` matches any number of directories and a
    trailing ``/**`` everything inside; a pattern with a ``/`` at its start or in its middle is
    anchored at the app root, one without matches a name at any depth; a trailing ``/`` matches
    directories only; ``!`` re-includes (the last matching pattern wins), though as in git
    nothing inside an ignored directory comes back; ``\\#`` and ``\\!`` escape.
    """

    def __init__(self, *, patterns: tuple[str, ...] = ()) -> None:
        self._rules = tuple(rule for rule in (_compile(p) for p in patterns) if rule is not None)
        self._dirs: dict[tuple[str, ...], bool] = {}

    @property
    def rules(self) -> tuple[IgnoreRule, ...]:
        """The compiled rules, in order."""
        return self._rules

    def ignored(self, parts: tuple[str, ...], *, is_dir: bool) -> bool:
        """Whether the path is left out, itself or because a directory above it is.

        Args:
            parts: the path's components relative to the app root.
            is_dir: whether the path is a directory (for patterns ending in ``/``).

        Returns:
            True when the path must not be shipped.
        """
        if not self._rules:
            return False
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            known = self._dirs.get(prefix)
            if known is None:
                known = self._dirs[prefix] = self._match("/".join(prefix), is_dir=True)
            if known:
                return True
        return self._match("/".join(parts), is_dir=is_dir)

    def _match(self, path: str, *, is_dir: bool) -> bool:
        result = False
        for rule in self._rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.negated != result:
                continue  # cannot change the outcome
            if rule.regex.fullmatch(path):
                result = not rule.negated
        return result


def parse_ignore_file(text: bytes, *, source: str) -> tuple[str, ...]:
    """Split an ignore file into its patterns (comments and blank lines dropped).

    Args:
        text: the file's bytes.
        source: its name, for errors.

    Returns:
        The patterns in order.

    Raises:
        SourceRefused: the file is over 64 KiB or not UTF-8.
    """
    if len(text) > MAX_IGNORE_FILE_BYTES:
        raise SourceRefused(entry=repr(source), why=f"is larger than {MAX_IGNORE_FILE_BYTES // 1024} KiB")
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceRefused(entry=repr(source), why="is not UTF-8 text") from None
    return tuple(line for line in (raw.rstrip("\r") for raw in decoded.split("\n"))
                 if line.strip() and not line.startswith("#"))


def _compile(raw: str) -> IgnoreRule | None:
    pattern = raw.rstrip(" \t") if not raw.endswith("\\ ") else raw
    negated = pattern.startswith("!")
    if negated or pattern.startswith(("\\!", "\\#")):
        pattern = pattern[1:]
    dir_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    if not pattern:
        return None
    body = _glob_to_regex(pattern)
    regex = body if anchored or pattern.startswith("**") else f"(?:.*/)?{body}"
    return IgnoreRule(pattern=raw, regex=re.compile(regex, re.DOTALL), negated=negated, dir_only=dir_only)


def _glob_to_regex(pattern: str) -> str:
    segments = pattern.split("/")
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
            continue
        out.append(_segment_to_regex(segment) + ("" if last else "/"))
    return "".join(out)


def _segment_to_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(segment):
            i += 1
            out.append(re.escape(segment[i]))
        elif ch == "[":
            end = segment.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = segment[i + 1:end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                escaped = "".join("\\" + c if c in "\\^[]" else c for c in body)
                out.append(f"(?!/)[{'^' if negate else ''}{escaped}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)
