"""The check path's event cache against a real store: what other writers append is seen by the
next sync, untouched subjects come from memory, and a read the ledger overtook is not kept."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import pytest

from services.common.graph.statements import Statement
from services.consent.domain import ledger, policy
from services.consent.domain.purposes import Channel, LawfulBasis, Purpose
from services.consent.event_cache import LedgerEventCache
from services.consent.store import ConsentStore

NOTICE = hashlib.sha256(b"notice").hexdigest()
NOW = 1_800_000_000_000
ANNA, BERT = "account:anna \"quoted\" \\ ä", "account:bert"
PURPOSE = Purpose("newsletter-email", 1, "Newsletter", "", LawfulBasis.CONSENT, frozenset(), frozenset({Channel.EMAIL}),
                  365)


@dataclass
class CountingStore(ConsentStore):
    """The real store, counting the subject reads the cache lets through."""

    reads: list[str] = field(default_factory=list)

    def latest_events(self, refs, purpose_id, at_ms):
        self.reads.extend(refs)
        return super().latest_events(refs, purpose_id, at_ms)


def append(store: ConsentStore, ref: str, kind: str, effective_at: int = NOW - 1000, person_id: str | None = None
           ) -> dict:
    seq, head = store.ledger_head(ledger.GENESIS)
    draft = {"event_id": f"ev-{seq + 1}", "kind": kind, "subject_ref": ref, "person_id": person_id,
             "purpose_id": PURPOSE.purpose_id, "purpose_version": 1, "channel": None, "recorded_at": NOW,
             "effective_at": effective_at, "expires_at": None, "source_system": "test",
             "collection_method": "import", "notice_version": "1", "notice_sha256": NOTICE, "evidence_ref": None,
             "request_id": f"r-{seq + 1}", "payload": None}
    event = ledger.seal(draft, seq=seq + 1, prev_hash=head)
    assert store.append_event({k: v for k, v in event.items() if v is not None}, seq, head)
    return event


def decide(events: list[dict], ref: str, at: int) -> policy.Decision:
    return policy.decide(PURPOSE, {1: PURPOSE}, events, {ref: "deterministic"}, target=ref, channel=None, at_ms=at)


@pytest.fixture
def store(store) -> CountingStore:
    """The consent tests' store (tests/consent/conftest.py), counting its subject reads."""
    return CountingStore(store.graph)


def test_what_another_writer_appends_is_seen_and_the_rest_comes_from_memory(store):
    cache = LedgerEventCache(store)
    other_replica = ConsentStore(store.graph)
    append(other_replica, ANNA, "grant")
    append(other_replica, BERT, "grant")
    generation = cache.sync()
    first = cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, generation)
    assert decide(first[ANNA], ANNA, NOW).allowed
    assert store.reads == [ANNA, BERT]

    append(other_replica, ANNA, "withdraw", effective_at=NOW - 500)
    generation = cache.sync()
    second = cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, generation)
    assert decide(second[ANNA], ANNA, NOW).reason == "withdrawn"
    assert second[BERT] == first[BERT]
    assert store.reads == [ANNA, BERT, ANNA]  # only the subject that changed was read again


def test_a_read_the_ledger_overtook_is_not_kept(store):
    cache = LedgerEventCache(store)
    append(store, ANNA, "grant")
    stale_generation = cache.sync()
    append(store, ANNA, "withdraw", effective_at=NOW - 500)
    cache.sync()  # another check notices the withdrawal first
    cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, stale_generation)
    current = cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, cache.sync())
    assert store.reads == [ANNA, ANNA]
    assert decide(current[ANNA], ANNA, NOW).reason == "withdrawn"


