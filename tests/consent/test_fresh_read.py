"""Shared head reads stay linearisable: no caller is answered by a read that began before it."""

from __future__ import annotations

import threading
import time

import pytest

from services.consent.event_cache import FreshRead


class GatedStore:
    """A head that callers can move, and whose reads can be held open (or made to fail)."""

    def __init__(self) -> None:
        self.head = 0
        self.reads = 0
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)

    def read(self) -> int:
        self.reads += 1
        value = self.head  # the value as of the read's start
        self.entered.release()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("store down")
        return value


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def leader_then_waiters(store: GatedStore, head: FreshRead, call, *, waiters: int, while_leader_reads) -> None:
    """A leader's read held open; meanwhile `while_leader_reads` runs and `waiters` callers arrive
    and wait; then every read is let through and all callers finish."""
    leader = threading.Thread(target=call)
    leader.start()
    assert store.entered.acquire(timeout=5)
    while_leader_reads()
    threads = [threading.Thread(target=call) for _ in range(waiters)]
    for t in threads:
        t.start()
    wait_until(lambda: head.waiting == waiters)
    store.gate.set()
    for t in [leader, *threads]:
        t.join(5)


def test_a_caller_arriving_during_a_read_waits_for_the_next_one():
    store = GatedStore()
    head = FreshRead(store.read)
    store.gate.clear()
    first: list[tuple[int, int]] = []
    early = threading.Thread(target=lambda: first.append(head()))
    early.start()
    assert store.entered.acquire(timeout=5)  # read 1 has begun and saw head 0
    store.head = 7  # a withdrawal lands after read 1 began
    later: list[tuple[int, int]] = []
    late = threading.Thread(target=lambda: later.append(head()))
    late.start()
    wait_until(lambda: head.waiting == 1)  # the late caller waits while read 1 is under way
    store.gate.set()
    early.join(5)
    late.join(5)
    assert first == [(1, 0)]
    assert later == [(2, 7)]  # read 2's value, not read 1's stale 0
    assert store.reads == 2


def test_concurrent_callers_share_reads():
    store = GatedStore()
    head = FreshRead(store.read)
    store.gate.clear()
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def call() -> None:
        value = head()
        with lock:
            results.append(value)

    def move_head() -> None:
        store.head = 3

    leader_then_waiters(store, head, call, waiters=20, while_leader_reads=move_head)
    assert sorted(results) == [(1, 0)] + [(2, 3)] * 20
    assert store.reads == 2  # the twenty waiters shared one read begun after they arrived


def test_callers_sharing_a_failed_read_all_get_its_error_at_once():
    store = GatedStore()
    head = FreshRead(store.read)
    store.gate.clear()
    errors: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            head()
        except RuntimeError as exc:
            with lock:
                errors.append(str(exc))

    def fail_reads() -> None:
        store.fail = True  # the leader's read, and the next, fail

    leader_then_waiters(store, head, call, waiters=5, while_leader_reads=fail_reads)
    assert errors == ["store down"] * 6
    assert store.reads == 2  # the five waiters shared one failing read, none retried it alone
    store.fail = False
    assert head() == (3, 0)  # the next caller reads again


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
    assert head() == (2, 5)


def test_a_caller_arriving_while_the_queued_read_runs_waits_for_a_third_one():
    """Read 1 under way; A and B queue for read 2; while read 2 runs, C arrives and must not share
    it (it began before C arrived): C gets read 3, which sees what landed during read 2."""
    store = GatedStore()
    head = FreshRead(store.read)
    store.gate.clear()
    out: dict[str, tuple[int, int]] = {}

    def call(name: str) -> threading.Thread:
        t = threading.Thread(target=lambda: out.__setitem__(name, head()))
        t.start()
        return t

    first = call("first")
    assert store.entered.acquire(timeout=5)  # read 1 begun, head 0
    store.head = 1
    queued = [call("a"), call("b")]
    wait_until(lambda: head.waiting == 2)
    store.gate.set()
    store.gate.clear()  # read 2 is held open once it has begun
    first.join(5)
    assert store.entered.acquire(timeout=5)  # read 2 begun (head 1)
    store.head = 2
    late = call("c")
    wait_until(lambda: head.waiting == 2)  # one of a, b runs read 2; the other waits for it, c for read 3
    store.gate.set()
    for t in [*queued, late]:
        t.join(5)
    assert out == {"first": (1, 0), "a": (2, 1), "b": (2, 1), "c": (3, 2)}
    assert store.reads == 3
    assert head.waiting == 0


def test_under_contention_every_caller_sees_a_head_at_least_as_new_as_at_its_arrival():
    """Many threads; the head moves all the time. Each caller notes the head before calling (what
    a write that completed before the check arrived left behind) and must get at least that."""
    lock = threading.Lock()
    state = {"head": 0, "reads": 0}

    def read() -> int:
        with lock:
            state["reads"] += 1
            value = state["head"]
        time.sleep(0.0005)  # a round trip, during which others arrive
        return value

    head = FreshRead(read)
    violations: list[tuple[int, int]] = []
    numbers: list[list[int]] = []

    def worker() -> None:
        seen: list[int] = []
        for _ in range(200):
            with lock:
                state["head"] += 1  # a write lands, then this check arrives
                floor = state["head"]
            number, value = head()
            if value < floor:
                violations.append((floor, value))
            seen.append(number)
        numbers.append(seen)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not violations
    assert all(seen == sorted(seen) for seen in numbers)  # one caller's reads only move forward
    assert len(numbers) == 12
    assert state["reads"] < 12 * 200  # reads were shared
    assert head.waiting == 0
