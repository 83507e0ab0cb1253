"""Small proto helpers shared by the servicers: times, page tokens, subjects."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2
from tessera.type.v1 import subject_pb2

from services.common import client_ids
from services.common.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

IDENTIFIER_KINDS = {
    subject_pb2.IDENTIFIER_KIND_EMAIL: "email",
    subject_pb2.IDENTIFIER_KIND_PHONE: "phone",
    subject_pb2.IDENTIFIER_KIND_SOCIAL: "social",
    subject_pb2.IDENTIFIER_KIND_LOGIN: "login",
    subject_pb2.IDENTIFIER_KIND_LOYALTY_CARD: "loyalty",
}
IDENTIFIER_ENUMS = {v: k for k, v in IDENTIFIER_KINDS.items()}
PERSON_NAME = re.compile(r"^persons/([A-Za-z0-9_-]{1,64})$")
MAX_PAGE_SIZE = 1000


def timestamp(ms: int | None) -> timestamp_pb2.Timestamp | None:
    if ms is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def millis(ts: timestamp_pb2.Timestamp) -> int:
    return ts.ToMilliseconds()


def page_size(value: int, field: str = "page_size", default: int = 50) -> int:
    if value < 0:
        raise InvalidArgument.single(field, "must not be negative")
    return min(value or default, MAX_PAGE_SIZE)


def encode_page_token(cursor: Any, request_fingerprint: str) -> str:
    payload = json.dumps({"c": cursor, "f": request_fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(token: str, request_fingerprint: str, field: str = "page_token") -> Any:
    """The cursor in a page token; the token is only valid for the same request (AIP-158)."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["f"] != request_fingerprint:
            raise InvalidArgument.single(field, "page token belongs to a different request")
        return data["c"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument.single(field, "page token is malformed") from exc


def paginate(page_token: str, requested_size: int, request_fingerprint: str,
             fetch: Callable[[Any, int], list[T]], cursor_of: Callable[[T], Any], *, default_size: int = 50,
             first_cursor: Any = "") -> tuple[list[T], str]:
    """One page of a list RPC (AIP-158): fetches one item more than the page size to learn whether
    another page follows, and returns the items with the next page token ("" on the last page)."""
    size = page_size(requested_size, default=default_size)
    cursor = decode_page_token(page_token, request_fingerprint)
    items = fetch(first_cursor if cursor is None else cursor, size + 1)
    token = encode_page_token(cursor_of(items[size - 1]), request_fingerprint) if len(items) > size else ""
    return items[:size], token


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SubjectRef:
    """A validated Subject: exactly one of person id, account (source, external id), identifier."""

    person_id: str | None = None
    account: tuple[str, str] | None = None
    identifier: tuple[str, str] | None = None  # (kind, raw value)


def parse_person_name(name: str, field: str) -> str:
    m = PERSON_NAME.match(name or "")
    if not m:
        raise InvalidArgument.single(field, "must be a person name like 'persons/{person}'")
    return m.group(1)


def parse_subject(subject: subject_pb2.Subject, field: str = "subject") -> SubjectRef:
    which = subject.WhichOneof("kind")
    if which is None:
        raise InvalidArgument.single(field, "set one of person, account or identifier")
    if which == "person":
        return SubjectRef(person_id=parse_person_name(subject.person, f"{field}.person"))
    if which == "account":
        return SubjectRef(account=parse_account_ref(subject.account, f"{field}.account"))
    kind = IDENTIFIER_KINDS.get(subject.identifier.kind)
    violations = []
    if kind is None:
        violations.append(FieldViolation(f"{field}.identifier.kind", "must be a known identifier kind"))
    if not subject.identifier.value.strip():
        violations.append(FieldViolation(f"{field}.identifier.value", "must not be empty"))
    if violations:
        raise InvalidArgument(violations)
    return SubjectRef(identifier=(kind, subject.identifier.value))


def parse_account_ref(ref: subject_pb2.AccountRef, field: str) -> tuple[str, str]:
    violations = []
    if not ref.source.strip():
        violations.append(FieldViolation(f"{field}.source", "must not be empty"))
    elif len(ref.source) > 64:
        violations.append(FieldViolation(f"{field}.source", "at most 64 characters"))
    elif client_ids.has_control_characters(ref.source.strip()):  # stored as it is (not hashed)
        violations.append(FieldViolation(f"{field}.source", "must not hold control characters"))
    if not ref.external_id.strip():
        violations.append(FieldViolation(f"{field}.external_id", "must not be empty"))
    elif len(ref.external_id) > 256:
        violations.append(FieldViolation(f"{field}.external_id", "at most 256 characters"))
    if violations:
        raise InvalidArgument(violations)
    return ref.source.strip(), ref.external_id.strip()


def subject_to_proto(ref: SubjectRef) -> subject_pb2.Subject:
    if ref.person_id:
        return subject_pb2.Subject(person=f"persons/{ref.person_id}")
    if ref.account:
        return subject_pb2.Subject(account=subject_pb2.AccountRef(source=ref.account[0], external_id=ref.account[1]))
    assert ref.identifier
    return subject_pb2.Subject(identifier=subject_pb2.Identifier(kind=IDENTIFIER_ENUMS[ref.identifier[0]],
                                                                 value=ref.identifier[1]))
