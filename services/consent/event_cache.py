"""The ledger reads behind consent checks, cached in process and kept exact by following the ledger.

Before it reads anything, a check asks the ledger head for its sequence number and hash (one
indexed lookup). Every event appended since this replica last asked — here or on any other
replica — names its subject ref and person id, and exactly those entries are dropped first. A
ledger that no longer chains to the hash last seen (replaced, say restored from a backup, and
grown as far or further) starts the cache afresh, as a shorter one does. A withdrawal
recorded anywhere is therefore seen by every later check (read-your-writes across replicas),
while a subject whose history did not change is answered from memory.

An entry read while the ledger moved on is not kept: its read may predate an event whose
invalidation already ran.

Concurrent checks share head reads (`FreshRead`): each waits for a read that began after it
arrived, so sharing never returns a head older than the check.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from services.consent.store import ConsentStore

Events = list[dict[str, Any]]
READ_CHUNK = 1000


class NotInMemory(Exception):
    """A read asked to be answered from memory only needs the store."""


class _Read:
    """One head read and the callers sharing it."""

    __slots__ = ("done", "error", "go", "joined", "number", "value")

    def __init__(self, number: int, *, queued: bool):
        self.number = number
        self.joined = 0  # callers sharing the read besides the one that runs it
        self.done = threading.Lock()  # held until the read has its outcome
        self.done.acquire()
        self.go: threading.Lock | None = None  # a queued read: held until the read before it ended
        if queued:
            self.go = threading.Lock()
            self.go.acquire()
        self.value: Any = None
        self.error: BaseException | None = None


class FreshRead:
    """Single-flight reads that stay linearisable: a caller gets the outcome of a read that started
    after the call did, never one already under way. Callers that arrive during a read wait for
    the next one and share it — its value or its error — so under load one store round trip
    serves many checks, and a failing store fails them all at once.

    At most two reads exist: the one under way and the queued one that callers arriving meanwhile
    join; the queued read begins when the one under way ends, so it began after every caller that
    joined it arrived. Each waiting caller blocks once, on its read's latch, and is woken once
    (a condition's notify_all woke every waiter at every read's end, most of them only to wait
    again, and each wake-up is a thread switch)."""

    def __init__(self, read: Callable[[], Any]):
        self._read = read
        self._lock = threading.Lock()
        self._numbered = 0  # reads created; they begin in the order of their numbers
        self._current: _Read | None = None  # the read under way
        self._queued: _Read | None = None  # the read that begins when the current one ends
        self.waiting = 0  # callers waiting for a read to begin or end

    def __call__(self) -> tuple[int, Any]:
        """(the read's number, its value); numbers grow with the time reads began."""
        with self._lock:
            if self._current is None:
                self._numbered += 1
                mine = self._current = _Read(self._numbered, queued=False)
                lead = True
            elif self._queued is not None:
                mine, lead = self._queued, False
                mine.joined += 1
                self.waiting += 1
            else:
                self._numbered += 1
                mine = self._queued = _Read(self._numbered, queued=True)
                lead = True
                self.waiting += 1
        if lead:
            if mine.go is not None:
                mine.go.acquire()  # the read before this one ended and made this one current
            self._run(mine)
        else:
            mine.done.acquire()
            mine.done.release()  # lets the next caller waiting for this read through
        if mine.error is not None:
            raise mine.error
        return mine.number, mine.value

    def _run(self, mine: _Read) -> None:
        try:
            mine.value = self._read()
        except BaseException as exc:  # handed to every caller that shares this read
            mine.error = exc
        with self._lock:
            following = self._current = self._queued
            self._queued = None
            # The callers this read releases, and the leader of the next, stop waiting.
            self.waiting -= mine.joined + (following is not None)
        mine.done.release()
        if following is not None:
            assert following.go is not None
            following.go.release()


@dataclass
class LedgerEventCache:
    store: ConsentStore
    max_entries: int = 200_000  # (subject or person, purpose) entries: a few hundred MB at most
    max_tail: int = 10_000  # more new events than this since the last look: start afresh
    _seq: int | None = None
    _hash: str = ""  # the ledger's hash at `_seq`
    _generation: int = 0
    _size: int = 0
    _refs: dict[str, dict[str, Events]] = field(default_factory=dict)  # ref -> purpose -> latest events
    _persons: dict[str, dict[str, Events]] = field(default_factory=dict)  # person id -> purpose -> events
    max_holders: int = 2_000_000  # more refs with events than this: look every ref up
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _head: FreshRead = field(init=False)
    _seq_read: int = 0  # the number of the head read `_seq` came from
    _reads: Iterator[int] = field(default_factory=lambda: itertools.count(1))  # head reads' numbers
    # Refs that hold any event, as of `_seq` or later; None: unknown, every ref is looked up.
    _holders: set[str] | None = None
    # The store could not list them (its state was not built yet, or being rebuilt): ask again,
    # by starting afresh, once it reads states — at most once per `holders_retry_seconds`.
    _holders_pending: bool = False
    _holders_retry_at: float = 0.0
    holders_retry_seconds: float = 1.0

    def __post_init__(self) -> None:
        self._head = FreshRead(self._numbered_tip)

    def _numbered_tip(self) -> tuple[int, tuple[int, str]]:
        """The head, with the number of its read. Numbers are drawn as reads begin, from one
        counter for threads (`sync`) and coroutines (`sync_async`) alike, so a larger number
        always means a read that began later."""
        number = next(self._reads)
        return number, self.store.ledger_tip()

    def sync(self) -> int:
        """Drops what events appended since the last look made stale; returns the generation that
        reads made after this call may be stored under."""
        _, (read, (head, head_hash)) = self._head()
        generation = self._follow(read, head, head_hash)
        assert generation is not None  # it may read the store
        return generation

    async def sync_async(self, on_thread: Callable[..., Awaitable[int | None]]) -> int:
        """`sync` for a coroutine: the head read is awaited on its event loop and, when nothing
        was appended since the last look, that is all — no thread. Following new events reads
        the store, and runs through `on_thread`."""
        read = next(self._reads)
        head, head_hash = await self.store.ledger_tip_async()
        generation = self._follow(read, head, head_hash, may_read=False)
        if generation is None:
            generation = await on_thread(self._follow, read, head, head_hash)
        assert generation is not None
        return generation

    def _follow(self, read: int, head: int, head_hash: str, *, may_read: bool = True) -> int | None:
        """Brings the cache up to the head read `read` saw. Returns the generation, or None when
        that needs the store and `may_read` is false."""
        while True:
            with self._lock:
                seen, seen_hash, seen_read, generation = self._seq, self._hash, self._seq_read, self._generation
                retry = (self._holders_pending and self.store.read_states
                         and time.monotonic() >= self._holders_retry_at)
                reset = head == seen and head_hash != seen_hash  # the ledger was replaced, and regrew as far
                if read < seen_read or (head == seen and not retry and not reset):
                    # Nothing new, or `_seq` came from a newer head read (which also began after
                    # this check arrived): the cache is at least as fresh as this check needs.
                    return generation
                if not may_read:
                    return None
                if retry:  # claimed: concurrent checks do not all list the holders
                    self._holders_retry_at = time.monotonic() + self.holders_retry_seconds
            if not (seen is None or retry or reset or head < seen or head - seen > self.max_tail):
                changed, linked = self.store.event_subjects(seen, head)
                if not seen_hash or linked == seen_hash:
                    break
                reset = True  # what follows `seen` no longer chains to what this cache saw there
            holders = self.store.subject_refs_with_events()  # read after the head: covers it
            with self._lock:
                if self._generation == generation:  # nobody moved on meanwhile (generations only grow)
                    self._clear()
                    self._seq, self._hash, self._seq_read = head, head_hash, read
                    self._holders = holders if holders is not None and len(holders) <= self.max_holders else None
                    self._holders_pending = holders is None
                    self._holders_retry_at = time.monotonic() + self.holders_retry_seconds
                    return self._generation
            # Another check moved on meanwhile: look again from where it left off.
        with self._lock:
            if self._holders is not None:
                self._holders.update(ref for ref, _person in changed)
                if len(self._holders) > self.max_holders:
                    self._holders = None
            for ref, person_id in changed:
                self._size -= len(self._refs.pop(ref, ()))
                if person_id:
                    self._size -= len(self._persons.pop(person_id, ()))
            if head > (self._seq or 0):
                self._seq, self._hash, self._seq_read = head, head_hash, read
            self._generation += 1
            return self._generation

    def latest_events(self, refs: list[str], purpose_id: str, at_ms: int, generation: int | None, *,
                      from_memory: bool = False) -> dict[str, Events]:
        """Per ref, what `ConsentStore.latest_events` returns for it; from memory where possible.
        A ref the ledger holds no event for may be left out. `generation` None reads the store
        without caching (checks of a past time). `from_memory`: raise `NotInMemory` rather than
        read the store."""
        lookup = refs
        if generation is not None:
            # A ref without any event needs no lookup: most refs of a scope (a person's other
            # identifiers) never had a decision recorded on them.
            with self._lock:
                if self._holders is not None:
                    lookup = [ref for ref in refs if ref in self._holders]
        return self._read(self._refs, lookup, purpose_id, generation,
                          lambda chunk: self.store.latest_events(chunk, purpose_id, at_ms), "subject_ref",
                          from_memory)

    def person_events(self, person_ids: list[str], purpose_id: str, at_ms: int, generation: int | None, *,
                      from_memory: bool = False) -> dict[str, Events]:
        """Per person id, the latest events recorded on it (as `latest_events` reduces them)."""
        return self._read(self._persons, person_ids, purpose_id, generation,
                          lambda chunk: self.store.latest_person_events(chunk, purpose_id, at_ms), "person_id",
                          from_memory)

    def _read(self, table: dict[str, dict[str, Events]], keys: list[str], purpose_id: str,
              generation: int | None, fetch: Callable[[list[str]], Events], key_field: str,
              from_memory: bool) -> dict[str, Events]:
        found: dict[str, Events] = {}
        missing = []
        if generation is not None:
            with self._lock:
                for key in keys:
                    hit = table.get(key, {}).get(purpose_id)
                    if hit is None:
                        missing.append(key)
                    else:
                        found[key] = hit
        else:
            missing = keys
        if missing and from_memory:
            raise NotInMemory()
        for start in range(0, len(missing), READ_CHUNK):
            chunk = missing[start:start + READ_CHUNK]
            read: dict[str, Events] = {key: [] for key in chunk}
            for event in fetch(chunk):
                read.setdefault(event.get(key_field) or "", []).append(event)
            found.update(read)
            if generation is not None:
                self._keep(table, read, purpose_id, generation)
        return found

    def _keep(self, table: dict[str, dict[str, Events]], read: dict[str, Events], purpose_id: str,
              generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            if self._size + len(read) > self.max_entries:
                self._clear()
                return
            for key, events in read.items():
                per_purpose = table.setdefault(key, {})
                self._size += purpose_id not in per_purpose
                per_purpose[purpose_id] = events

    def _clear(self) -> None:
        self._refs.clear()
        self._persons.clear()
        self._size = 0
        self._generation += 1
