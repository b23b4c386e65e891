"""The engine-free half of the Docker backend: following an exec'd process's output to its end."""

# Engine calls arrive from DockerBackend as plain callables, so this module never imports docker
# (what they raise passes through for DockerBackend to translate).

from __future__ import annotations

import queue
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from fence.backend.base import TAIL_LINES
from fence.errors import ContainerGone, EngineError, ProcessTimeout
from fence.lines import LineSplitter
from fence.models import ProcessResult, ProcessSpec

# Chunks read ahead of the caller: a caller slow to take lines holds the reader (and so the
# engine's stream) back instead of queueing the process's output in the daemon's memory.
_READ_AHEAD = 64

_END = object()
_EXIT_NOT_FOUND = 127


@dataclass(frozen=True)
class PumpResult:
    """What reading one output stream gave.

    Attributes:
        finished: whether the stream ended before the deadline (``False``: the caller gave up).
        tail: the last lines read (at most ``TAIL_LINES``).
    """

    finished: bool
    tail: tuple[str, ...]


@dataclass(frozen=True)
class ExecCalls:
    """The engine calls that following one started exec needs.

    Attributes:
        output: the exec's combined stdout and stderr, as raw chunks.
        close_output: closes that stream (safe to call twice).
        exit_code: the exec's exit status, ``None`` while the engine has none yet.
        container_running: whether the container still runs.
        kill_container: kills the whole container and waits until it is reported stopped.
    """

    output: Iterable[bytes]
    close_output: Callable[[], None]
    exit_code: Callable[[], int | None]
    container_running: Callable[[], bool]
    kill_container: Callable[[], None]


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def pump_lines(chunks: Iterable[bytes], *, on_line: Callable[[str], None] | None,
               timeout: float | None, keep: int = TAIL_LINES) -> PumpResult:
    """Read a byte stream to its end, or until ``timeout`` seconds pass, passing on each line.

    The stream is read on a daemon thread so that a silent process cannot hold the caller past
    its deadline; ``on_line`` is always called on the caller's thread. At most ``_READ_AHEAD``
    chunks wait between the two, and a line longer than ``fence.lines.MAX_LINE`` bytes is cut
    with a marker, so however much a process prints, and with or without newlines, memory stays
    bounded. When the deadline passes the reader thread is left blocked on the stream: the caller
    must end the process (which closes the stream) to let it finish.

    Args:
        chunks: the raw output (combined stdout and stderr).
        on_line: receives each line without its newline; ``None`` to only keep the tail.
        timeout: seconds to wait for the end of the stream; ``None`` waits as long as it takes.
        keep: how many of the last lines to return.

    Returns:
        Whether the stream ended in time, and the last lines.

    Raises:
        Exception: whatever reading ``chunks`` raised, re-raised on the caller's thread.
    """
    inbox: queue.Queue[object] = queue.Queue(maxsize=_READ_AHEAD)
    done = threading.Event()

    def hand_over(item: object) -> bool:
        # Wait for room, unless the caller has stopped taking (deadline, or on_line raised).
        while not done.is_set():
            try:
                inbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not hand_over(chunk):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            hand_over(_Failed(exc))
        else:
            hand_over(_END)

    threading.Thread(target=read, name="fence-process-output", daemon=True).start()
    lines = LineSplitter(on_line=on_line, keep=keep)
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = False
    try:
        while not finished:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                # Out of time: take what already arrived, but do not chase a process that keeps writing.
                backlog = [inbox.get_nowait() for _ in range(inbox.qsize())]
                finished = _take(backlog, lines)
                break
            try:
                item = inbox.get(timeout=wait)
            except queue.Empty:
                continue
            finished = _take([item], lines)
    finally:
        done.set()
    lines.finish()
    return PumpResult(finished=finished, tail=tuple(lines.tail))


def _take(items: list[object], lines: LineSplitter) -> bool:
    """Feed queued items to ``lines``; whether the end of the stream was among them."""
    for item in items:
        if item is _END:
            return True
        if isinstance(item, _Failed):
            raise item.error
        assert isinstance(item, bytes)
        lines.feed(item)
    return False


