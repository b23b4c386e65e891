"""The container event stream the reconciler wakes on (issue 18: an idle node passes seldom)."""

from __future__ import annotations

import threading
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend, ContainerEvent
from fence.models import ContainerSpec

SpecMaker = Callable[..., ContainerSpec]


def test_events_report_start_die_and_destroy_of_the_labelled_containers(backend: ContainerBackend,
                                                                        make_spec: SpecMaker, node_id: str) -> None:
    stream = backend.container_events({labels.NODE: node_id})
    got: list[ContainerEvent] = []
    three = threading.Event()

    def read() -> None:
        for event in stream:
            got.append(event)
            if len(got) >= 3:
                three.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        container = backend.create(make_spec(command=("sleep", "600")))
        container.start()
        container.stop(grace=0)
        container.destroy()
        assert three.wait(30), got
        assert [(e.container_id, e.action) for e in got[:3]] == [
            (container.id, "start"), (container.id, "die"), (container.id, "destroy")]
    finally:
        stream.close()
    reader.join(10)
    assert not reader.is_alive()  # close ends a read that waits


def test_events_of_other_labels_are_left_out(backend: ContainerBackend, make_spec: SpecMaker, node_id: str) -> None:
    others = backend.container_events({labels.NODE: "contract-nobody"})
    mine = backend.container_events({labels.NODE: node_id})
    got: list[ContainerEvent] = []
    reader = threading.Thread(target=lambda: got.extend(others), daemon=True)
    reader.start()
    container = backend.create(make_spec(command=("sleep", "600")))
    container.start()
    container.destroy()
    # Once this label's stream has the destroy, the engine has sent the other stream its events too.
    for event in mine:
        if event.action == "destroy":
            break
    others.close()
    mine.close()
    reader.join(10)
    assert got == [] and not reader.is_alive()


def test_the_engine_epoch_holds_while_a_stream_is_open_and_changes_when_one_is_opened_again(
        backend: ContainerBackend, node_id: str) -> None:
    """What only an engine restart changes (userns remapping) is kept while the epoch holds."""
    closed_before = backend.engine_epoch()
    first = backend.container_events({labels.NODE: node_id})
    try:
        held = backend.engine_epoch()
        assert held is not None and held != closed_before
        assert backend.engine_epoch() == held
    finally:
        first.close()
    assert backend.engine_epoch() is None  # no stream open: nothing says the engine stayed up
    again = backend.container_events({labels.NODE: node_id})
    try:
        assert backend.engine_epoch() not in (None, held)
    finally:
        again.close()
