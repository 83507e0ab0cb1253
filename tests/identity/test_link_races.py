"""A link reads the graph, decides, then writes: what another writer changes in between must not
end up attached to a tombstone or undo a split. The store is the real one on a real FalkorDB; a
subclass runs the concurrent change right after the link's read, once."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from services.common import keystore
from services.common.crypto import BlindIndex, KeyEncryptionKey
from services.common.keystore import SubjectKeys
from services.identity.service import IdentityService, Thresholds
from services.identity.store import IdentityStore


class ChangedAfterRead(IdentityStore):
    """The real store; `meanwhile` runs once, right after the link's read named by `after`: its
    first read (the account, its identifiers and candidates) or its second (the candidates'
    accounts) — before the write either way."""

    meanwhile: Callable[[], None] | None = None
    after: str = "link_context"

    def _then(self, read: str, result):
        if read == self.after and self.meanwhile is not None:
            change, self.meanwhile = self.meanwhile, None
            change()
        return result

    def link_context(self, *args, **kwargs):
        return self._then("link_context", super().link_context(*args, **kwargs))

    def link_persons(self, *args, **kwargs):
        return self._then("link_persons", super().link_persons(*args, **kwargs))


@pytest.fixture(params=["link_context", "link_persons"])
def service(graph, request) -> IdentityService:
    """Every test runs with the change after each of the link's two reads."""
    store = ChangedAfterRead(graph)
    store.after = request.param
    store.ensure_schema()
    graph.ensure_schema(keystore.SCHEMA)
    return IdentityService(store, SubjectKeys(graph, KeyEncryptionKey(bytes(range(32)))), BlindIndex(bytes(32)),
                           default_region="DE", thresholds=Thresholds(link=0.95, review=0.6),
                           max_persons_per_identifier=5, kind_limits={})


def account(ext: str, email: str) -> dict:
    return {"source": "webshop", "id": ext, "emails": [email], "given_name": "Lia"}


def test_a_person_merged_while_the_link_decided_gets_the_account_at_its_survivor(service):
    tag = uuid.uuid4().hex[:8]
    older = service.link(account(f"{tag}-0", f"older-{tag}@example.org")).person_id
    chosen = service.link(account(f"{tag}-1", f"lia-{tag}@example.org")).person_id
    service.store.meanwhile = lambda: service.store.merge_persons(older, [chosen], 1, reason="meanwhile")
    outcome = service.link(account(f"{tag}-2", f"lia-{tag}@example.org"))
    assert outcome.person_id == older  # decided again after the merge, not written to the tombstone
    assert service.get_person(older).account_count == 3


def test_an_account_split_off_while_the_link_decided_stays_split_off(service):
    tag = uuid.uuid4().hex[:8]
    lia = service.link(account(f"{tag}-1", f"lia-{tag}@example.org")).person_id
    service.link(account(f"{tag}-2", f"lia-{tag}@example.org"))
    service.store.meanwhile = lambda: service.split(lia, [("webshop", f"{tag}-2")], "meanwhile", request_id=tag)
    again = service.link(account(f"{tag}-2", f"lia-{tag}@example.org"))  # the same data re-sent
    assert again.person_id != lia
    assert service.get_person(lia).account_count == 1


def test_a_person_erased_while_the_link_decided_is_not_brought_back(service):
    tag = uuid.uuid4().hex[:8]
    gone = service.link(account(f"{tag}-1", f"gone-{tag}@example.org")).person_id
    service.store.meanwhile = lambda: service.delete_person(gone)
    outcome = service.link(account(f"{tag}-2", f"gone-{tag}@example.org"))
    assert outcome.person_id != gone
    assert service.store.get_person(gone) is None
