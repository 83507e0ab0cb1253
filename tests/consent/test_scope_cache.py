"""The scope cache forgets exactly the scopes naming a changed person, through its person index."""

from __future__ import annotations

from services.common.protos import SubjectRef
from services.consent.service import Scope, ScopeCache


def scope(*person_ids: str) -> Scope:
    return Scope("account:x", {"account:x": "deterministic"}, person_ids, person_ids[0] if person_ids else None)


def test_forgetting_a_person_drops_its_scopes_and_keeps_the_rest():
    cache = ScopeCache()
    anna, bert, carl = (SubjectRef(account=("shop", name)) for name in ("anna", "bert", "carl"))
    cache.put(anna, scope("p1"))
    cache.put(bert, scope("p2", "p1"))  # p1 merged into p2
    cache.put(carl, scope("p3"))
    cache.forget_persons({"p1"})
    assert cache.get(anna) is None
    assert cache.get(bert) is None
    assert cache.get(carl) is not None
    assert cache.by_person == {"p3": {carl}}  # nothing left pointing at dropped entries


def test_a_replaced_scope_is_indexed_under_its_new_persons_only():
    cache = ScopeCache()
    anna = SubjectRef(account=("shop", "anna"))
    cache.put(anna, scope("p1"))
    cache.put(anna, scope("p9"))  # relinked
    cache.forget_persons({"p1"})
    assert cache.get(anna) is not None
    assert cache.get(anna).person_ids == ("p9",)
    cache.forget_persons({"p9"})
    assert cache.get(anna) is None
    assert cache.by_person == {}


def test_a_scope_resolved_while_its_person_changed_is_not_kept():
    """A merge announced while identity was resolving: the scope may show the person before it."""
    import time

    cache = ScopeCache()
    anna, bert = SubjectRef(account=("shop", "anna")), SubjectRef(account=("shop", "bert"))
    since = time.monotonic()  # as `_scopes` takes it before asking identity
    time.sleep(0.01)
    cache.forget_persons({"p1"})  # identity's change stream, meanwhile
    cache.put(anna, scope("p1"), since)
    assert cache.get(anna) is None
    cache.put(bert, scope("p2"), since)  # another person's change does not matter
    assert cache.get(bert) is not None
    cache.put(anna, scope("p1"), time.monotonic())  # resolved after the change
    assert cache.get(anna) is not None
