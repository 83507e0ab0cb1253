"""Hash chain, tamper detection, shredding, and signed receipts."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from services.consent.domain.ledger import (
    GENESIS,
    ConsentEvent,
    EventInvalid,
    canonical,
    genesis_hash,
    seal,
    verify_chain,
)
from services.consent.domain.receipts import ReceiptSigner, verify_receipt

NOTICE = hashlib.sha256(b"notice v3").hexdigest()


def draft(i: int, **changes) -> dict:
    return {"event_id": f"e{i}", "kind": "grant", "subject_ref": f"webshop:A-{i}", "person_id": None,
            "purpose_id": "newsletter-email", "purpose_version": 1, "channel": None, "recorded_at_ms": 1000 + i,
            "effective_at_ms": 1000 + i, "expires_at_ms": None, "source_system": "webshop",
            "collection_method": "web_form", "notice_version": "v3", "notice_sha256": NOTICE, "evidence_ref": None,
            "request_id": f"r{i}", "payload_ciphertext": f"ciphertext-{i}".encode(), **changes}


def chain(n: int = 5) -> list[ConsentEvent]:
    events, prev = [], genesis_hash()
    for i in range(1, n + 1):
        event = seal(draft(i), prev, i)
        events.append(event)
        prev = event.hash
    return events


def test_seal_links_events_and_hashes_the_canonical_form():
    events = chain(3)
    assert events[0].prev_hash == GENESIS == genesis_hash()
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[1].prev_hash == events[0].hash
    assert events[0].payload_sha256 == hashlib.sha256(b"Y2lwaGVydGV4dC0x").hexdigest()  # base64 of the ciphertext
    body = canonical(events[0])
    parsed = json.loads(body)
    assert "hash" not in parsed
    assert "payload" not in parsed
    assert parsed["prev_hash"] == GENESIS
    assert body == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert events[0].hash == hashlib.sha256(body).hexdigest()


def test_typed_and_record_views_share_one_chain_format():
    typed = chain(3)
    records = [e.to_record() for e in typed]
    assert records[0]["payload"] == "Y2lwaGVydGV4dC0x"
    assert records[0]["recorded_at"] == 1001
    assert dict(typed[0]) == records[0]
    assert [ConsentEvent.from_record(r) for r in records] == typed
    # A record-style draft (as the service builds it) seals to the same hash.
    record_draft = {k: v for k, v in records[0].items() if k not in ("seq", "prev_hash", "payload_sha256", "hash")}
    assert seal(record_draft, seq=1, prev_hash=GENESIS).hash == typed[0].hash
    assert verify_chain(records, head=(3, typed[-1].hash)).ok


def test_seal_rejects_invalid_drafts_with_field_names():
    with pytest.raises(EventInvalid) as err:
        seal(draft(1, kind="maybe", collection_method="fax", notice_sha256="x", expires_at_ms=5, purpose_version=0),
             GENESIS, 1)
    fields = {f for f, _ in err.value.violations}
    assert {"kind", "collection_method", "notice_sha256", "purpose_version", "expires_at_ms"} <= fields
    with pytest.raises(EventInvalid):
        seal(draft(1), "not-a-hash", 1)
    assert seal(draft(1, kind="erasure", payload_ciphertext=None), GENESIS, 1).kind == "erasure"


def test_intact_chain_verifies_to_its_head():
    events = chain()
    result = verify_chain(events, expected_head=events[-1].hash)
    assert (result.ok, result.checked, result.first_bad_seq, result.head_hash) == (True, 5, None, events[-1].hash)
    assert verify_chain([], expected_head=GENESIS).ok


def test_edit_is_detected():
    events = chain()
    events[2] = dataclasses.replace(events[2], kind="withdraw")
    result = verify_chain(events)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 3, 2)
    assert "hash" in result.reason


def test_deletion_is_detected():
    events = chain()
    del events[1]
    result = verify_chain(events)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_deletion_with_renumbering_is_detected_by_the_broken_link():
    events = chain()
    renumbered = [events[0], *(dataclasses.replace(e, seq=e.seq - 1) for e in events[2:])]
    result = verify_chain(renumbered)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_reordering_is_detected():
    events = chain()
    events[1], events[2] = events[2], events[1]
    result = verify_chain(events)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_truncation_at_the_end_is_detected_against_the_head():
    events = chain()
    assert verify_chain(events[:-1]).ok  # undetectable without the head
    result = verify_chain(events[:-1], expected_head=events[-1].hash)
    assert (result.ok, result.checked, result.first_bad_seq) == (False, 4, 5)
    result = verify_chain(events[:-1], head=(5, events[-1].hash))
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_rewritten_tail_still_fails_against_the_head():
    events = chain()
    forged = seal({**draft(5), "kind": "deny"}, events[3].hash, 5)
    result = verify_chain([*events[:4], forged], expected_head=events[-1].hash)
    assert not result.ok


def test_events_appended_while_verifying_pass_once_the_head_covers_them():
    events = chain()
    read_first = (3, events[2].hash)  # the head when verification began; two events came after
    assert verify_chain(events, head=read_first, current_head=lambda: (5, events[-1].hash)).ok
    assert verify_chain(events, head=read_first, current_head=lambda: (6, "appended after the reading")).ok
    assert not verify_chain(events, head=read_first).ok
    # Events beyond the head read again are recorded by no head: still a chain longer than its head.
    result = verify_chain(events, head=read_first, current_head=lambda: (4, events[3].hash))
    assert (result.ok, "head records 3" in result.reason) == (False, True)
    # The chain must pass through the first head exactly, and end in the current one's hash.
    assert not verify_chain(events, head=(3, events[1].hash), current_head=lambda: (5, events[-1].hash)).ok
    forged = seal({**draft(5), "kind": "deny"}, events[3].hash, 5)
    assert not verify_chain([*events[:4], forged], head=read_first, current_head=lambda: (5, events[-1].hash)).ok


def test_shredded_payload_keeps_the_chain_valid_but_an_altered_one_does_not():
    events = chain()
    shredded = [e.shredded() if e.subject_ref == "webshop:A-2" else e for e in events]
    assert shredded[1].payload_ciphertext is None
    assert shredded[1].payload_sha256 == events[1].payload_sha256
    assert verify_chain(shredded, expected_head=events[-1].hash).ok
    records = [{**e.to_record(), "payload": None} if e.seq == 2 else e.to_record() for e in events]
    assert verify_chain(records, head=(5, events[-1].hash)).ok
    altered = [dataclasses.replace(e, payload_ciphertext=b"other") if e.seq == 2 else e for e in events]
    result = verify_chain(altered)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 2, "payload does not match its digest")
    # Dropping the digest too (to hide an altered payload) breaks the hash.
    assert not verify_chain([dataclasses.replace(e, payload_sha256=None) if e.seq == 2 else e
                             for e in shredded]).ok


def test_verification_streams_a_generator():
    events = chain(50)
    result = verify_chain(e for e in events)
    assert (result.ok, result.checked) == (True, 50)


def test_receipts_verify_with_the_published_key_and_fail_when_altered(tmp_path):
    signer = ReceiptSigner.load_or_create(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    event = chain(1)[0]
    receipt = signer.sign(event)
    assert (receipt.event_id, receipt.seq, receipt.hash, receipt.signed_at_ms) == ("e1", 1, event.hash, 1001)
    assert receipt.key_id == hashlib.sha256(signer.public.public_bytes_raw()).hexdigest()[:16]
    pem = signer.public_key_pem()
    assert verify_receipt(receipt, pem)
    assert signer.sign(event) == receipt  # re-issuing gives the same receipt
    for altered in (dataclasses.replace(receipt, seq=2), dataclasses.replace(receipt, event_hash="00" * 32),
                    dataclasses.replace(receipt, signed_at_ms=1002), dataclasses.replace(receipt, signature="AAAA"),
                    dataclasses.replace(receipt, signature="not base64!")):
        assert not verify_receipt(altered, pem)
    other = ReceiptSigner.generate()
    assert not verify_receipt(receipt, other.public_key_pem())
    forged_key_id = dataclasses.replace(other.sign(event), key_id=signer.key_id)
    assert not verify_receipt(forged_key_id, pem)
    assert not verify_receipt(receipt, "not a key")
    reloaded = ReceiptSigner.load_or_create(tmp_path / "k.pem")
    assert reloaded.key_id == signer.key_id
    assert ReceiptSigner.from_private_bytes(signer.private_bytes()).key_id == signer.key_id
    assert ReceiptSigner.from_private_bytes((tmp_path / "k.pem").read_bytes()).key_id == signer.key_id
    explicit = signer.sign("e9", 9, "ab" * 32, 123)
    assert verify_receipt(explicit, pem)
    assert explicit.signature_b64 == explicit.signature
