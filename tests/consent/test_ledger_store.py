"""The packed form verification reads the ledger in gives exactly the chain entries of the stored
records, against a real store."""

from __future__ import annotations

import hashlib

import pytest

from services.consent.domain import ledger

NOTICE = hashlib.sha256(b"notice").hexdigest()
HOSTILE = ['quote " and \\\\ backslash', "Ümlaut ß – 😀 \u2028", "tab\tnew\nline\u0001", "", "%s %d {}", "[1, 2]", "7"]


def _sealed(n: int, **changes) -> list[dict]:
    events, head = [], ledger.GENESIS
    for seq in range(1, n + 1):
        draft = {"event_id": f"ev-{seq}", "kind": "grant", "subject_ref": f"account:{seq:040x}", "person_id": None,
                 "purpose_id": "newsletter-email", "purpose_version": seq, "channel": "email" if seq % 2 else None,
                 "recorded_at": 1_700_000_000_000 + seq, "effective_at": 1_700_000_000_000 + seq,
                 "expires_at": 1_800_000_000_000 if seq % 3 else None,
                 "source_system": "src " + HOSTILE[seq % len(HOSTILE)], "collection_method": "import",
                 "notice_version": "1", "notice_sha256": NOTICE,
                 "evidence_ref": HOSTILE[(seq + 1) % len(HOSTILE)] or None, "request_id": f"r-{seq}",
                 "payload": b"ciphertext" if seq % 2 else None, **changes}
        event = ledger.seal(draft, seq=seq, prev_hash=head)
        head = event.hash
        events.append({k: v for k, v in event.to_record().items() if v is not None})
    return events


def test_packed_entries_equal_the_record_entries(store):
    events = _sealed(len(HOSTILE) * 2)
    assert store.append_batch(events, 0, ledger.GENESIS)
    packed = store.packed_events_page(0, 100)
    entries = ledger.unpack_entries(packed)
    assert entries == [ledger.chain_entry(e) for e in store.events_page(0, 100)]
    assert ledger.verify_entries(entries, head=store.ledger_head(ledger.GENESIS)).ok


def test_a_value_holding_the_separator_is_not_packed(store):
    events = _sealed(3, evidence_ref=f"a{ledger.PACK_SEPARATOR}b")
    assert store.append_batch(events, 0, ledger.GENESIS)
    assert ledger.unpack_entries(store.packed_events_page(0, 100)) is None
    assert ledger.verify_chain(store.events_page(0, 100), head=store.ledger_head(ledger.GENESIS)).ok


def test_unpack_rejects_untagged_and_non_decimal_fields():
    sep, rest = ledger.PACK_SEPARATOR, ["n"] * (len(ledger.PACKED_FIELDS) - 1)
    assert ledger.unpack_entries([sep.join(["i5", *rest])]) is not None
    for bad in ("x", "i5.000000", "i05", "i+5", "i 5", "i5_0", "q"):
        assert ledger.unpack_entries([sep.join([bad, *rest])]) is None
    assert ledger.unpack_entries([sep.join(["n", "n", *rest])]) is None


def test_an_event_field_the_store_would_not_keep_is_refused_and_nothing_is_written(store):
    events = _sealed(2)
    with pytest.raises(ValueError, match="not stored"):
        store.append_batch([events[0], {**events[1], "extra": "x"}], 0, ledger.GENESIS)
    with pytest.raises(ValueError, match="not stored"):
        store.append_event({**events[0], "extra": "x"}, 0, ledger.GENESIS)
    assert store.events_page(0, 100) == []
    # Every field of a sealed event is kept, verbatim.
    assert store.append_batch(events, 0, ledger.GENESIS)
    assert store.events_page(0, 100) == events


def test_checks_read_states_packed_exactly_as_the_map_form(store):
    from services.consent.store import LATEST_STATES_FOR_SUBJECTS, LATEST_STATES_PACKED, unpack_states

    events = _sealed(len(HOSTILE) * 2, subject_ref="account:" + HOSTILE[0])
    assert store.append_batch(events, 0, ledger.GENESIS)
    refs = ["account:" + HOSTILE[0], "account:none"]
    by_map = store.graph.run(LATEST_STATES_FOR_SUBJECTS, {"refs": refs, "purpose_id": "newsletter-email"})
    packed = store.graph.run(LATEST_STATES_PACKED, {"refs": refs, "purpose_id": "newsletter-email",
                                                    "sep": ledger.PACK_SEPARATOR})
    assert unpack_states([r["packed"] for r in packed]) is not None  # this read takes the packed path
    store.read_states = True
    read = store.latest_events(refs, "newsletter-email", 1_900_000_000_000)
    key = lambda s: (s["kind"], s["channel"] or "")  # noqa: E731
    assert sorted(read, key=key) == sorted((r["event"] for r in by_map), key=key)
    assert {s["channel"] for s in read} == {"email", None}


def test_a_state_holding_the_separator_is_read_in_the_map_form(store):
    sealed = _sealed(1, subject_ref="account:x", event_id="ev" + ledger.PACK_SEPARATOR + "1")
    assert store.append_batch(sealed, 0, ledger.GENESIS)
    store.read_states = True
    read = store.latest_events(["account:x"], "newsletter-email", 1_900_000_000_000)
    assert [s["event_id"] for s in read] == ["ev" + ledger.PACK_SEPARATOR + "1"]