def test_a_long_gap_or_a_reset_ledger_starts_afresh(store, graph):
    cache = LedgerEventCache(store, max_tail=2)
    append(store, BERT, "grant")
    cache.latest_events([BERT], PURPOSE.purpose_id, NOW, cache.sync())
    for _ in range(3):
        append(store, ANNA, "grant")
    cache.latest_events([BERT], PURPOSE.purpose_id, NOW, cache.sync())
    assert store.reads == [BERT, BERT]  # three new events, more than max_tail: everything dropped

    graph.run(Statement("test.reset_ledger", "MATCH (n) WHERE n:ConsentEvent OR n:LedgerHead OR n:ConsentState "
                        "DELETE n RETURN count(*) AS deleted", write=True), {})
    store.ledger_head(ledger.GENESIS)
    append(store, BERT, "withdraw")
    reread = cache.latest_events([BERT], PURPOSE.purpose_id, NOW, cache.sync())[BERT]
    assert [e["kind"] for e in reread] == ["withdraw"]


def reset_ledger(graph) -> None:
    """A ledger replaced under the running cache (a restore from an older backup, say)."""
    graph.run(Statement("test.reset_ledger", "MATCH (n) WHERE n:ConsentEvent OR n:LedgerHead OR n:ConsentState "
                        "DELETE n RETURN count(*) AS deleted", write=True), {})


@pytest.mark.parametrize("regrown", [2, 3], ids=["to-the-same-length", "past-it"])
def test_a_ledger_reset_that_regrew_as_far_or_further_is_not_taken_for_the_one_followed(store, graph, regrown):
    cache = LedgerEventCache(store)
    append(store, ANNA, "grant")
    append(store, BERT, "grant")
    allowed = cache.latest_events([BERT], PURPOSE.purpose_id, NOW, cache.sync())[BERT]
    assert decide(allowed, BERT, NOW).allowed
    reset_ledger(graph)
    store.ledger_head(ledger.GENESIS)
    for _ in range(regrown):  # the new ledger holds no grant for Bert: his cached one must go
        append(store, ANNA, "deny")
    found = cache.latest_events([BERT], PURPOSE.purpose_id, NOW, cache.sync())[BERT]
    assert found == []
    assert decide(found, BERT, NOW).reason == "no_consent_recorded"


def test_person_events_follow_the_ledger_too(store):
    cache = LedgerEventCache(store)
    append(store, ANNA, "grant", person_id="p1")
    generation = cache.sync()
    assert [e["kind"] for e in cache.person_events(["p1"], PURPOSE.purpose_id, NOW, generation)["p1"]] == ["grant"]
    append(store, "account:new", "withdraw", effective_at=NOW - 500, person_id="p1")
    found = cache.person_events(["p1"], PURPOSE.purpose_id, NOW, cache.sync())["p1"]
    assert sorted(e["kind"] for e in found) == ["grant", "withdraw"]


def test_a_decision_that_takes_effect_later_is_read_now_and_decides_when_due(store):
    cache = LedgerEventCache(store)
    append(store, ANNA, "deny", effective_at=NOW - 1000)
    append(store, ANNA, "grant", effective_at=NOW + 1000)
    append(store, ANNA, "grant", effective_at=NOW + 2000)
    events = cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, cache.sync())[ANNA]
    assert len(events) == 3
    assert decide(events, ANNA, NOW).reason == "denied"
    later = cache.latest_events([ANNA], PURPOSE.purpose_id, NOW + 1500, cache.sync())[ANNA]
    assert store.reads == [ANNA]  # from memory, still complete
    assert decide(later, ANNA, NOW + 1500).allowed
    assert decide(later, ANNA, NOW + 1500).deciding_event_id == "ev-2"


def test_refs_without_any_event_are_not_looked_up_until_one_is_recorded(store):
    store.read_states = True
    cache = LedgerEventCache(store)
    other_replica = ConsentStore(store.graph)
    append(other_replica, ANNA, "grant")
    first = cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, cache.sync())
    assert first.get(BERT, []) == []  # a ref without events may be left out
    assert store.reads == [ANNA]  # Bert holds no event: nothing to look up

    append(other_replica, BERT, "grant")  # Bert's first event, on another replica
    second = cache.latest_events([BERT], PURPOSE.purpose_id, NOW, cache.sync())
    assert decide(second[BERT], BERT, NOW).allowed
    assert store.reads == [ANNA, BERT]


