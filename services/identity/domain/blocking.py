"""Blocking keys for real-time candidate search. Each rule names the fields whose joint equality
makes two accounts worth scoring; an account indexes one key per rule it has values for, stored
in the graph as blind-index tokens (never plaintext)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.identity.domain.model_settings import name_pair, prepare

# (rule name, fields): fields are match-record keys; "birth_year", "given_initial", "name_pair"
# (both names in sorted order) and "first_handle" are derived. Role addresses are no real-time key:
# one on hundreds of accounts would fill the candidate limit (bulk drops such values first).
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("family_phonetic_birth_year", ("family_name_phonetic", "birth_year")),
    ("given_phonetic_postcode", ("given_name_phonetic", "postcode")),
    ("birth_date_given_initial", ("birth_date", "given_initial")),
    ("family_name_postcode", ("family_name", "postcode")),
    ("name_pair", ("name_pair",)),
    ("given_family_phonetic", ("given_name", "family_name_phonetic")),
    ("family_given_initial", ("family_name", "given_initial")),
    ("birth_date_postcode", ("birth_date", "postcode")),
    ("handle", ("first_handle",)),  # a social handle that is another account's login
)


def _value(record: Mapping[str, Any], name: str) -> str | None:
    if name == "birth_year":
        bd = record.get("birth_date")
        return str(bd)[:4] if bd else None
    if name == "name_pair":
        return name_pair(record)
    if name == "given_initial":
        gn = record.get("given_name")
        return str(gn)[:1] if gn else None
    if name == "first_handle":
        handles = record.get("handles")
        return str(handles[0]) if handles else None
    value = record.get(name)
    return str(value) if value else None


def block_keys(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The keys of a match record, as the model compares it (`prepare`: names an e-mail address
    spells stand in for missing ones)."""
    record = prepare(dict(record))
    keys = []
    for rule, fields in RULES:
        values = [_value(record, f) for f in fields]
        if all(values):
            keys.append((rule, "\x1f".join(v for v in values if v)))
    return keys
