"""The steps of a staging inside its container: run with a deadline, hooks, detect, compile, release."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable, Mapping


from fence.backend.base import Container
from fence.errors import (
    ContainerGone,
    ContainerNotFound,
    ManifestInvalid,
    NoBuildpackDetected,
    ProcessTimeout,
    StagingFailed,
    StagingTimeout,
)
from fence.layout import Workspace
from fence.models import ProcessResult, ProcessSpec
from fence.staging.manifest import load_untrusted_yaml

INDENT = "       "
_MAX_RELEASE_BYTES = 256 * 1024
# detect's name is its first line; fence's own probes print a line or two per path.
_MAX_DETECT_BYTES = 4 * 1024
_MAX_PROBE_BYTES = 64 * 1024
# Characters of one output line quoted in a one-line error.
_MAX_QUOTED = 200


@dataclass
class Collected:
    """Output lines kept from one process, up to a size cap checked as each line arrives.

    Attributes:
        limit: the most bytes (of UTF-8 text, one newline per line) kept.
        lines: the lines kept, in order.
        size: their bytes.
        overflowed: a line did not fit: it and everything after it were dropped.
    """

    limit: int
    lines: list[str] = field(default_factory=list)
    size: int = 0
    overflowed: bool = False

    def add(self, line: str) -> None:
        """Keep a line, unless the cap was reached."""
        size = len(line.encode("utf-8", "surrogateescape")) + 1
        if self.overflowed or self.size + size > self.limit:
            self.overflowed = True
            return
        self.lines.append(line)
        self.size += size


class _LogFull(Exception):
    """Raised from the output callback when a staging's output passes its log cap."""


@dataclass(frozen=True)
class CopiedBuildpack:
    """A buildpack as copied into the staging container.

    Attributes:
        index: its position in the chain.
        name: its short name.
        version: git commit or content hash.
        origin: the spec it was resolved from.
        ctr_dir: its folder in the container.
    """

    index: int
    name: str
    version: str
    origin: str
    ctr_dir: PurePosixPath


