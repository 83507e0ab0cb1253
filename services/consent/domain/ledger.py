"""The consent ledger's hash chain.

Each event is hashed over its canonical JSON together with the previous event's hash, so an
edited, removed or reordered event breaks every later link. The encrypted personal payload is
covered by its SHA-256 digest (`payload_sha256`), not by the ciphertext itself: erasure can shred a
person's payloads (crypto-shredding plus deleting the ciphertext) without breaking the chain for
everybody else.

Two views of one chain format:

* the *record* (a plain mapping, what the store persists): ``recorded_at``/``effective_at``/
  ``expires_at`` in epoch ms and ``payload`` as base64 text;
* `ConsentEvent`, the typed view (``*_ms`` fields, ``payload_ciphertext`` as bytes). It is also a
  read-only mapping over its record, so code written against records accepts it unchanged.

Canonical form: JSON with sorted keys, no whitespace, UTF-8, over `CHAINED_FIELDS` — every field
except ``hash`` and the payload itself (covered by ``payload_sha256``, the SHA-256 of the payload's
base64 text). ``hash = sha256(canonical)``; ``prev_hash`` is one of the canonical fields, which
binds each event to its predecessor exactly as ``sha256(prev_hash || canonical)`` would. (The
format predates the typed view; keeping it keeps ledgers already stored verifiable.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from json.encoder import encode_basestring
from typing import Any

GENESIS = hashlib.sha256(b"tessera-consent-ledger-v1").hexdigest()

KINDS = frozenset({"grant", "deny", "withdraw", "objection", "restriction", "restriction_lifted", "erasure"})
COLLECTION_METHODS = frozenset({"web_form", "app", "till", "call_centre", "import", "gpc"})
HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Fields covered by the hash, in the canonical form; `hash` itself and `payload` (covered by
# `payload_sha256`) are not.
CHAINED_FIELDS = (
    "seq", "event_id", "kind", "subject_ref", "person_id", "purpose_id", "purpose_version", "channel",
    "recorded_at", "effective_at", "expires_at", "source_system", "collection_method", "notice_version",
    "notice_sha256", "evidence_ref", "request_id", "payload_sha256", "prev_hash",
)
# Typed field name -> record field name, where they differ.
_RECORD_NAME = {"recorded_at_ms": "recorded_at", "effective_at_ms": "effective_at",
                "expires_at_ms": "expires_at", "payload_ciphertext": "payload"}
_TYPED_NAME = {v: k for k, v in _RECORD_NAME.items()}


# The packed form of an event, as the store reads the ledger for verification (one string per event
# instead of a map: the FalkorDB client parses every returned value in Python, so fewer values is
# what makes reading fast). `PACKED_FIELDS` in this order, joined by `PACK_SEPARATOR`; each field
# tagged "s" + text, "i" + decimal integer, "n" for null, "x" for any other type. A field holding
# the separator or an "x" makes the event unpackable: the caller then verifies that stretch of the
# ledger from full records, so the packed form never decides anything the record form would not.
PACKED_FIELDS = (*sorted(CHAINED_FIELDS), "hash", "payload")
INTEGER_FIELDS = frozenset({"seq", "purpose_version", "recorded_at", "effective_at", "expires_at"})
PACK_SEPARATOR = "\x1f"
_CANONICAL_TEMPLATE = "{" + ",".join(f'"{k}":%s' for k in sorted(CHAINED_FIELDS)) + "}"
_AT = {name: i for i, name in enumerate(PACKED_FIELDS)}
_SEQ, _PREV, _HASH, _PAYLOAD, _DIGEST = (_AT[k] for k in ("seq", "prev_hash", "hash", "payload", "payload_sha256"))
_BODY = len(CHAINED_FIELDS)


def genesis_hash() -> str:
    """The `prev_hash` of the first event (sequence 1)."""
    return GENESIS


def canonical(event: Mapping[str, Any]) -> bytes:
    return json.dumps({k: event.get(k) for k in CHAINED_FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def payload_digest(payload: str | bytes | None) -> str | None:
    """SHA-256 of the payload's base64 text (bytes are base64-encoded first); None without payload."""
    if not payload:
        return None
    text = base64.b64encode(payload) if isinstance(payload, bytes) else payload.encode("ascii")
    return hashlib.sha256(text).hexdigest()


