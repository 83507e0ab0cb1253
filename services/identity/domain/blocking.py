"""Blocking keys for real-time candidate search. Each rule names the fields whose joint equality
makes two accounts worth scoring; an account indexes one key per rule it has values for, stored
in the graph as blind-index tokens (never plaintext)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.identity.domain.model_settings import prepare

# (rule name, fields): fields are columns of the prepared record (`model_settings.prepare`, which
# derives "birth_year", "given_initial", "name_pair" and "first_handle"). Role addresses are no real-time key:
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


def block_keys(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The keys of a match record, as the model compares it (`prepare`: names an e-mail address
    spells stand in for missing ones)."""
    prepared = prepare(dict(record))
    keys = []
    for rule, fields in RULES:
        values = [prepared[f] for f in fields]
        if all(values):
            keys.append((rule, "\x1f".join(str(v) for v in values)))
    return keys