def test_starting_afresh_reloads_the_refs_that_hold_events(store):
    store.read_states = True
    cache = LedgerEventCache(store, max_tail=1)
    append(store, ANNA, "grant")
    cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, cache.sync())
    carl = "account:carl 'x' \\ ü"
    append(store, carl, "grant")
    append(store, carl, "withdraw", effective_at=NOW - 500)  # two new events, more than max_tail
    found = cache.latest_events([carl], PURPOSE.purpose_id, NOW, cache.sync())[carl]
    assert decide(found, carl, NOW).reason == "withdrawn"


def test_refs_holding_events_are_loaded_once_the_state_is_read_even_after_an_early_start(store):
    """A check served before the service had its state ready started the cache without the set
    of refs holding events; the set is asked for again once the store reads states."""
    cache = LedgerEventCache(store, holders_retry_seconds=0.0)
    append(store, ANNA, "grant")
    cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, cache.sync())
    assert store.reads == [ANNA, BERT]  # no set yet: every ref is looked up
    store.read_states = True  # the state is built (ConsentService.prepare_states)
    found = cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, cache.sync())
    assert store.reads == [ANNA, BERT, ANNA]  # started afresh with the set: Bert holds nothing
    assert decide(found[ANNA], ANNA, NOW).allowed
    assert found.get(BERT, []) == []
    cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, cache.sync())
    assert store.reads == [ANNA, BERT, ANNA]  # and then from memory: no second fresh start


def test_a_head_from_an_older_read_neither_resets_nor_rewinds_the_cache(store):
    """Concurrent checks get heads from successive shared reads; one that got an older read may
    sync after one with a newer read: it is served as fresh (that newer read began after it too)."""
    store.read_states = True
    cache = LedgerEventCache(store)
    anna = append(store, ANNA, "grant")
    bert = append(store, BERT, "grant")
    # (read number, (head seq, head hash)) as the shared reads hand them out
    scripted = iter([(1, (1, anna["hash"])), (3, (2, bert["hash"])), (2, (1, anna["hash"]))])
    cache._head = lambda: (0, next(scripted))  # FreshRead's own number is not the order used
    cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, cache.sync())
    newer = cache.sync()  # read 3 saw Bert's event
    older = cache.sync()  # read 2, which began before read 3, saw only Anna's
    assert older == newer  # no fresh start: nothing dropped, nothing rewound
    found = cache.latest_events([ANNA, BERT], PURPOSE.purpose_id, NOW, older)
    assert store.reads == [ANNA, BERT]  # Anna from memory, Bert looked up: his event is known
    assert decide(found[BERT], BERT, NOW).allowed


def test_a_coroutines_sync_needs_a_thread_only_when_events_were_appended(store):
    """`sync_async` awaits the head on the event loop; only following new events reads the
    store, on a thread. Coroutine and thread syncs share one order of head reads."""
    cache = LedgerEventCache(store)
    on_threads: list[str] = []

    async def on_thread(call, *args):
        on_threads.append(call.__name__)
        return await asyncio.to_thread(call, *args)

    async def scenario() -> None:
        append(store, ANNA, "grant")
        first = await cache.sync_async(on_thread)  # the first look starts afresh: the store is read
        assert decide(cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, first)[ANNA], ANNA, NOW).allowed
        assert on_threads == ["_follow"]
        assert await cache.sync_async(on_thread) == first
        assert on_threads == ["_follow"]  # nothing appended: the head look alone
        append(ConsentStore(store.graph), ANNA, "withdraw", effective_at=NOW - 500)
        after = await cache.sync_async(on_thread)
        assert after > first
        assert on_threads == ["_follow", "_follow"]
        found = cache.latest_events([ANNA], PURPOSE.purpose_id, NOW, after)[ANNA]
        assert decide(found, ANNA, NOW).reason == "withdrawn"
        assert await asyncio.to_thread(cache.sync) == after  # a thread's look finds nothing newer
        await store.graph.close_async()

    asyncio.run(scenario())
