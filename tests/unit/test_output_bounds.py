"""Container output costs the daemon bounded memory and disk: cut lines, capped collections and copies."""

from __future__ import annotations

import io
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import pytest

from fence.backend.docker_process import pump_lines
from fence.droplets import DropletStore
from fence.errors import ManifestInvalid, StagingFailed
from fence.lines import MAX_LINE, LineSplitter, bounded_lines, cut_marker
from fence.models import ProcessResult, ProcessSpec
from fence.relay import Backlog
from fence.staging import phases
from fence.staging.manifest import load_untrusted_yaml
from fence.layout import Workspace
from fence.tarstream import StreamTooLarge, save_owned_tar

MARK = cut_marker()


def _lines(*chunks: bytes, max_line: int = MAX_LINE) -> list[str]:
    return list(bounded_lines(iter(chunks), max_line=max_line))


# --- lines ---------------------------------------------------------------------------------------

def test_lines_are_joined_across_chunks_and_the_last_one_without_newline_is_kept() -> None:
    assert _lines(b"one\ntw", b"o\r\nthr", b"ee") == ["one", "two", "three"]


def test_a_character_split_between_chunks_decodes_whole() -> None:
    text = "héllo ✓\n".encode()
    assert _lines(text[:2], text[2:8], text[8:]) == ["héllo ✓"]


def test_an_over_long_line_is_cut_with_a_marker_and_the_next_line_is_whole() -> None:
    got = _lines(b"x" * 10, b"y" * 20, b"z" * 5 + b"\nnext\n", max_line=16)
    assert got == ["x" * 10 + "y" * 6 + cut_marker(16), "next"]


def test_a_line_exactly_at_the_limit_is_not_cut() -> None:
    assert _lines(b"a" * 16 + b"\n", max_line=16) == ["a" * 16]


def test_a_huge_chunk_holding_many_lines_and_a_long_one() -> None:
    chunk = b"short\n" + b"L" * (3 * MAX_LINE) + b"\nafter"
    assert _lines(chunk) == ["short", "L" * MAX_LINE + MARK, "after"]


def test_gigabytes_without_a_newline_cost_one_line_of_memory() -> None:
    zeros = bytes(1024 * 1024)
    got: list[str] = []
    splitter = LineSplitter(on_line=got.append, keep=50)
    tracemalloc.start()
    try:
        for _ in range(256):  # 256 MiB in engine-sized chunks
            splitter.feed(zeros)
        splitter.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(got) == 1 and got[0].endswith(MARK) and len(got[0]) == MAX_LINE + len(MARK)
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_the_reader_runs_only_a_bounded_way_ahead_of_a_slow_caller() -> None:
    produced = [0]

    def chunks() -> Iterator[bytes]:
        for _ in range(2000):
            produced[0] += 1
            yield b"line\n"

    ahead: list[int] = []
    taken = [0]

    def slow(line: str) -> None:
        taken[0] += 1
        ahead.append(produced[0] - taken[0])
        if taken[0] % 200 == 0:
            time.sleep(0.05)

    result = pump_lines(chunks(), on_line=slow, timeout=60)
    assert result.finished and taken[0] == 2000
    assert max(ahead) <= 64 + 2


def test_the_reader_thread_ends_when_the_caller_gives_up() -> None:
    stop = threading.Event()

    def endless() -> Iterator[bytes]:
        while not stop.is_set():
            yield b"more\n"

    before = sum(t.name == "fence-process-output" for t in threading.enumerate())
    result = pump_lines(endless(), on_line=None, timeout=0.3)
    assert not result.finished and result.tail == ("more",) * 50
    deadline = time.monotonic() + 5
    while sum(t.name == "fence-process-output" for t in threading.enumerate()) > before:
        assert time.monotonic() < deadline, "the reader thread kept reading after the deadline"
        time.sleep(0.05)
    stop.set()


# --- relaying to a slow client -------------------------------------------------------------------

def test_a_lossy_backlog_drops_and_counts_past_its_limit() -> None:
    backlog = Backlog(lossless=False, limit=100)
    admitted = [backlog.admit("x" * 9) for _ in range(20)]
    assert admitted.count(True) == 10 and backlog.dropped() == 10 and backlog.dropped() == 0
    backlog.taken("x" * 9)
    assert backlog.admit("y" * 9)


def test_a_lossless_backlog_waits_for_room_and_gives_up_when_the_client_goes() -> None:
    backlog = Backlog(lossless=True, limit=20)
    assert backlog.admit("a" * 9) and backlog.admit("b" * 9)
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(backlog.admit("c" * 9)))
    waiter.start()
    time.sleep(0.2)
    assert outcome == []  # held back: the client has not taken anything
    backlog.taken("a" * 9)
    waiter.join(timeout=5)
    assert outcome == [True]
    late = threading.Thread(target=lambda: outcome.append(backlog.admit("d" * 9)))
    late.start()
    backlog.close()
    late.join(timeout=5)
    assert outcome == [True, False]


# --- staging phases --------------------------------------------------------------------------------

class _Container:
    """Answers ``test -x`` with yes and runs every other process by printing ``lines``."""

    def __init__(self, lines: Callable[[], Iterator[str]]) -> None:
        self._lines = lines

    def run(self, spec: ProcessSpec, on_output: Callable[[str], None] | None = None) -> ProcessResult:
        if spec.argv[0] == "test":
            return ProcessResult(exit_code=0)
        for line in self._lines():
            if on_output is not None:
                on_output(line)
        return ProcessResult(exit_code=0, output=("done",))


