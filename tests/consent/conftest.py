"""A consent store with its schema and ledger head, on the test's own graph."""

from __future__ import annotations

import pytest

from services.consent.domain import ledger
from services.consent.store import SCHEMA, ConsentStore


@pytest.fixture
def store(graph) -> ConsentStore:
    graph.ensure_schema(SCHEMA)
    store = ConsentStore(graph)
    store.ledger_head(ledger.GENESIS)
    return store
