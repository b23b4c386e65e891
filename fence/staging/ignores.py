"""Decides which app files ``.stackatoignore``, ``.cfignore``, ``.slugignore`` and ``ignores:`` leave out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from fence.errors import SourceRefused

IGNORE_FILES = (".stackatoignore", ".cfignore", ".slugignore")
MAX_IGNORE_FILE_BYTES = 64 * 1024
# Matching steps one source may cost: a base plus an allowance per path looked up. Everyday
# pattern sets take tens of steps per path; within the count and length bounds a hostile set
# could still take millions per path, so past this budget the source is refused (the base is
# about 10 s of one core).
MAX_IGNORE_WORK = 20_000_000
IGNORE_WORK_PER_PATH = 5_000


@dataclass(frozen=True)
class IgnorePattern:
    """One pattern as the developer wrote it, with where it was written.

    Attributes:
        text: the pattern line.
        where: the file and line (or manifest key) it came from, for errors.
    """

    text: str
    where: str


class _Piece:
    """A run of fixed-width glob atoms (literals, ``?``, ``[...]``) between two ``*``.

    Literal runs use ``str`` methods; the others a regex with no quantifier, no group and no
    alternation, so matching at one position costs at most ``length`` steps and a search over
    ``n`` characters at most ``n * length``: there is nothing to backtrack into.
    """

    __slots__ = ("length", "literal", "regex")

    def __init__(self, atoms: Sequence[str | None], regex_atoms: Sequence[str]) -> None:
        self.length = len(regex_atoms)
        literal = None if None in atoms else "".join(atom for atom in atoms if atom is not None)
        self.literal = literal
        self.regex = None if literal is not None else re.compile("".join(regex_atoms), re.DOTALL)

    def at(self, text: str, pos: int) -> bool:
        if self.literal is not None:
            return text.startswith(self.literal, pos)
        return self.regex.match(text, pos) is not None  # type: ignore[union-attr]

    def find(self, text: str, start: int, end: int) -> int:
        if self.literal is not None:
            return text.find(self.literal, start, end)
        found = self.regex.search(text, start, end)  # type: ignore[union-attr]
        return found.start() if found is not None else -1


class _Glob:
    """One path component's pattern: ``*``, ``?``, ``[...]`` and literals, matched greedily.

    With ``*`` the only variable-width atom, the leftmost place of each piece between stars is
    always a right place, so a match never goes back: the work is bounded by
    ``len(name) * len(pattern)``.
    """

    __slots__ = ("exact", "literal", "head", "middle", "tail", "starred", "size")

    def __init__(self, segment: str) -> None:
        pieces: list[_Piece] = []
        atoms: list[str | None] = []  # a literal character, or None for ? and classes
        regex_atoms: list[str] = []
        starred = False
        i = 0
        while i < len(segment):
            ch = segment[i]
            if ch == "*":
                while i + 1 < len(segment) and segment[i + 1] == "*":
                    i += 1
                pieces.append(_Piece(atoms, regex_atoms))
                atoms, regex_atoms = [], []
                starred = True
            elif ch == "?":
                atoms.append(None)
                regex_atoms.append("[^/]")
            elif ch == "\\" and i + 1 < len(segment):
                i += 1
                atoms.append(segment[i])
                regex_atoms.append(re.escape(segment[i]))
            elif ch == "[" and (end := _class_end(segment, i)) > 0:
                atoms.append(None)
                regex_atoms.append(_class_regex(segment[i + 1:end]))
                i = end
            else:
                atoms.append(ch)
                regex_atoms.append(re.escape(ch))
            i += 1
        pieces.append(_Piece(atoms, regex_atoms))
        self.starred = starred
        self.size = len(segment)
        self.exact = None if starred else pieces[0]
        self.literal = None if starred else pieces[0].literal
        self.head = pieces[0] if starred and pieces[0].length else None
        self.tail = pieces[-1] if starred and pieces[-1].length else None
        self.middle = tuple(p for p in pieces[1:-1] if p.length) if starred else ()

    def match(self, name: str, work: list[int]) -> bool:
        """Whether ``name`` (one path component) matches; adds an upper bound of the steps taken to ``work[0]``."""
        if self.literal is not None:
            work[0] += len(self.literal) + 1
            return name == self.literal
        if self.exact is not None:
            work[0] += self.exact.length + 1
            return len(name) == self.exact.length and self.exact.at(name, 0)
        low, high = 0, len(name)
        work[0] += 1
        if self.head is not None:
            work[0] += self.head.length
            if not self.head.at(name, 0):
                return False
            low = self.head.length
        if self.tail is not None:
            work[0] += self.tail.length
            if high - self.tail.length < low or not self.tail.at(name, high - self.tail.length):
                return False
            high -= self.tail.length
        for piece in self.middle:
            work[0] += (high - low + 1) * piece.length
            found = piece.find(name, low, high)
            if found < 0:
                return False
            low = found + piece.length
        return True


# A ``**`` component that is not the last one: any number of components, none included.
_ANY_DEPTH = None
_Token = _Glob | None


@dataclass(frozen=True)
class IgnoreRule:
    """One compiled pattern.

    Attributes:
        pattern: the pattern as written.
        tokens: one glob per path component, ``None`` for "any number of components" (runs of
            ``**/`` collapsed into one); they must cover the whole path relative to the app root.
        negated: a ``!`` pattern, which brings back what earlier patterns left out.
        dir_only: a pattern ending in ``/``, which matches directories only.
    """

    pattern: str
    tokens: tuple[_Token, ...]
    negated: bool
    dir_only: bool
    _name_only: _Glob | None = field(init=False, repr=False, compare=False)
    _least: int = field(init=False, repr=False, compare=False)
    _fixed: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The shapes most patterns have, decided once rather than on every path.
        tokens = self.tokens
        name_only = tokens[1] if len(tokens) == 2 and tokens[0] is _ANY_DEPTH else None
        object.__setattr__(self, "_name_only", name_only)
        object.__setattr__(self, "_least", sum(token is not _ANY_DEPTH for token in tokens))
        object.__setattr__(self, "_fixed", _ANY_DEPTH not in tokens)

    def matches(self, parts: tuple[str, ...], work: list[int]) -> bool:
        """Whether the path matches the pattern (``dir_only`` aside).

        A set of positions in ``tokens`` is carried along the path's components, so the work is
        at most ``len(parts) * len(tokens)`` glob matches, whatever the pattern.

        Args:
            parts: the path's components.
            work: ``work[0]`` grows by an upper bound of the steps taken.
        """
        if self._name_only is not None:
            return self._name_only.match(parts[-1], work)  # the common unanchored "name" pattern
        tokens = self.tokens
        if len(parts) < self._least:
            return False
        if self._fixed:
            return len(parts) == len(tokens) and all(
                glob.match(part, work) for glob, part in zip(tokens, parts))  # type: ignore[union-attr]
        first = tokens[0]
        if first is not _ANY_DEPTH and not first.match(parts[0], work):
            return False  # most anchored patterns end here
        end = len(tokens)
        states = _closure(tokens, {0})
        for part in parts:
            following: set[int] = set()
            for state in states:
                work[0] += 1
                if state == end:
                    continue
                token = tokens[state]
                if token is _ANY_DEPTH:
                    following.add(state)
                elif token.match(part, work):
                    following.add(state + 1)
            if not following:
                return False
            states = _closure(tokens, following)
        return end in states


def _closure(tokens: tuple[_Token, ...], states: set[int]) -> set[int]:
    # "Any number of components" may also match none; runs are collapsed, so one step suffices.
    return states | {state + 1 for state in states if state < len(tokens) and tokens[state] is _ANY_DEPTH}


class IgnoreRules:
    """Gitignore-like rules, all anchored at the app root.

    Syntax: blank lines and ``#`` comments are skipped; ``*`` and ``?`` match within one path
    component, ``[abc]`` a character class; ``**/`` matches any number of directories and a
    trailing ``/**`` everything inside; a pattern with a ``/`` at its start or in its middle is
    anchored at the app root, one without matches a name at any depth; a trailing ``/`` matches
    directories only; ``!`` re-includes (the last matching pattern wins), though as in git
    nothing inside an ignored directory comes back; ``\\#`` and ``\\!`` escape.

    Matching works component by component and never backtracks: one path against one pattern
    costs at most ``len(path) * len(pattern)`` steps (``work`` counts them).
    """

    def __init__(self, *, patterns: Sequence[str | IgnorePattern] = (), max_patterns: int | None = None,
                 max_length: int | None = None, max_work: int = MAX_IGNORE_WORK,
                 work_per_path: int = IGNORE_WORK_PER_PATH) -> None:
        """Compile the patterns, refusing too many or too long ones.

        Args:
            patterns: in order; plain strings are named by their position in errors.
            max_patterns: most patterns allowed (``staging/max_ignore_patterns``), or no bound.
            max_length: most characters in one pattern (``staging/max_ignore_pattern_length``), or no bound.
            max_work: matching steps allowed beyond ``work_per_path`` for each path looked up
                (``ignored`` refuses the source past them).
            work_per_path: the steps each looked-up path adds to the budget.

        Raises:
            SourceRefused: past a bound, naming the file and line of the first pattern past it.
        """
        named = [p if isinstance(p, IgnorePattern) else IgnorePattern(text=p, where=f"pattern {n}")
                 for n, p in enumerate(patterns, 1)]
        if max_patterns is not None and len(named) > max_patterns:
            raise SourceRefused(entry=named[max_patterns].where,
                                why=f"is past the limit of {max_patterns} ignore patterns "
                                    "(staging/max_ignore_patterns)")
        for pattern in named:
            if max_length is not None and len(pattern.text) > max_length:
                raise SourceRefused(entry=pattern.where,
                                    why=f"the ignore pattern is {len(pattern.text)} characters long "
                                        f"(at most {max_length}: staging/max_ignore_pattern_length)")
        self._rules = tuple(rule for rule in (_compile(p.text) for p in named) if rule is not None)
        # What the per-path loop reads of each rule, unpacked once (that loop is the hot path).
        self._checks = tuple((rule.dir_only, rule.negated, rule._name_only, rule) for rule in self._rules)
        self._dirs: dict[tuple[str, ...], bool] = {}
        self.work = [0]  # steps taken so far by every match: [0] is the count
        self._budget = max_work
        self._work_per_path = work_per_path

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

        Raises:
            SourceRefused: the patterns have cost more than their budget on this source.
        """
        if not self._rules:
            return False
        self._budget += self._work_per_path
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            known = self._dirs.get(prefix)
            if known is None:
                known = self._dirs[prefix] = self._match(prefix, is_dir=True)
            if known:
                return True
        return self._match(parts, is_dir=is_dir)

    def _match(self, parts: tuple[str, ...], *, is_dir: bool) -> bool:
        result = False
        name, work = parts[-1], self.work
        for dir_only, negated, name_only, rule in self._checks:
            if dir_only and not is_dir:
                continue
            if negated != result:
                continue  # cannot change the outcome
            if name_only.match(name, work) if name_only is not None else rule.matches(parts, work):
                result = not negated
            if work[0] > self._budget:  # checked per rule: one rule on one path is at most ~4M steps
                raise SourceRefused(entry=repr("/".join(parts)[:200]),
                                    why=f"applying the {len(self._rules)} ignore patterns took more than "
                                        f"{self._budget} steps by this entry; use fewer or simpler patterns")
        return result


def read_ignore_file(text: bytes, *, source: str) -> tuple[IgnorePattern, ...]:
    """Split an ignore file into its patterns (comments and blank lines dropped), each with its line.

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
    return tuple(IgnorePattern(text=line, where=f"{source!r} line {number}")
                 for number, line in enumerate((raw.rstrip("\r") for raw in decoded.split("\n")), 1)
                 if line.strip() and not line.startswith("#"))


def parse_ignore_file(text: bytes, *, source: str) -> tuple[str, ...]:
    """The patterns of an ignore file, as ``read_ignore_file`` finds them, without their lines."""
    return tuple(pattern.text for pattern in read_ignore_file(text, source=source))


def manifest_patterns(patterns: Sequence[str], *, source: str) -> tuple[IgnorePattern, ...]:
    """The manifest's ``ignores:`` list, each named by its key (``stackato.yml ignores[2]``)."""
    return tuple(IgnorePattern(text=text, where=f"{source!r} ignores[{index}]")
                 for index, text in enumerate(patterns))


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
    segments = pattern.split("/")
    tokens: list[_Token] = [] if anchored else [_ANY_DEPTH]
    for index, segment in enumerate(segments):
        if segment != "**":
            tokens.append(_Glob(segment))
        elif index == len(segments) - 1:
            tokens.extend((_Glob("*"), _ANY_DEPTH))  # a trailing ** is one component or more
        else:
            tokens.append(_ANY_DEPTH)
    collapsed = [t for i, t in enumerate(tokens) if not (t is _ANY_DEPTH and i and tokens[i - 1] is _ANY_DEPTH)]
    return IgnoreRule(pattern=raw, tokens=tuple(collapsed), negated=negated, dir_only=dir_only)


def _class_end(segment: str, start: int) -> int:
    """Where the ``[...]`` class opened at ``start`` closes (``]`` right after ``[`` or ``[!`` is
    part of it); -1 when it does not close or holds nothing, and ``[`` is then literal."""
    end = segment.find("]", start + 2)
    if end < 0:
        return -1
    body = segment[start + 1:end]
    if body in ("!", "^"):
        end = segment.find("]", end + 1)  # "[!]]": not a "]"
    return end


def _class_regex(body: str) -> str:
    """A one-character regex class for a glob class body (``!``/``^`` negate, ``a-z`` ranges; a
    backwards range matches nothing, as nothing is between its ends)."""
    negate = body[:1] in ("!", "^")
    body = body[1:] if negate else body
    items: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            if body[i] <= body[i + 2]:
                items.append(f"{re.escape(body[i])}-{re.escape(body[i + 2])}")
            i += 3
        else:
            items.append(re.escape(body[i]))
            i += 1
    if not items:
        return "[^/]" if negate else "(?!)"
    return f"[{'^/' if negate else ''}{''.join(items)}]"