class EventInvalid(ValueError):
    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))


@dataclass(frozen=True)
class ConsentEvent(Mapping[str, Any]):
    """One sealed ledger event. `subject_ref` is an account key ("webshop:A-1"), identifier
    reference or person id — never plaintext personal data, which only travels encrypted in
    `payload_ciphertext`. Iterating it as a mapping yields the stored record."""

    seq: int
    event_id: str
    kind: str
    subject_ref: str
    person_id: str | None
    purpose_id: str
    purpose_version: int
    channel: str | None
    recorded_at_ms: int
    effective_at_ms: int
    expires_at_ms: int | None
    source_system: str
    collection_method: str
    notice_version: str
    notice_sha256: str
    evidence_ref: str | None
    request_id: str
    payload_ciphertext: bytes | None
    payload_sha256: str | None
    prev_hash: str
    hash: str

    # -- record view ---------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        out = {_RECORD_NAME.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}
        if self.payload_ciphertext is not None:
            out["payload"] = base64.b64encode(self.payload_ciphertext).decode("ascii")
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ConsentEvent:
        """From a stored record (or a mapping with the typed names). Unknown keys are ignored."""
        if isinstance(record, ConsentEvent):
            return record
        values = {f.name: record.get(_RECORD_NAME.get(f.name, f.name), record.get(f.name)) for f in fields(cls)}
        values["payload_ciphertext"] = _payload_bytes(values["payload_ciphertext"])
        return cls(**values)

    def shredded(self) -> ConsentEvent:
        """The event after erasure: ciphertext gone, digest (and so the chain) intact."""
        return _replace(self, payload_ciphertext=None)

    def canonical(self) -> bytes:
        return canonical(self)

    def __getitem__(self, key: str) -> Any:
        if key == "payload":
            return None if self.payload_ciphertext is None else base64.b64encode(self.payload_ciphertext).decode()
        name = _TYPED_NAME.get(key, key)
        if key in _RECORD_NAME or name not in _FIELD_NAMES:
            raise KeyError(key)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_RECORD_KEYS)

    def __len__(self) -> int:
        return len(_RECORD_KEYS)


_FIELD_NAMES = frozenset(f.name for f in fields(ConsentEvent))
_RECORD_KEYS = tuple(_RECORD_NAME.get(f.name, f.name) for f in fields(ConsentEvent))


def _replace(event: ConsentEvent, **changes: Any) -> ConsentEvent:
    return ConsentEvent(**{f.name: changes.get(f.name, getattr(event, f.name)) for f in fields(event)})