def _runner(lines: Callable[[], Iterator[str]], max_log_mib: int | None = None,
            log: list[str] | None = None) -> phases.PhaseRunner:
    return phases.PhaseRunner(container=_Container(lines), workspace=Workspace(ctr_home=PurePosixPath("/home/s"),
                              uid=1000), env={}, deadline=time.monotonic() + 60, timeout_seconds=60,
                              on_line=(log if log is not None else []).append, max_log_mib=max_log_mib)


_PACK = phases.CopiedBuildpack(index=0, name="bomb", version="1", origin="test", ctr_dir=PurePosixPath("/b"))
ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                       + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
                       + ["config_vars:", "  BOMB: *i"])


def test_a_release_alias_bomb_is_refused_at_its_first_alias() -> None:
    assert len(ALIAS_BOMB) < 600
    tracemalloc.start()
    try:
        with pytest.raises(StagingFailed) as caught:
            phases.release(_runner(lambda: iter(ALIAS_BOMB.splitlines())), _PACK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "staging failed in release (buildpack bomb): output is not YAML fence accepts" in caught.value.message
    assert "are not allowed" in caught.value.message and "\n" not in caught.value.message
    assert peak < 2 * 1024 * 1024


def test_release_output_past_its_cap_stops_being_collected() -> None:
    kept: list[phases.Collected] = []
    original = phases.Collected

    def spy(**kwargs: int) -> phases.Collected:
        kept.append(original(**kwargs))
        return kept[-1]

    endless = lambda: iter(["config_vars:"] + [f"  K{i}: {'v' * 1000}" for i in range(10_000)])  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(phases, "Collected", spy)
        with pytest.raises(StagingFailed) as caught:
            phases.release(_runner(endless), _PACK)
    assert "output is larger than 256 KiB" in caught.value.message
    assert kept[0].overflowed and kept[0].size <= 256 * 1024


def test_release_yaml_still_gives_process_types_and_config_vars() -> None:
    text = "default_process_types:\n  web: run --port $PORT\nconfig_vars:\n  N: 5\n  EMPTY:\n"
    got = phases.release(_runner(lambda: iter(text.splitlines())), _PACK)
    assert got.process_types == {"web": "run --port $PORT"} and got.config_vars == {"N": "5", "EMPTY": ""}


def test_detect_keeps_only_what_its_first_line_needs() -> None:
    many = lambda: iter(["my-pack"] + ["noise" * 1000] * 1000)  # noqa: E731
    chosen = phases.detect(_runner(many), [_PACK])
    assert chosen.name == "my-pack"


def test_output_past_staging_max_log_fails_the_staging_as_it_arrives() -> None:
    printed = [0]

    def flood() -> Iterator[str]:
        for _ in range(100_000):
            printed[0] += 1
            yield "y" * 1000

    log: list[str] = []
    with pytest.raises(StagingFailed) as caught:
        phases.run_hooks(_runner(flood, max_log_mib=1, log=log), phase="pre-staging",
                         commands=("yes",), whose="app")
    assert caught.value.message == ("staging failed in pre-staging hook: the output passed staging/max_log "
                                    "(1 MiB); the staging was stopped")
    assert printed[0] < 1100 and sum(len(line) + 1 for line in log) <= 1024 * 1024 + 200


def test_a_failing_step_quotes_short_lines_in_its_one_line_error() -> None:
    result = ProcessResult(exit_code=3, output=("z" * 50_000,))
    assert len(phases._tail(result)) <= 200


def test_the_manifest_loader_serves_untrusted_yaml_with_a_size_cap() -> None:
    assert load_untrusted_yaml(b"a: [1, 2]\n", source_name="x", max_bytes=100) == {"a": [1, 2]}
    with pytest.raises(ManifestInvalid, match="larger than 10 bytes"):
        load_untrusted_yaml(b"a: [1, 2, 3, 4]\n", source_name="x", max_bytes=10)
    with pytest.raises(ManifestInvalid, match="anchors"):
        load_untrusted_yaml(b"a: &x 1\n", source_name="x", max_bytes=100)


# --- copies out of containers --------------------------------------------------------------------

def _tar_chunks(size: int) -> Iterator[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("app/big")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    data = buffer.getvalue()
    return (data[i:i + 65536] for i in range(0, len(data), 65536))


def test_a_droplet_over_its_cap_leaves_no_droplet_and_no_partial_file(tmp_path: Path) -> None:
    store = DropletStore(host_dir=tmp_path / "droplets")
    with pytest.raises(StreamTooLarge):
        store.write(app_tar=_tar_chunks(3 * 1024 * 1024), extra_files={}, uid=1000, max_bytes=1024 * 1024)
    assert list((tmp_path / "droplets").iterdir()) == []
    digest, _ = store.write(app_tar=_tar_chunks(1000), extra_files={}, uid=1000, max_bytes=1024 * 1024)
    assert store.digests() == [digest]


def test_a_cache_over_its_cap_keeps_the_last_good_cache(tmp_path: Path) -> None:
    host_cache = tmp_path / "caches" / "app.tar"
    save_owned_tar(_tar_chunks(1000), host_cache, uid=1000, max_bytes=1024 * 1024)
    good = host_cache.read_bytes()
    with pytest.raises(StreamTooLarge):
        save_owned_tar(_tar_chunks(2 * 1024 * 1024), host_cache, uid=1000, max_bytes=1024 * 1024)
    assert host_cache.read_bytes() == good
    assert sorted(p.name for p in host_cache.parent.iterdir()) == ["app.tar"]
