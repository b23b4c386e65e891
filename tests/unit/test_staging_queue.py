"""StagingSlots: at most staging/concurrency at once; the others wait and say they are queued."""

from __future__ import annotations

import threading
import time

import pytest

from fence.errors import StagingFailed
from fence.reaper import ContainerReaper
from fence.staging.queue import StagingSlots


def test_second_staging_waits_and_is_told() -> None:
    slots = StagingSlots(limit=lambda: 1)
    told: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with slots.slot(on_line=lambda _: None, cancelled=lambda: False):
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=first)
    worker.start()
    assert entered.wait(5)
    got_in = threading.Event()

    def second() -> None:
        with slots.slot(on_line=told.append, cancelled=lambda: False):
            got_in.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.3)
    assert not got_in.is_set() and told and told[0].startswith("-----> Queued: 1 stagings running")
    release.set()
    assert got_in.wait(5)
    worker.join()
    waiter.join()
    assert slots.running == 0


def test_cancelled_while_queued() -> None:
    slots = StagingSlots(limit=lambda: 0)
    with pytest.raises(StagingFailed, match="cancelled while waiting"):
        with slots.slot(on_line=lambda _: None, cancelled=lambda: True):
            pass


def test_a_container_still_being_removed_keeps_its_place_until_it_is_gone() -> None:
    gone = threading.Event()

    class SlowToRemove:
        id = "c" * 64

        def destroy(self) -> None:
            gone.wait(10)

    reaper = ContainerReaper()
    slots = StagingSlots(limit=lambda: 1, draining=lambda: reaper.pending)
    reaper.on_removed(slots.notify)
    with slots.slot(on_line=lambda _: None, cancelled=lambda: False):
        pass
    reaper.remove_later(SlowToRemove(), "staging")  # type: ignore[arg-type]  # what a finished staging leaves
    told: list[str] = []
    got_in = threading.Event()

    def next_staging() -> None:
        with slots.slot(on_line=told.append, cancelled=lambda: False):
            got_in.set()

    waiter = threading.Thread(target=next_staging)
    waiter.start()
    time.sleep(0.3)
    assert not got_in.is_set() and told and told[0].startswith("-----> Queued")
    gone.set()
    assert got_in.wait(5)  # woken by the removal, not by its 0.5 s poll alone
    waiter.join()
    reaper.wait()
    assert reaper.pending == 0 and slots.running == 0
