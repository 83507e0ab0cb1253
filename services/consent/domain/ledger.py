"""The consent ledger's hash chain.

Each event is hashed over its canonical JSON together with the previous event's hash, so an
edited, removed or reordered event breaks every later link. The encrypted personal payload is
covered by its SHA-256 digest, not by the ciphertext itself: erasure can shred a person's payloads
(crypto-shredding plus deleting the ciphertext) without breaking the chain for everybody else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = hashlib.sha256(b"tessera-consent-ledger-v1").hexdigest()

# Fields covered by the hash, in the canonical form; `hash` itself and `payload` (covered by
# `payload_sha256`) are not.
CHAINED_FIELDS = (
    "seq", "event_id", "kind", "subject_ref", "person_id", "purpose_id", "purpose_version", "channel",
    "recorded_at", "effective_at", "expires_at", "source_system", "collection_method", "notice_version",
    "notice_sha256", "evidence_ref", "request_id", "payload_sha256", "prev_hash",
)


def canonical(event: Mapping[str, Any]) -> bytes:
    return json.dumps({k: event.get(k) for k in CHAINED_FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def payload_digest(payload: str | None) -> str | None:
    return hashlib.sha256(payload.encode("ascii")).hexdigest() if payload else None


def seal(draft: Mapping[str, Any], *, seq: int, prev_hash: str) -> dict[str, Any]:
    """The event as stored: sequence, link to the previous event, payload digest and hash."""
    event = dict(draft)
    event["seq"] = seq
    event["prev_hash"] = prev_hash
    event["payload_sha256"] = payload_digest(event.get("payload"))
    event["hash"] = event_hash(event)
    return event


@dataclass(frozen=True)
class Verification:
    valid: bool
    checked: int
    first_invalid_seq: int
    reason: str
    head_hash: str


def verify_chain(events: Iterable[Mapping[str, Any]], *, head: tuple[int, str] | None = None) -> Verification:
    """Streams through events in sequence order. Detects edits (hash mismatch), removals and
    reorderings (sequence gaps, broken links), shredded payloads that were altered rather than
    removed, and truncation at the end (the chain must end at the recorded head)."""
    prev_hash, expected_seq, checked = GENESIS, 1, 0
    for event in events:
        seq = int(event.get("seq") or 0)
        if seq != expected_seq:
            return Verification(False, checked, expected_seq, f"expected sequence {expected_seq}, found {seq}",
                                prev_hash)
        if event.get("prev_hash") != prev_hash:
            return Verification(False, checked, seq, "link to the previous event is broken", prev_hash)
        payload = event.get("payload")
        if payload is not None and payload_digest(payload) != event.get("payload_sha256"):
            return Verification(False, checked, seq, "payload does not match its digest", prev_hash)
        if event_hash(event) != event.get("hash"):
            return Verification(False, checked, seq, "event content does not match its hash", prev_hash)
        prev_hash, expected_seq, checked = str(event["hash"]), seq + 1, checked + 1
    if head is not None and (head[0] != checked or head[1] != prev_hash):
        return Verification(False, checked, checked + 1,
                            f"ledger ends at sequence {checked} but its head records {head[0]}", prev_hash)
    return Verification(True, checked, 0, "", prev_hash)