class PhaseRunner:
    """Runs the processes of one staging: as the app user, in the app folder, before a deadline.

    Args:
        container: the staging container.
        workspace: its paths.
        env: environment of every process (app env plus staging variables).
        deadline: ``time.monotonic()`` value at which staging times out.
        timeout_seconds: the staging timeout, for messages.
        on_line: receives every output line.
        max_log_mib: the most container output (MiB) the staging log takes (``staging/max_log``);
            ``None``: no cap.
    """

    def __init__(self, *, container: Container, workspace: Workspace, env: Mapping[str, str],
                 deadline: float, timeout_seconds: int, on_line: Callable[[str], None],
                 max_log_mib: int | None = None) -> None:
        self.container = container
        self.workspace = workspace
        self.env = dict(env)
        self.deadline = deadline
        self.timeout_seconds = timeout_seconds
        self.on_line = on_line
        self.max_log_mib = max_log_mib
        self._log_left = None if max_log_mib is None else max_log_mib * 1024 * 1024
        self._known: dict[PurePosixPath, tuple[bool, bool]] = {}

    def run(self, argv: tuple[str, ...], *, phase: str, show: bool = True,
            cwd: PurePosixPath | None = None, collect: Collected | None = None) -> ProcessResult:
        """Run one process; its output goes to the log (indented) when ``show``, and lines
        are kept in ``collect`` (up to its cap) when given.

        Lines arrive cut at ``fence.lines.MAX_LINE`` bytes; the shown ones count against the
        log cap as they arrive, and the staging fails as soon as it is passed.

        Raises:
            StagingTimeout: the staging deadline passed (the container was killed).
            StagingFailed: the container went away (cancelled or killed), or its output passed
                staging/max_log.
        """
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise StagingTimeout(seconds=self.timeout_seconds, phase=phase)
        spec = ProcessSpec(argv=argv, env=self.env, user=f"{self.workspace.uid}:{self.workspace.uid}",
                           cwd=cwd or self.workspace.ctr_app, timeout=remaining)
        def output(line: str) -> None:
            if collect is not None:
                collect.add(line)
            if show:
                self._show(line)
        try:
            return self.container.run(spec, on_output=output)
        except _LogFull:
            raise StagingFailed(phase=phase, buildpack="", detail=f"the output passed staging/max_log "
                                f"({self.max_log_mib} MiB); the staging was stopped") from None
        except ProcessTimeout:
            raise StagingTimeout(seconds=self.timeout_seconds, phase=phase) from None
        except (ContainerGone, ContainerNotFound) as exc:
            raise StagingFailed(phase=phase, buildpack="", detail=f"the staging container went away ({exc.message})") from None

    def exists(self, ctr_path: PurePosixPath, *, executable: bool = False) -> bool:
        """Whether a file exists (and is executable) in the container: what ``probe`` found,
        else asked now."""
        known = self._known.get(ctr_path)
        if known is not None:
            return known[1] if executable else known[0]
        test = "-x" if executable else "-e"
        return self.run(("test", test, str(ctr_path)), phase="setup", show=False).exit_code == 0

    def probe(self, ctr_paths: list[PurePosixPath], *, fingerprint: PurePosixPath | None = None) -> str | None:
        """Learn in one process whether each path exists and is executable, so that later
        ``exists`` calls need no process each (every exec costs an engine round trip or three);
        in the same process, take the fingerprint of a folder (see ``fingerprint``).

        Only for paths the staging does not change afterwards: the stack's admin hooks and the
        copied buildpacks' ``bin/`` programs.

        Returns:
            The folder's fingerprint, or ``None`` when none was asked for or it could not be taken.
        """
        script = ('for p; do if [ -x "$p" ]; then echo x; elif [ -e "$p" ]; then echo e; else echo -; fi; done'
                  + (f"; {{ {_FINGERPRINT}; }} || true" if fingerprint is not None else ""))
        lines = Collected(limit=_MAX_PROBE_BYTES + 4 * len(ctr_paths))
        result = self.run(("bash", "-c", script, "fence-probe", *(str(p) for p in ctr_paths)),
                          phase="setup", show=False, collect=lines,
                          cwd=fingerprint if fingerprint is not None else None)
        answers = [line.strip() for line in lines.lines]
        found = _fingerprint_in(answers) if fingerprint is not None and not lines.overflowed else None
        if found is not None:
            answers = answers[:-1]
        if result.exit_code != 0 or lines.overflowed or len(answers) != len(ctr_paths):
            return None  # no bash, or odd output: ``exists`` asks one by one
        for path, answer in zip(ctr_paths, answers):
            self._known[path] = (answer in ("x", "e"), answer == "x")
        return found

    def fingerprint(self, ctr_dir: PurePosixPath) -> str | None:
        """A digest of a folder's listing: every entry's kind, mode, size, modification and
        change times, link target and path. Equal before and after means nothing in it was
        written, added, removed or renamed (reading leaves it alone).

        Returns:
            The digest, or ``None`` when it could not be taken (no ``find``, a vanished folder).
        """
        lines = Collected(limit=_MAX_PROBE_BYTES)
        result = self.run(("bash", "-c", _FINGERPRINT), phase="setup", show=False, collect=lines, cwd=ctr_dir)
        if result.exit_code != 0 or lines.overflowed:
            return None
        return _fingerprint_in([line.strip() for line in lines.lines])

    def _show(self, line: str) -> None:
        if self._log_left is not None:
            self._log_left -= len(line.encode("utf-8", "surrogateescape")) + len(INDENT) + 1
            if self._log_left < 0:
                raise _LogFull()
        self.on_line(INDENT + line)


