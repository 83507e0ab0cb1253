"""Ids that callers choose — request ids, behaviour event ids — which the stores keep under an
index or a unique constraint.

FalkorDB 4.16's indexes find no string that starts or ends with whitespace, is empty or holds
U+0001, and such a value in a uniquely constrained property crashes the server (probed
2026-12-07; docs/architecture.md). An id like that would make every retry a new request, or take
the store down for everybody, so each one is checked where it enters.
"""

from __future__ import annotations

import re

from services.common.errors import FieldViolation, InvalidArgument

MAX_LENGTH = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def violations(value: str, field: str) -> list[FieldViolation]:
    """What is wrong with a caller's id; an empty one is left to the caller (often: none given)."""
    if len(value) > MAX_LENGTH:
        return [FieldViolation(field, f"at most {MAX_LENGTH} characters")]
    if value != value.strip():
        return [FieldViolation(field, "must not start or end with whitespace")]
    if has_control_characters(value):
        return [FieldViolation(field, "must not hold control characters")]
    return []


def has_control_characters(value: str) -> bool:
    """C0 and C1 control characters (tab and newline among them), and DEL."""
    return _CONTROL.search(value) is not None


def checked(value: str, field: str) -> str:
    """`value`, or InvalidArgument naming what is wrong with it."""
    if problems := violations(value, field):
        raise InvalidArgument(problems)
    return value
