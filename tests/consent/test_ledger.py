"""Hash chain, tamper detection, shredding, and signed receipts."""

from __future__ import annotations

import dataclasses

from services.consent.domain.ledger import GENESIS, seal, verify_chain
from services.consent.domain.receipts import ReceiptSigner, verify_receipt


def chain(n: int = 5) -> list[dict]:
    events, prev = [], GENESIS
    for i in range(1, n + 1):
        e = seal({"event_id": f"e{i}", "kind": "grant", "subject_ref": f"account:{i}", "purpose_id": "news",
                  "purpose_version": 1, "recorded_at": i, "effective_at": i, "request_id": f"r{i}",
                  "payload": f"cGF5bG9hZC{i}"}, seq=i, prev_hash=prev)
        events.append(e)
        prev = e["hash"]
    return events


def test_intact_chain_verifies_to_its_head():
    events = chain()
    result = verify_chain(events, head=(5, events[-1]["hash"]))
    assert (result.valid, result.checked, result.head_hash) == (True, 5, events[-1]["hash"])


def test_edit_is_detected():
    events = chain()
    events[2] = {**events[2], "kind": "withdraw"}
    result = verify_chain(events)
    assert (result.valid, result.first_invalid_seq) == (False, 3)


def test_deletion_is_detected():
    events = chain()
    del events[1]
    result = verify_chain(events)
    assert (result.valid, result.first_invalid_seq) == (False, 2)


def test_reordering_is_detected():
    events = chain()
    events[1], events[2] = events[2], events[1]
    assert not verify_chain(events).valid


def test_truncation_at_the_end_is_detected_against_the_head():
    events = chain()
    result = verify_chain(events[:-1], head=(5, events[-1]["hash"]))
    assert (result.valid, result.checked) == (False, 4)


def test_renumbered_and_rehashed_chain_still_fails_against_the_head():
    events = chain()
    forged = seal({k: v for k, v in events[4].items() if k not in ("hash",)} | {"kind": "deny"},
                  seq=5, prev_hash=events[3]["hash"])
    result = verify_chain([*events[:4], forged], head=(5, events[-1]["hash"]))
    assert not result.valid


def test_shredded_payload_keeps_the_chain_valid_but_an_altered_one_does_not():
    events = chain()
    shredded = [{**e, "payload": None} if e["subject_ref"] == "account:2" else e for e in events]
    assert verify_chain(shredded, head=(5, events[-1]["hash"])).valid
    altered = [{**e, "payload": "b3RoZXI="} if e["seq"] == 2 else e for e in events]
    assert not verify_chain(altered).valid


def test_receipts_verify_with_the_published_key_and_fail_when_altered(tmp_path):
    signer = ReceiptSigner.load_or_create(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    receipt = signer.sign("e1", 1, "ab" * 32, 123)
    pem = signer.public_key_pem()
    assert verify_receipt(receipt, pem)
    assert not verify_receipt(dataclasses.replace(receipt, seq=2), pem)
    other = ReceiptSigner.load_or_create(tmp_path / "other.pem")
    assert not verify_receipt(receipt, other.public_key_pem())
    assert ReceiptSigner.load_or_create(tmp_path / "k.pem").key_id == signer.key_id
