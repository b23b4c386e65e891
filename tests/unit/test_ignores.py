"""Ignore patterns: the same answers as the regex translation they replaced, bounded work on hostile shapes, bounds on count and length."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fence.errors import SourceRefused
from fence.models import SourceLimits
from fence.staging.ignores import IgnoreRules, manifest_patterns, read_ignore_file
from fence.staging.gitfetch import FetchPolicy
from fence.staging.sources import prepare_source

# These tests are about checking and packing, not about where a source may come from.
ANYWHERE = FetchPolicy(local_roots=(Path("/"),))


def _work_bound(path: str, pattern: str) -> int:
    """What one path against one pattern may cost: a small constant times len(path) * len(pattern)."""
    return 4 * (len(path) + 2) * (len(pattern) + 3)


def _one(pattern: str) -> IgnoreRules:
    return IgnoreRules(patterns=(pattern,))


def _cost(pattern: str, path: str, *, is_dir: bool = False) -> tuple[bool, int]:
    """Whether the path itself matches (no parent look-ups), and the steps it took."""
    rules = _one(pattern)
    [rule] = rules.rules
    work = [0]
    return rule.matches(tuple(path.split("/")), work), work[0]


# --- the same answers as before ----------------------------------------------------------------

def _old_regex(raw: str) -> tuple[re.Pattern[str], bool, bool] | None:
    """The regex translation fence used before (kept here as the oracle for ordinary patterns)."""
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
    out = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
            continue
        body, i = [], 0
        while i < len(segment):
            ch = segment[i]
            if ch == "*":
                while i + 1 < len(segment) and segment[i + 1] == "*":
                    i += 1
                body.append("[^/]*")
            elif ch == "?":
                body.append("[^/]")
            elif ch == "\\" and i + 1 < len(segment):
                i += 1
                body.append(re.escape(segment[i]))
            elif ch == "[" and (end := segment.find("]", i + 2)) >= 0:
                inner = segment[i + 1:end]
                negate = inner[:1] in ("!", "^")
                inner = inner[1:] if negate else inner
                escaped = "".join("\\" + c if c in "\\^[]" else c for c in inner)
                body.append(f"(?!/)[{'^' if negate else ''}{escaped}]")
                i = end
            else:
                body.append(re.escape(ch))
            i += 1
        out.append("".join(body) + ("" if last else "/"))
    regex = "".join(out)
    if not (anchored or pattern.startswith("**")):
        regex = f"(?:.*/)?{regex}"
    return re.compile(regex, re.DOTALL), negated, dir_only


def _old_ignored(patterns: list[str], parts: tuple[str, ...], *, is_dir: bool) -> bool:
    rules = [r for r in (_old_regex(p) for p in patterns) if r is not None]

    def match(path: str, is_dir: bool) -> bool:
        result = False
        for regex, negated, dir_only in rules:
            if dir_only and not is_dir:
                continue
            if negated != result:
                continue
            if regex.fullmatch(path):
                result = not negated
        return result

    if any(match("/".join(parts[:depth]), True) for depth in range(1, len(parts))):
        return True
    return match("/".join(parts), is_dir)


_PATTERN_ATOMS = ["a", "b", "ab", "*", "?", "/", "**", "**/", "/**", "[ab]", "[!a]", "[a-c]", "[^b]",
                  "\\*", "\\a", "-", ".", " ", "!", "\\!", "\\#", "[]a]", "[a-]"]
_NAMES = st.sampled_from(["a", "b", "ab", "ba", "aa", "c", "-", "*", "a.b", "[ab]", "!a", " a"])


def _compilable_by_the_old_code(pattern: str) -> bool:
    stripped = pattern.lstrip("!").lstrip("\\").rstrip("/ \t")
    if "/" not in stripped and stripped.lstrip("/").startswith("**") and stripped.lstrip("/") != "**":
        return False  # "**x" was root-only before, against the documented "any depth" (see below)
    try:
        _old_regex(pattern)
    except re.error:
        return False  # e.g. "[!]" or "[b-a]": an internal error before
    return True


@settings(max_examples=600, deadline=None)
@given(patterns=st.lists(st.lists(st.sampled_from(_PATTERN_ATOMS), min_size=1, max_size=6).map("".join),
                         min_size=1, max_size=3),
       parts=st.lists(_NAMES, min_size=1, max_size=5).map(tuple),
       is_dir=st.booleans())
def test_the_matcher_gives_the_answers_of_the_regex_translation(patterns: list[str], parts: tuple[str, ...],
                                                                 is_dir: bool) -> None:
    assume(all(_compilable_by_the_old_code(p) for p in patterns))
    expected = _old_ignored(patterns, parts, is_dir=is_dir)
    assert IgnoreRules(patterns=patterns).ignored(parts, is_dir=is_dir) is expected


@pytest.mark.parametrize(("pattern", "path", "ignored"), [
    ("**.log", "x/y/a.log", True),  # no "/": any depth, as documented (it was root-only)
    ("**.log", "a.log", True),
    ("[!]]", "]", False),  # "not ]" (an internal error before)
    ("[!]]", "a", True),
    ("[!]", "[!]", True),  # a class with nothing in it is literal text
    ("[b-a]x", "bx", False),  # a backwards range holds nothing (an internal error before)
    ("[b-ac]x", "cx", True),
    ("a/**", "a", False),
    ("a/**", "a/b/c", True),
    ("**", "a/b", True),
    ("a/**/**/**/b", "a/b", True),
    ("a/**/**/**/b", "a/x/y/z/w/b", True),
    ("a//b", "a/b", False),
])
def test_edge_cases(pattern: str, path: str, ignored: bool) -> None:
    assert _one(pattern).ignored(tuple(path.split("/")), is_dir=False) is ignored


# --- hostile shapes: the work stays within len(path) * len(pattern) ---------------------------

_DEEP = "/".join(["d"] * 45) + "/y"
_HOSTILE = [
    ("**/" * 14 + "x", _DEEP),
    ("**/" * 300 + "x", "/".join(["d"] * 500)),
    ("/".join(["**", "d"] * 40) + "/x", _DEEP),
    ("/".join(["*", "**"] * 40) + "/x", _DEEP),
    ("*a" * 40 + "b", "a" * 1000),
    ("*a*a*a*a*a*a*a*a*a*a*b", "a" * 4000),
    ("*" + "?" * 500 + "b", "a" * 1000),
    ("?" * 1000, "a" * 999),
    ("/".join(["?"] * 60), "/".join(["aa"] * 60)),
    ("[" + "".join(chr(c) for c in range(0x100, 0x1100)) + "]" * 3 + "*" + "[!a]" * 200, "a" * 1000),
    ("*[ab]*[ab]*[ab]*[ab]*[ab]*c", "ab" * 500),
    ("**/[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*0", "/".join(["abcdefghij" * 5] * 40)),
    ("/".join(["**", "d"] * 40) + "/y", _DEEP),  # matches: 40 of the 45 d's, then y
    ("*a" * 40 + "*b*c", "a" * 1000 + "c"),  # head and tail fit; the middle runs to the end
    ("*?a" * 100 + "*", "ba" * 500),  # matches
    ("**/" + "/".join(["*"] * 30) + "/**/y", _DEEP),  # matches
]


@pytest.mark.parametrize(("pattern", "path"), _HOSTILE, ids=[f"shape{i}" for i in range(len(_HOSTILE))])
def test_hostile_shapes_cost_at_most_path_times_pattern(pattern: str, path: str) -> None:
    _, work = _cost(pattern, path)
    assert work <= _work_bound(path, pattern), f"{work} steps"


def test_a_deep_tree_costs_what_its_paths_do() -> None:
    # Every directory of a 60-deep chain is looked up once (cached), each at most its own bound.
    patterns = ["**/" * 14 + "x", "*a*a*a*a*a*a*a*a*b", "/".join(["**", "d"] * 20) + "/z"]
    rules = IgnoreRules(patterns=patterns)
    parts = tuple(["d"] * 60 + ["leaf"])
    for depth in range(1, len(parts) + 1):
        assert rules.ignored(parts[:depth], is_dir=depth < len(parts)) is False
    paths = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    assert rules.work[0] <= sum(_work_bound(p, q) for p in paths for q in patterns)


def test_a_wide_tree_costs_what_its_paths_do() -> None:
    patterns = ["**/" * 14 + "x", "*" + "?" * 100 + "b", "[" + "x" * 3000 + "]*[!y]*z"]
    rules = IgnoreRules(patterns=patterns)
    names = [f"{'a' * 150}{n}" for n in range(5000)]
    for name in names:
        assert rules.ignored(("wide", name), is_dir=False) is False
    total = sum(_work_bound(f"wide/{n}", q) for n in names for q in patterns)
    assert rules.work[0] <= total


def test_hostile_shapes_finish_in_a_child_process_under_a_timeout() -> None:
    # The work count cannot see inside str.find and re; a child process under a hard timeout
    # can, even if a C call held the GIL.
    script = textwrap.dedent(f"""
        from fence.staging.ignores import IgnoreRules
        shapes = {_HOSTILE!r}
        for pattern, path in shapes:
            IgnoreRules(patterns=[pattern]).ignored(tuple(path.split("/")), is_dir=False)
        print("done", len(shapes))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("done"), proc.stderr[-2000:]


