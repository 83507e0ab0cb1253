"""Cypher statements, declared once in the store modules and collected here for the linter.

A store declares each statement with `cypher(...)` at import time; the test suite lints every
registered statement with Neo4j's own parser, so nothing outside the portable subset slips in.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

REGISTRY: dict[str, Statement] = {}


@dataclass(frozen=True)
class Statement:
    name: str
    text: str
    write: bool = False


def cypher(name: str, text: str, *, write: bool = False) -> Statement:
    if name in REGISTRY and REGISTRY[name].text != text:
        raise ValueError(f"duplicate Cypher statement name {name!r}")
    stmt = Statement(name=name, text=textwrap.dedent(text).strip(), write=write)
    REGISTRY[name] = stmt
    return stmt