# Run in the folder to fingerprint; the digest comes as the last line, ``fingerprint <sha256>``.
_FINGERPRINT = ("set -o pipefail; sum=$(find . -printf '%y %m %s %T@ %C@ %l %P\\n' | LC_ALL=C sort | sha256sum) "
                "&& echo \"fingerprint ${sum%% *}\"")


def _fingerprint_in(lines: list[str]) -> str | None:
    last = lines[-1] if lines else ""
    kind, _, digest = last.partition(" ")
    return digest if kind == "fingerprint" and len(digest) == 64 else None


def run_hooks(runner: PhaseRunner, *, phase: str, commands: tuple[str, ...], whose: str) -> None:
    """Run hook commands in order with bash, in the app folder, as the app user.

    A command starting with ``-`` may fail; any other failure aborts staging.

    Raises:
        StagingFailed: a hook exited non-zero.
        StagingTimeout: the deadline passed.
    """
    if not commands:
        return
    runner.on_line(f"-----> Running {whose} {phase} hooks")
    for command in commands:
        tolerant = command.startswith("-")
        text = command[1:].lstrip() if tolerant else command
        result = runner.run(("bash", "-c", text), phase=f"{phase} hook")
        if result.exit_code != 0:
            if tolerant:
                runner.on_line(f"{INDENT}(hook `{_short(text)}` exited {result.exit_code}; ignored: it starts with '-')")
                continue
            raise StagingFailed(phase=f"{whose} {phase} hook", buildpack="",
                                detail=f"`{_short(text)}` exited {result.exit_code}: {_tail(result)}")


def run_admin_hook(runner: PhaseRunner, *, phase: str) -> None:
    """Run the stack's admin hook of a phase, if the image has one.

    Raises:
        StagingFailed: the hook exited non-zero.
    """
    ctr_hook = runner.workspace.ctr_admin_hook(phase)
    if not runner.exists(ctr_hook, executable=True):
        return
    runner.on_line(f"-----> Running admin {phase} hook")
    result = runner.run((str(ctr_hook),), phase=f"admin {phase} hook")
    if result.exit_code != 0:
        raise StagingFailed(phase=f"admin {phase} hook", buildpack="",
                            detail=f"{ctr_hook} exited {result.exit_code}: {_tail(result)}")


def detect(runner: PhaseRunner, candidates: list[CopiedBuildpack]) -> CopiedBuildpack:
    """The first buildpack whose ``bin/detect`` exits 0, renamed to what it printed.

    Raises:
        NoBuildpackDetected: none accepted the app.
    """
    runner.on_line("-----> Detecting buildpack")
    for pack in candidates:
        # Only the first line is used (the name): the cap keeps a chatty detect from costing more.
        lines = Collected(limit=_MAX_DETECT_BYTES)
        result = runner.run((str(pack.ctr_dir / "bin" / "detect"), str(runner.workspace.ctr_app)),
                            phase="detect", show=False, collect=lines)
        if result.exit_code == 0:
            first = lines.lines[0].strip() if lines.lines else ""
            detected = (first or pack.name)[:64]
            runner.on_line(f"{INDENT}{detected} (buildpack {pack.name}) accepted the app")
            return CopiedBuildpack(index=pack.index, name=detected, version=pack.version,
                                   origin=pack.origin, ctr_dir=pack.ctr_dir)
    raise NoBuildpackDetected(tried=", ".join(p.name for p in candidates) or "none")