# --- bounds on count and length ----------------------------------------------------------------

def test_too_many_patterns_are_refused_naming_the_file_and_line() -> None:
    patterns = read_ignore_file(b"# header\n" + b"".join(b"p%d\n" % n for n in range(1001)), source=".cfignore")
    with pytest.raises(SourceRefused) as caught:
        IgnoreRules(patterns=patterns, max_patterns=1000)
    assert caught.value.message == ("source refused: '.cfignore' line 1002: is past the limit of 1000 "
                                    "ignore patterns (staging/max_ignore_patterns)")
    assert len(IgnoreRules(patterns=patterns[:1000], max_patterns=1000).rules) == 1000


def test_a_too_long_pattern_is_refused_naming_the_file_and_line() -> None:
    patterns = read_ignore_file(b"*.log\n\n" + b"a" * 1025 + b"\n", source=".stackatoignore")
    with pytest.raises(SourceRefused) as caught:
        IgnoreRules(patterns=patterns, max_length=1024)
    assert caught.value.message == ("source refused: '.stackatoignore' line 3: the ignore pattern is 1025 "
                                    "characters long (at most 1024: staging/max_ignore_pattern_length)")
    with pytest.raises(SourceRefused, match=r"'stackato.yml' ignores\[1\]: the ignore pattern is 2000"):
        IgnoreRules(patterns=manifest_patterns(["ok", "b" * 2000], source="stackato.yml"), max_length=1024)


