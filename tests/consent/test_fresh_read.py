"""Shared head reads stay linearisable: no caller is answered by a read that began before it."""

from __future__ import annotations

import threading
import time

import pytest

from services.consent.event_cache import FreshRead


class GatedStore:
    """A head that callers can move, and whose reads can be held open."""

    def __init__(self) -> None:
        self.head = 0
        self.reads = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)

    def read(self) -> int:
        self.reads += 1
        value = self.head  # the value as of the read's start
        self.entered.release()
        self.gate.wait(10)
        return value


def test_a_caller_arriving_during_a_read_waits_for_the_next_one():
    store = GatedStore()
    head = FreshRead(store.read)
    store.gate.clear()
    first: list[int] = []
    early = threading.Thread(target=lambda: first.append(head()))
    early.start()
    assert store.entered.acquire(timeout=5)  # read 1 has begun and saw head 0
    store.head = 7  # a withdrawal lands after read 1 began
    later: list[int] = []
    late = threading.Thread(target=lambda: later.append(head()))
    late.start()
    store.gate.set()
    early.join(5)
    late.join(5)
    assert first == [0]
    assert later == [7]  # not read 1's stale 0
    assert store.reads == 2


def test_concurrent_callers_share_reads():
    store = GatedStore()
    head = FreshRead(store.read)
    store.gate.clear()
    results: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        value = head()
        with lock:
            results.append(value)

    leader = threading.Thread(target=call)
    leader.start()
    assert store.entered.acquire(timeout=5)
    store.head = 3
    waiters = [threading.Thread(target=call) for _ in range(20)]
    for t in waiters:
        t.start()
    time.sleep(1.0)  # all twenty are waiting on read 1 by now
    store.gate.set()
    for t in [leader, *waiters]:
        t.join(5)
    assert sorted(results) == [0] + [3] * 20
    assert store.reads == 2  # the twenty waiters shared one read begun after they arrived


def test_a_failed_read_reaches_its_caller_and_the_next_caller_reads_again():
    calls = iter([RuntimeError("store down"), 5])

    def read() -> int:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    head = FreshRead(read)
    with pytest.raises(RuntimeError, match="store down"):
        head()
    assert head() == 5