def _payload_bytes(payload: Any) -> bytes | None:
    if payload is None or payload == "":
        return None
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    try:
        return base64.b64decode(str(payload).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise EventInvalid([("payload", "base64 text of the ciphertext")]) from exc


def validate_draft(draft: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems with an event before it is sealed, as (field, description)."""
    def get(name: str) -> Any:
        return draft.get(name, draft.get(_TYPED_NAME.get(name, name), draft.get(_RECORD_NAME.get(name, name))))

    v: list[tuple[str, str]] = []
    for name in ("event_id", "subject_ref", "purpose_id", "request_id", "source_system", "notice_version"):
        if not isinstance(get(name), str) or not get(name).strip():
            v.append((name, "required"))
    if get("kind") not in KINDS:
        v.append(("kind", "one of " + ", ".join(sorted(KINDS))))
    if get("collection_method") not in COLLECTION_METHODS:
        v.append(("collection_method", "one of " + ", ".join(sorted(COLLECTION_METHODS))))
    if not HEX64.match(str(get("notice_sha256") or "")):
        v.append(("notice_sha256", "SHA-256 of the notice, 64 lowercase hex digits"))
    version = get("purpose_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        v.append(("purpose_version", "integer >= 1"))
    for name in ("recorded_at_ms", "effective_at_ms"):
        value = get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            v.append((name, "epoch milliseconds"))
    expires = get("expires_at_ms")
    if expires is not None:
        if not isinstance(expires, int) or isinstance(expires, bool):
            v.append(("expires_at_ms", "epoch milliseconds or null"))
        elif get("kind") != "grant":
            v.append(("expires_at_ms", "only grants expire"))
    return v


def seal(draft: Mapping[str, Any], prev_hash: str, seq: int, *, strict: bool = True) -> ConsentEvent:
    """The event as stored: sequence, link to the previous event, payload digest and hash.

    `draft` has every event field except seq, prev_hash, payload_sha256 and hash, under either the
    typed names (``recorded_at_ms``, ``payload_ciphertext`` bytes) or the record names
    (``recorded_at``, ``payload`` base64 text). With `strict`, an invalid draft raises EventInvalid."""
    if strict:
        problems = validate_draft(draft)
        if not isinstance(seq, int) or seq < 1:
            problems.append(("seq", "integer >= 1"))
        if not HEX64.match(prev_hash or ""):
            problems.append(("prev_hash", "64 lowercase hex digits"))
        if problems:
            raise EventInvalid(problems)
    values = {name: draft.get(name, draft.get(_RECORD_NAME.get(name, name))) for name in _FIELD_NAMES}
    values["payload_ciphertext"] = _payload_bytes(values["payload_ciphertext"])
    values.update(seq=seq, prev_hash=prev_hash, payload_sha256=payload_digest(values["payload_ciphertext"]), hash="")
    unsealed = ConsentEvent(**values)
    return _replace(unsealed, hash=event_hash(unsealed))


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str
    head_hash: str = GENESIS

    @property
    def valid(self) -> bool:
        return self.ok

    @property
    def first_invalid_seq(self) -> int:
        return self.first_bad_seq or 0


Verification = VerificationResult  # the name the service uses


ChainEntry = tuple[Any, Any, Any, Any, str, bytes]


def chain_entry(event: Any) -> ChainEntry:
    """seq, prev_hash, hash, payload digest check input, recorded digest and canonical bytes."""
    if isinstance(event, ConsentEvent):
        return (event.seq, event.prev_hash, event.hash, event.payload_ciphertext, event.payload_sha256 or "",
                canonical(event))
    return (event.get("seq"), event.get("prev_hash"), event.get("hash"), event.get("payload"),
            event.get("payload_sha256") or "", canonical(event))


def pack_values(values: Sequence[Any]) -> str:
    """The packed string the store's packing expression builds for these values (see
    `PACKED_FIELDS`): written with a state so that reads need not build it. A value that is no
    text, integer or null is tagged "x", and text holding the separator adds a field, so neither
    unpacks (as with the store's own expression)."""
    return PACK_SEPARATOR.join(
        "n" if v is None else "s" + v if v.__class__ is str else "i" + str(v) if v.__class__ is int else "x"
        for v in values)


def unpack_values(text: str, width: int) -> list[Any] | None:
    """The `width` values of one packed string (tagged "s" text, "i" decimal integer, "n" null;
    see `PACKED_FIELDS`); None if it is not in the packed form."""
    parts = text.split(PACK_SEPARATOR)
    if len(parts) != width:
        return None
    values: list[Any] = []
    for part in parts:
        tag = part[:1]
        if tag == "s":
            values.append(part[1:])
        elif tag == "n":
            values.append(None)
        elif tag == "i":
            digits = part[1:]
            try:
                value = int(digits)
            except ValueError:
                return None
            if repr(value) != digits:  # the decimal form the canonical JSON has, nothing else
                return None
            values.append(value)
        else:
            return None
    return values


def unpack_entries(packed: Sequence[str]) -> list[ChainEntry] | None:
    """The chain entries of packed events (see `PACKED_FIELDS`), with the same canonical bytes
    `canonical` gives for the record; None if any of them is not in the packed form."""
    entries = []
    width, template, body_end = len(PACKED_FIELDS), _CANONICAL_TEMPLATE, _BODY
    for text in packed:
        values = unpack_values(text, width)
        if values is None:
            return None
        # Strings as JSON strings, null, and integers in the decimal form `unpack_values` checked.
        encoded = tuple(encode_basestring(v) if v.__class__ is str else "null" if v is None else repr(v)
                        for v in values[:body_end])
        body = (template % encoded).encode("utf-8")
        entries.append((values[_SEQ], values[_PREV], values[_HASH], values[_PAYLOAD], values[_DIGEST] or "", body))
    return entries


def verify_chain(events: Iterable[ConsentEvent | Mapping[str, Any]], expected_head: str | None = None, *,
                 head: tuple[int, str] | None = None,
                 current_head: Callable[[], tuple[int, str]] | None = None) -> VerificationResult:
    """Streams through events in sequence order (one pass, constant memory) and reports the first
    problem: an edited event (content or payload no longer matches its hash/digest), a removed or
    reordered one (sequence gap, broken link to the previous hash), and — given the head recorded
    separately, as `expected_head` (hash) or `head` (sequence, hash) — truncation at the end or
    events beyond the head (see `verify_entries` for a ledger that grows meanwhile). A shredded
    payload (None) is fine: its digest stays in the chain."""
    return verify_entries(map(chain_entry, events), expected_head, head=head, current_head=current_head)


def _covers(current: tuple[int, str], checked: int, last_hash: str) -> bool:
    """Whether the head read after verifying covers the `checked` events read (at their end, the
    hash must be theirs)."""
    seq, hash_ = current
    return seq > checked or (seq == checked and hash_ == last_hash)


def verify_entries(entries: Iterable[ChainEntry], expected_head: str | None = None, *,
                   head: tuple[int, str] | None = None,
                   current_head: Callable[[], tuple[int, str]] | None = None) -> VerificationResult:
    """`verify_chain` over chain entries (`chain_entry` of records, or `unpack_entries`).

    `head` is the ledger head read before the entries. A live ledger grows while it is read: with
    `current_head` (the head read again at the end), events beyond `head` are accepted when the
    chain passes through `head` exactly and the head has since moved at least as far as them —
    events beyond the current head are still reported, as a chain longer than its head."""
    sha256 = hashlib.sha256
    prev_hash, expected_seq, checked = GENESIS, 1, 0
    hash_at_head = GENESIS if head is not None and head[0] == 0 else None
    for seq, link, recorded, payload, digest, body in entries:
        if seq != expected_seq:
            if seq is None or int(seq) != expected_seq:
                return VerificationResult(False, checked, expected_seq,
                                          f"expected sequence {expected_seq}, found {seq}", prev_hash)
            seq = expected_seq
        if link != prev_hash:
            return VerificationResult(False, checked, seq, "link to the previous event is broken", prev_hash)
        if payload is not None and payload_digest(payload) != digest:
            return VerificationResult(False, checked, seq, "payload does not match its digest", prev_hash)
        if sha256(body).hexdigest() != recorded:
            return VerificationResult(False, checked, seq, "event content does not match its hash", prev_hash)
        prev_hash, expected_seq, checked = recorded, seq + 1, checked + 1
        if head is not None and checked == head[0]:
            hash_at_head = recorded
    if head is not None and (head[0] != checked or head[1] != prev_hash):
        grown = (current_head is not None and checked > head[0] and hash_at_head == head[1]
                 and _covers(current_head(), checked, prev_hash))
        if not grown:
            return VerificationResult(False, checked, min(checked, head[0]) + 1,
                                      f"ledger ends at sequence {checked} but its head records {head[0]}", prev_hash)
    if expected_head is not None and expected_head != prev_hash:
        return VerificationResult(False, checked, checked + 1,
                                  f"ledger ends at sequence {checked} but its recorded head hash differs", prev_hash)
    return VerificationResult(True, checked, None, "", prev_hash)