def test_an_upload_past_the_bounds_is_refused_in_one_line(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("print(1)\n")
    (app / ".slugignore").write_text("".join(f"p{n}\n" for n in range(5)))
    (app / "stackato.yml").write_text("name: demo\nignores: [a, b]\n")
    limits = SourceLimits(max_ignore_patterns=6)
    with pytest.raises(SourceRefused) as caught:
        prepare_source(str(app), policy=ANYWHERE, host_workdir=tmp_path / "work", limits=limits, uid=1, gid=1)
    assert caught.value.message.startswith("source refused: 'stackato.yml' ignores[1]: is past the limit of 6")
    assert "\n" not in caught.value.message
    prepared = prepare_source(str(app), policy=ANYWHERE, host_workdir=tmp_path / "work2", limits=SourceLimits(), uid=1, gid=1)
    with tarfile.open(prepared.host_tar) as archive:
        assert "app/app.py" in archive.getnames()


def test_patterns_that_cost_more_than_their_budget_are_refused() -> None:
    # Within the count and length bounds, many patterns that each walk the whole depth can still
    # cost millions of steps per path: the work has a budget per source.
    patterns = ["/".join(["**", "d"] * 30) + f"/z{n}" for n in range(50)]
    rules = IgnoreRules(patterns=patterns, max_work=1_000_000, work_per_path=1_000)
    with pytest.raises(SourceRefused) as caught:
        for n in range(1000):
            rules.ignored(tuple(["d"] * 60 + [f"f{n}"]), is_dir=False)
    assert "ignore patterns took more than" in caught.value.message and "\n" not in caught.value.message
    assert rules.work[0] <= 1_000_000 + 1_000 * 1000 + 4 * 1024 * 1024
    everyday = IgnoreRules(patterns=["*.log", "node_modules/", "/build", "**/tmp", "docs/*.md", "src/**/gen/*.ts"])
    for n in range(20_000):
        everyday.ignored(("src", "lib", f"d{n % 50}", f"f{n}.py"), is_dir=False)
    assert everyday.work[0] < 20_000 * 200  # far inside the default 5,000 per path
