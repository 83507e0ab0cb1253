"""The materialised consent state against a real store: it always equals what the ledger's history
reduces to, is written only together with an accepted append, and can be derived again."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

from services.common.graph.statements import Statement
from services.consent.domain import ledger
from services.consent.store import ConsentStore

ROOT = Path(__file__).resolve().parents[2]
NOTICE = hashlib.sha256(b"notice").hexdigest()
BASE = 1_800_000_000_000
REFS = ['account:quote " and \\ backslash', "account:Ümlaut ß 😀", "account:plain", "identifier:x\u001fy"]
PURPOSES = ["newsletter-email", "sms-marketing"]
KINDS = ["grant", "grant", "deny", "withdraw", "objection", "restriction", "restriction_lifted"]


def _events(count: int, seed: int, start_seq: int = 1, head: str = ledger.GENESIS) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for seq in range(start_seq, start_seq + count):
        kind = rng.choice(KINDS)
        draft = {"event_id": f"ev-{seq}", "kind": kind, "subject_ref": rng.choice(REFS),
                 "person_id": rng.choice([None, "p1", "p2"]), "purpose_id": rng.choice(PURPOSES),
                 "purpose_version": 1, "channel": rng.choice([None, "email", "sms"]), "recorded_at": BASE + seq,
                 # imports arrive out of order, and some times repeat
                 "effective_at": BASE + rng.randrange(0, 40) * 1000,
                 "expires_at": rng.choice([None, BASE + 10**9]) if kind == "grant" else None, "source_system": "test",
                 "collection_method": "import", "notice_version": "1", "notice_sha256": NOTICE,
                 "evidence_ref": None, "request_id": f"r-{seq}", "payload": None}
        event = ledger.seal(draft, seq=seq, prev_hash=head)
        head = event["hash"]
        events.append({k: v for k, v in event.items() if v is not None})
    return events


def _state_count(store: ConsentStore) -> int:
    rows = store.graph.run(Statement("test.count_states", "MATCH (s:ConsentState) RETURN count(s) AS n"), {})
    return int(rows[0]["n"])


def _agree(store: ConsentStore, at: int) -> None:
    """Read through the state and through the history, the store gives the same events."""
    for purpose in PURPOSES:
        store.read_states = True
        from_state = store.latest_events(REFS, purpose, at)
        store.read_states = False
        from_history = store.latest_events(REFS, purpose, at)
        assert sorted(from_state, key=lambda e: e["seq"]) == sorted(from_history, key=lambda e: e["seq"])
        assert from_history


def test_the_state_equals_the_reduced_history_for_single_and_batched_appends(store):
    events = _events(120, seed=3)
    for event in events[:40]:
        assert store.append_event(event, event["seq"] - 1, event["prev_hash"])
    assert store.append_batch(events[40:], 40, events[39]["hash"])  # many events per key in one batch
    assert store.states_built()
    for at in (BASE + 40_000, BASE + 20_500, BASE + 5_000, BASE - 1):
        _agree(store, at)


def test_a_refused_append_writes_no_state(store):
    events = _events(10, seed=4)
    assert store.append_batch(events[:5], 0, ledger.GENESIS)
    states = _state_count(store)
    assert states > 0
    assert not store.append_batch(events[5:], 4, "not-the-head-hash")
    assert not store.append_event(events[5], 3, events[2]["hash"])
    assert _state_count(store) == states
    assert store.ledger_seq() == 5


def test_the_state_is_derived_again_from_the_ledger(store):
    events = _events(60, seed=5)
    assert store.append_batch(events, 0, ledger.GENESIS)
    store.graph.run(Statement("test.alter_state", "MATCH (s:ConsentState) SET s.kind = 'grant', s.seq = 10000 "
                              "RETURN count(s) AS n", write=True), {})
    assert store.rebuild_states(fresh=True) == 60
    _agree(store, BASE + 40_000)

    # A ledger written before the state existed: no state, not marked built; replayed in place.
    store.graph.run(Statement("test.drop_state", "MATCH (s:ConsentState) DELETE s RETURN count(*) AS n",
                              write=True), {})
    store.graph.run(Statement("test.unmark_state", "MATCH (h:LedgerHead) REMOVE h.states_built RETURN h.seq AS s",
                              write=True), {})
    assert not store.states_built()
    seen = []
    assert store.rebuild_states(fresh=False, page=25, progress=lambda done, total: seen.append((done, total))) == 60
    assert seen == [(25, 60), (50, 60), (60, 60)]
    assert store.states_built()
    _agree(store, BASE + 40_000)


def test_rebuild_state_command_repairs_an_altered_state(store, graph_uri, graph_name, tmp_path):
    events = _events(30, seed=6)
    assert store.append_batch(events, 0, ledger.GENESIS)
    store.graph.run(Statement("test.alter_state", "MATCH (s:ConsentState) SET s.kind = 'grant', s.seq = 10000 "
                              "RETURN count(s) AS n", write=True), {})
    env = {**os.environ, "TESSERA_HOME": str(tmp_path / "home"), "TESSERA_GRAPH_URI": graph_uri,
           "TESSERA_GRAPH_DATABASE": graph_name}
    done = subprocess.run([sys.executable, "-m", "services.common.cli", "consent", "rebuild-state"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rebuilt from 30 ledger events" in done.stdout
    assert "30 / 30" in done.stderr
    _agree(store, BASE + 40_000)