def compile_chain(runner: PhaseRunner, chain: list[CopiedBuildpack]) -> None:
    """Compile the app: ``bin/compile`` for one buildpack; ``supply`` then ``finalize`` for a chain.

    Raises:
        StagingFailed: a buildpack step exited non-zero (phase and buildpack named).
        StagingTimeout: the deadline passed.
    """
    ws = runner.workspace
    for position, pack in enumerate(chain):
        last = position == len(chain) - 1
        bin_dir = pack.ctr_dir / "bin"
        if not last:
            step, args = "supply", (str(ws.ctr_app), str(ws.ctr_cache), str(ws.ctr_deps), str(pack.index))
        elif len(chain) > 1 and runner.exists(bin_dir / "finalize", executable=True):
            step, args = "finalize", (str(ws.ctr_app), str(ws.ctr_cache), str(ws.ctr_deps), str(pack.index))
        elif runner.exists(bin_dir / "compile", executable=True):
            step, args = "compile", (str(ws.ctr_app), str(ws.ctr_cache), str(ws.ctr_env))
        elif runner.exists(bin_dir / "supply", executable=True):
            step, args = "supply", (str(ws.ctr_app), str(ws.ctr_cache), str(ws.ctr_deps), str(pack.index))
        else:
            raise StagingFailed(phase="compile", buildpack=f" (buildpack {pack.name})",
                                detail="it has no bin/compile, bin/finalize or bin/supply")
        runner.on_line(f"-----> Running {pack.name} {step}")
        result = runner.run((str(bin_dir / step), *args), phase=step)
        if result.exit_code != 0:
            raise StagingFailed(phase=step, buildpack=f" (buildpack {pack.name})",
                                detail=f"bin/{step} exited {result.exit_code}: {_tail(result)}")


@dataclass(frozen=True)
class Release:
    """What ``bin/release`` said.

    Attributes:
        process_types: ``default_process_types``.
        config_vars: ``config_vars``.
    """

    process_types: Mapping[str, str]
    config_vars: Mapping[str, str]


def release(runner: PhaseRunner, pack: CopiedBuildpack) -> Release:
    """Run ``bin/release`` (if the buildpack has one) and parse its YAML.

    Raises:
        StagingFailed: it exited non-zero or printed something that is not the expected YAML.
    """
    ctr_release = pack.ctr_dir / "bin" / "release"
    if not runner.exists(ctr_release, executable=True):
        return Release(process_types={}, config_vars={})
    runner.on_line(f"-----> Running {pack.name} release")
    lines = Collected(limit=_MAX_RELEASE_BYTES)
    result = runner.run((str(ctr_release), str(runner.workspace.ctr_app)), phase="release",
                        show=False, collect=lines)
    if result.exit_code != 0:
        raise StagingFailed(phase="release", buildpack=f" (buildpack {pack.name})",
                            detail=f"bin/release exited {result.exit_code}: {_tail(result)}")
    if lines.overflowed:
        raise StagingFailed(phase="release", buildpack=f" (buildpack {pack.name})",
                            detail=f"output is larger than {_MAX_RELEASE_BYTES // 1024} KiB")
    text = "\n".join(lines.lines).encode("utf-8", "surrogateescape")
    try:
        # The manifest's loader: an alias bomb is refused at its first alias, not expanded.
        data = load_untrusted_yaml(text, source_name="bin/release", max_bytes=_MAX_RELEASE_BYTES) if text.strip() else {}
    except ManifestInvalid as exc:
        raise StagingFailed(phase="release", buildpack=f" (buildpack {pack.name})",
                            detail=f"output is not YAML fence accepts ({exc.message})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise StagingFailed(phase="release", buildpack=f" (buildpack {pack.name})", detail="output is not a YAML mapping")
    return Release(process_types=_string_map(data.get("default_process_types"), pack, "default_process_types"),
                   config_vars=_string_map(data.get("config_vars"), pack, "config_vars"))


def _string_map(value: object, pack: CopiedBuildpack, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise StagingFailed(phase="release", buildpack=f" (buildpack {pack.name})", detail=f"{key} is not a mapping")
    return {k: "" if v is None else str(v) for k, v in value.items()}


def _tail(result: ProcessResult, lines: int = 8) -> str:
    tail = [_short(line, _MAX_QUOTED) for line in result.output if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(no output)"


def _short(command: str, limit: int = 80) -> str:
    return command if len(command) <= limit else command[:limit - 3] + "..."
