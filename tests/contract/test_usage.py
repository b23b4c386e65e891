"""The backend's log records (time, stream) and usage counters, on FakeBackend and DockerBackend alike."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fence.backend.base import Container, ContainerBackend
from fence.backend.log_records import log_records
from fence.models import ContainerSpec

from .conftest import LIMITS

SpecMaker = Callable[..., ContainerSpec]


def _exited(container: Container) -> Container:
    deadline = time.monotonic() + 60
    while container.info().running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not container.info().running
    return container


def test_log_records_carry_the_time_and_the_stream(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    before = time.time()
    container = backend.create(make_spec(command=("echo", "hello")))
    container.start()
    _exited(container)
    [record] = log_records(container)
    assert (record.stream, record.line) == ("stdout", "hello")
    assert before - 5 <= record.time <= time.time() + 5  # the engine's clock is this host's


def test_since_and_tail_filter_the_records(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    container = backend.create(make_spec(command=("echo", "hello")))
    container.start()
    _exited(container)
    assert log_records(container, since=time.time() + 3600) == []
    assert log_records(container, tail=0) == []
    assert [r.line for r in log_records(container, tail=5, since=time.time() - 3600)] == ["hello"]


@pytest.mark.parametrize("backend", ["docker"], indirect=True)  # fake processes run no shell script
def test_stdout_and_stderr_are_told_apart_in_time_order(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    # The engine stamps each stream's line as it reads it, so lines of the two streams written
    # within a moment may swap on a loaded machine: these are 0.3 s apart.
    script = "for i in 1 2 3; do echo out$i; sleep 0.3; echo err$i >&2; sleep 0.3; done"
    container = backend.create(make_spec(command=("sh", "-c", script)))
    container.start()
    _exited(container)
    records = log_records(container)
    assert [(r.stream, r.line) for r in records] == [
        ("stdout", "out1"), ("stderr", "err1"), ("stdout", "out2"), ("stderr", "err2"),
        ("stdout", "out3"), ("stderr", "err3")]
    assert [r.line for r in log_records(container, tail=2)] == ["out3", "err3"]


def test_usage_of_running_containers_only(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    running = backend.create(make_spec())
    running.start()
    stopped = backend.create(make_spec(command=("true",)))
    found = backend.usage([running.id, stopped.id, "0" * 64])
    assert set(found) == {running.id}
    sample = found[running.id]
    assert sample.memory_limit_bytes == LIMITS.memory_bytes
    assert 0 <= sample.memory_bytes < LIMITS.memory_bytes and sample.cpu_seconds >= 0
    assert sample.net_rx_bytes >= 0 and sample.net_tx_bytes >= 0
    running.stop(grace=0)
    assert backend.usage([running.id]) == {}