def follow_exec(calls: ExecCalls, *, spec: ProcessSpec, on_output: Callable[[str], None] | None,
                container: str) -> ProcessResult:
    """Read a started exec to its end (or its deadline) and collect how it ended.

    Args:
        calls: the engine calls bound to this exec and its container.
        spec: the process as it was asked for (argv and timeout are used).
        on_output: receives each output line.
        container: the container's short id, for messages.

    Returns:
        The exit code (127 when the program does not exist) and the last lines of output.

    Raises:
        ProcessTimeout: the deadline passed; the container was killed.
        ContainerGone: the container stopped while the process ran.
        EngineError: the engine never reported an exit status.
    """
    shown = _shown(spec.argv)
    try:
        pumped = pump_lines(calls.output, on_line=on_output, timeout=spec.timeout)
        if not pumped.finished:
            # The engine cannot kill one exec'd process tree, only the whole container.
            calls.kill_container()
            raise ProcessTimeout(what=f"`{shown}` in container {container}", seconds=spec.timeout)
    finally:
        calls.close_output()
    return _ended(calls, shown=shown, container=container, tail=pumped.tail)


def _shown(argv: tuple[str, ...]) -> str:
    """A process's command line for messages, cut at 80 characters."""
    shown = shlex.join(argv)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _ended(calls: ExecCalls, *, shown: str, container: str, tail: tuple[str, ...]) -> ProcessResult:
    """How an exec whose output has ended ended: its exit code, or why there is none."""
    exit_code = _poll_exit_code(calls.exit_code)
    if (exit_code is None or exit_code >= 128) and not _survived(calls.container_running):
        raise ContainerGone(container=container, detail=f"it stopped while `{shown}` ran")
    if exit_code is None:
        raise EngineError(action=f"running `{shown}`", detail="no exit status was reported")
    if exit_code == 126 and _exec_not_found(tail):
        # The engine says 126 with its own message; a shell says 127, and so does fence.
        exit_code = _EXIT_NOT_FOUND
    return ProcessResult(exit_code=exit_code, output=tail)


def _poll_exit_code(exit_code: Callable[[], int | None]) -> int | None:
    # The output stream can close a moment before the engine records the exit status.
    delay = 0.01
    for _ in range(40):
        code = exit_code()
        if code is not None:
            return code
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    return None


def _survived(container_running: Callable[[], bool]) -> bool:
    # A container being stopped reports its exec'd processes' deaths a moment before its own.
    for _ in range(10):
        if not container_running():
            return False
        time.sleep(0.1)
    return True


def _exec_not_found(tail: tuple[str, ...]) -> bool:
    return (len(tail) == 1 and tail[0].startswith("OCI runtime exec failed")
            and "executable file not found" in tail[0])


def follow_exec_to(calls: ExecCalls, *, spec: ProcessSpec, sink: Callable[[bytes], None],
                   container: str) -> ProcessResult:
    """Read a started exec whose ``output`` yields ``(stdout, stderr)`` chunk pairs (the SDK's
    demuxed stream) to its end or its deadline: stdout to ``sink``, stderr kept as the tail.

    Raises:
        ProcessTimeout: the deadline passed; the container was killed.
        ContainerGone: the container stopped while the process ran.
        EngineError: the engine never reported an exit status.
    """
    shown = _shown(spec.argv)
    timed_out = threading.Event()

    def on_deadline() -> None:
        timed_out.set()
        calls.kill_container()  # the engine cannot kill one exec'd process tree
        calls.close_output()

    timer = threading.Timer(spec.timeout, on_deadline) if spec.timeout is not None else None
    errors = bytearray()
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        for out, err in calls.output:
            if out:
                sink(out)
            if err:
                errors.extend(err)
                del errors[:max(0, len(errors) - 64 * 1024)]  # the tail is all that is kept
    except Exception:
        if not timed_out.is_set():
            raise
    finally:
        if timer is not None:
            timer.cancel()
        calls.close_output()
    if timed_out.is_set():
        raise ProcessTimeout(what=f"`{shown}` in container {container}", seconds=spec.timeout)
    tail = tuple(errors.decode(errors="replace").splitlines()[-TAIL_LINES:])
    return _ended(calls, shown=shown, container=container, tail=tail)
