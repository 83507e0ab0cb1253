"""The store statements of the real-time link path, on a real graph: LINK_CONTEXT (everything a
link decides on, in one read), CREATE_ACCOUNT (a new account's edges created, not merged; nothing
written when the account exists) and LINK_PERSONS (candidate persons with identifiers and
cannot-link decisions)."""

from __future__ import annotations

import uuid

import pytest

from services.identity.store import IdentityStore

# Parameters must arrive verbatim: quotes, backslashes, unicode and a Cypher-looking payload.
AWKWARD = "it's \"quoted\" \\ back\\\\slash ' ü東京 😀 }) DETACH DELETE (n"


@pytest.fixture
def store(graph) -> IdentityStore:
    s = IdentityStore(graph)
    s.ensure_schema()
    return s


def _account(store: IdentityStore, tag: str, *, person: str, identifiers: list[tuple[str, str]],
             blocks: list[str], attrs: str = "attrs") -> dict:
    row = store.create_account(
        person_id=person, account_id=f"{tag}-account", source="webshop", ref=f"ref {tag}", attrs=attrs, now=1000,
        method="new", probability=1.0, model_version="m1",
        identifiers=[{"token": t, "kind": k, "line_type": ""} for t, k in identifiers], block_tokens=blocks,
        bucket=7, new_person=store.get_person(person) is None)
    assert row is not None
    return row


def test_link_context_round_trips_awkward_strings(store):
    tag = f"{AWKWARD}-{uuid.uuid4().hex}"
    person = f"person {tag}"
    ident, block = f"ident {tag}", f"block {tag}"
    _account(store, tag, person=person, identifiers=[(ident, "email")], blocks=[block], attrs=f"attrs {tag}")

    # The account itself: its person, and the holders of its identifier; not its own candidate.
    ctx = store.link_context(f"{tag}-account", [f"{tag}-account", ident], [ident], [block], limit=10)
    assert ctx.current == {"person_id": person, "method": "new", "probability": 1.0}
    assert ctx.suppressed == set()
    assert ctx.cannot_link == set()
    assert ctx.identifiers == [{"token": ident, "kind": "email", "persons": [person], "accounts": 1,
                                "contested": False}]
    assert ctx.candidates == []

    # Another account sharing the identifier and the blocking key finds it, its record verbatim.
    other = store.link_context(f"other {tag}", [f"other {tag}"], [ident], [block], limit=10)
    assert other.current is None
    assert [r["persons"] for r in other.identifiers] == [[person]]
    # No data key was stored for it: `wrapped` is None (as for a shredded account).
    assert other.candidates == [{"account_id": f"{tag}-account", "attrs": f"attrs {tag}", "person_id": person,
                                 "wrapped": None}]


def test_link_context_reports_suppression_cannot_link_and_contested(store):
    tag = uuid.uuid4().hex
    kept = _account(store, f"{tag}-kept", person=f"{tag}-p1", identifiers=[(f"{tag}-shared", "phone")],
                    blocks=[f"{tag}-b"])
    gone = _account(store, f"{tag}-gone", person=f"{tag}-p2", identifiers=[(f"{AWKWARD}{tag}", "email")],
                    blocks=[f"{tag}-b"])
    third = _account(store, f"{tag}-third", person=f"{tag}-p3", identifiers=[], blocks=[])
    store.record_decision(id=f"{tag}-d", kind="cannot_link", a=third["account_id"], b=kept["account_id"],
                          reason="test", author="test", now=1)
    store.mark_contested([f"{tag}-shared"])
    store.delete_person(gone["person_id"], 2)  # suppresses its account and identifier tokens

    ctx = store.link_context(third["account_id"], [third["account_id"], f"{AWKWARD}{tag}", gone["account_id"]],
                             [f"{tag}-shared"], [f"{tag}-b"], limit=10)
    assert ctx.suppressed == {f"{AWKWARD}{tag}", gone["account_id"]}
    assert ctx.cannot_link == {f"{tag}-p1"}
    assert [(r["token"], r["contested"]) for r in ctx.identifiers] == [(f"{tag}-shared", True)]
    assert [r["account_id"] for r in ctx.candidates] == [kept["account_id"]]


def test_link_context_candidates_honour_the_limit_without_the_account_itself(store):
    tag = uuid.uuid4().hex
    for i in range(5):
        _account(store, f"{tag}-{i}", person=f"{tag}-p{i}", identifiers=[], blocks=[f"{tag}-b"])
    ctx = store.link_context(f"{tag}-0-account", [], [], [f"{tag}-b"], limit=3)
    ids = [r["account_id"] for r in ctx.candidates]
    assert len(ids) == 3
    assert f"{tag}-0-account" not in ids
    assert store.link_context(f"{tag}-x", [], [], [], limit=3).candidates == []


def test_create_account_writes_nothing_when_the_account_exists(store):
    tag = f"{AWKWARD}{uuid.uuid4().hex}"
    created = _account(store, tag, person=f"{tag}-p", identifiers=[(f"{tag}-i", "email")], blocks=[f"{tag}-b"],
                       attrs="first")
    assert created == {"account_id": f"{tag}-account", "person_id": f"{tag}-p", "created_at": 1000}
    # A retry, or a concurrent creator: no row, no second person, no duplicated edges.
    again = store.create_account(
        person_id=f"{tag}-other", account_id=f"{tag}-account", source="webshop", ref="ref", attrs="second",
        now=2000, method="new", probability=1.0, model_version="m1",
        identifiers=[{"token": f"{tag}-i", "kind": "email", "line_type": ""}], block_tokens=[f"{tag}-b"],
        bucket=7, new_person=True)
    assert again is None
    assert store.get_person(f"{tag}-other") is None
    rows = store.link_persons([f"{tag}-p"])
    assert [(r["account_id"], r["attrs"], r["identifiers"]) for r in rows] == [
        (f"{tag}-account", "first", [{"kind": "email", "token": f"{tag}-i"}])]
    ctx = store.link_context(f"{tag}-new", [], [f"{tag}-i"], [f"{tag}-b"], limit=10)
    assert ctx.identifiers[0]["accounts"] == 1
    assert len(ctx.candidates) == 1
    # The full upsert still updates it.
    store.upsert_account(
        person_id=f"{tag}-p", account_id=f"{tag}-account", source="webshop", ref="ref", attrs="second", now=3000,
        method="new", probability=1.0, model_version="m1", identifier_tokens=[], identifiers=[], block_tokens=[],
        bucket=7, new_person=False, current_person=f"{tag}-p")
    assert [(r["attrs"], r["identifiers"]) for r in store.link_persons([f"{tag}-p"])] == [("second", [])]


def test_link_persons_reports_identifiers_and_cannot_link_per_account(store):
    tag = uuid.uuid4().hex
    a = _account(store, f"{tag}-a", person=f"{tag}-p1", identifiers=[(f"{tag}-e", "email"), (f"{tag}-t", "phone")],
                 blocks=[])
    b = _account(store, f"{tag}-b", person=f"{tag}-p2", identifiers=[], blocks=[])
    store.record_decision(id=f"{tag}-d", kind="cannot_link", a=a["account_id"], b=b["account_id"], reason="r",
                          author="t", now=1)
    rows = {r["person_id"]: r for r in store.link_persons([f"{tag}-p1", f"{tag}-p2", f"{tag}-none"])}
    assert set(rows) == {f"{tag}-p1", f"{tag}-p2"}
    assert sorted((i["kind"], i["token"]) for i in rows[f"{tag}-p1"]["identifiers"]) == [
        ("email", f"{tag}-e"), ("phone", f"{tag}-t")]
    assert rows[f"{tag}-p1"]["cannot_link"] == [f"{tag}-p2"]
    assert rows[f"{tag}-p2"]["cannot_link"] == [f"{tag}-p1"]
    assert rows[f"{tag}-p1"]["person_created_at"] == 1000
    assert store.link_persons([]) == []


def test_link_context_candidates_carry_their_wrapped_data_key(store, graph):
    from services.common.crypto import KeyEncryptionKey
    from services.common.keystore import SubjectKeys

    tag = uuid.uuid4().hex
    keys = SubjectKeys(graph, KeyEncryptionKey(bytes(range(32))))
    keyed = _account(store, f"{tag}-keyed", person=f"{tag}-p1", identifiers=[], blocks=[f"{tag}-b"])
    _account(store, f"{tag}-shredded", person=f"{tag}-p2", identifiers=[], blocks=[f"{tag}-b"])
    keys.cipher_for(f"account:{keyed['account_id']}")
    stored = {r["subject"]: r["wrapped"] for r in graph.run(
        __import__("services.common.keystore", fromlist=["GET_MANY"]).GET_MANY,
        {"subjects": [f"account:{keyed['account_id']}"]})}
    ctx = store.link_context(f"{tag}-new", [], [], [f"{tag}-b"], limit=10)
    wrapped = {r["account_id"]: r["wrapped"] for r in ctx.candidates}
    assert wrapped == {keyed["account_id"]: stored[f"account:{keyed['account_id']}"],
                       f"{tag}-shredded-account": None}


def test_upsert_creates_what_is_missing_once_and_moves_the_account(store):
    tag = f"{AWKWARD}{uuid.uuid4().hex}"
    params = {"account_id": f"{tag}-account", "source": "webshop", "ref": "ref", "attrs": "v1", "now": 1000,
              "method": "new", "probability": 1.0, "model_version": "m1", "bucket": 7, "new_person": True}
    # Unknown account and person: both created; duplicated tokens yield one node and one edge each.
    row = store.upsert_account(
        person_id=f"{tag}-p1", identifier_tokens=[f"{tag}-i"], current_person=None, **params,
        identifiers=[{"token": f"{tag}-i", "kind": "email", "line_type": ""}] * 2,
        block_tokens=[f"{tag}-b", f"{tag}-b"])
    assert row == {"account_id": f"{tag}-account", "person_id": f"{tag}-p1", "created_at": 1000}
    ctx = store.link_context(f"{tag}-new", [], [f"{tag}-i"], [f"{tag}-b"], limit=10)
    assert [(r["token"], r["kind"], r["accounts"]) for r in ctx.identifiers] == [(f"{tag}-i", "email", 1)]
    assert [r["account_id"] for r in ctx.candidates] == [f"{tag}-account"]
    # Again for another (new) person: the account moves, keeps its creation time, loses nothing.
    moved = store.upsert_account(
        person_id=f"{tag}-p2", identifier_tokens=[f"{tag}-i"], current_person=f"{tag}-p1",
        **{**params, "now": 2000, "attrs": "v2"},
        identifiers=[{"token": f"{tag}-i", "kind": "email", "line_type": ""}], block_tokens=[f"{tag}-b"])
    assert moved == {"account_id": f"{tag}-account", "person_id": f"{tag}-p2", "created_at": 1000}
    assert store.link_persons([f"{tag}-p1"]) == []
    assert [(r["attrs"], r["identifiers"]) for r in store.link_persons([f"{tag}-p2"])] == [
        ("v2", [{"kind": "email", "token": f"{tag}-i"}])]
    assert store.get_person(f"{tag}-p2")["created_at"] == 2000


def test_staging_creates_shared_new_nodes_once_and_a_resent_batch_adds_nothing(store):
    tag = f"{AWKWARD}{uuid.uuid4().hex}"
    shared = {"token": f"{tag}-phone", "kind": "phone", "line_type": "landline"}

    def row(n: int) -> dict:
        return {"account_id": f"{tag}-{n}", "source": "till", "bucket": 3, "ref": f"ref {n}", "attrs": f"attrs {n}",
                "identifiers": [shared, {"token": f"{tag}-mail-{n}", "kind": "email", "line_type": ""}],
                "block_tokens": f"{tag.replace(' ', '_')}-block {tag.replace(' ', '_')}-block-{n}"}

    rows = [row(1), row(2)]
    assert store.stage_accounts(rows, 1000) == 2
    assert store.stage_accounts(rows, 2000) == 0  # re-sent: nothing new
    assert store.account_states([f"{tag}-1", f"{tag}-2"]) == {f"{tag}-1": True, f"{tag}-2": True}
    # Linked to a person, both accounts hold the one shared identifier node and blocking key.
    store.create_persons([f"{tag}-p", f"{tag}-p"], 3000)
    assert store.assign_staged([{"account_id": f"{tag}-{n}", "person_id": f"{tag}-p", "method": "new",
                                 "probability": 1.0} for n in (1, 2)], "m1", 3000) == 2
    ctx = store.link_context(f"{tag}-3", [], [shared["token"]], [f"{tag.replace(' ', '_')}-block"], limit=10)
    assert [(r["token"], r["kind"], r["accounts"], r["persons"]) for r in ctx.identifiers] == [
        (shared["token"], "phone", 2, [f"{tag}-p"])]
    assert sorted(r["account_id"] for r in ctx.candidates) == [f"{tag}-1", f"{tag}-2"]
    assert sorted((r["attrs"], len(r["identifiers"])) for r in store.link_persons([f"{tag}-p"])) == [
        ("attrs 1", 2), ("attrs 2", 2)]


def test_review_pairs_are_updated_in_place_or_created_once(store):
    tag = uuid.uuid4().hex
    store.put_review([{"id": f"{tag}-1", "a": "x", "b": "y", "probability": 0.5}], 1000)
    store.put_review([{"id": f"{tag}-1", "a": "x", "b": "y", "probability": 0.7},
                      {"id": f"{tag}-2", "a": "x", "b": "z", "probability": 0.6},
                      {"id": f"{tag}-2", "a": "x", "b": "z", "probability": 0.65}], 2000)
    rows = [r for r in store.list_review(f"{tag}-", 100) if r["id"].startswith(tag)]
    assert [(r["id"], r["probability"], r["created_at"]) for r in rows] == [
        (f"{tag}-1", 0.7, 1000), (f"{tag}-2", 0.65, 2000)]


def test_cannot_link_pairs_reach_persons_outside_the_ones_asked_about(store):
    """Bulk linking reads decisions a chunk of persons at a time: a pair whose other person is in
    another chunk must still be reported, or a relink would merge what a split kept apart."""
    tag = uuid.uuid4().hex
    a = _account(store, f"{tag}-a", person=f"{tag}-p1", identifiers=[], blocks=[])
    b = _account(store, f"{tag}-b", person=f"{tag}-p2", identifiers=[], blocks=[])
    _account(store, f"{tag}-c", person=f"{tag}-p3", identifiers=[], blocks=[])
    store.record_decision(id=f"{tag}-d", kind="cannot_link", a=b["account_id"], b=a["account_id"], reason="r",
                          author="t", now=1)
    pair = (f"{tag}-p1", f"{tag}-p2")
    assert store.cannot_link_pairs([f"{tag}-p2"]) == {pair}  # ordered, whichever way the edge points
    assert store.cannot_link_pairs([f"{tag}-p1", f"{tag}-p3"]) == {pair}
    assert store.cannot_link_pairs([f"{tag}-p3"]) == set()
    assert store.cannot_link_pairs([]) == set()


def test_an_account_is_written_only_to_the_person_the_link_decided_on(store):
    """Between a link's read and its write the chosen person may be merged into another or erased:
    the write then changes nothing (the service links again), and a new person's id must be new."""
    tag = uuid.uuid4().hex
    _account(store, f"{tag}-old", person=f"{tag}-p0", identifiers=[], blocks=[])
    _account(store, f"{tag}-young", person=f"{tag}-p1", identifiers=[], blocks=[])
    params = {"source": "webshop", "ref": "ref", "attrs": "a", "now": 2000, "method": "deterministic",
              "probability": 1.0, "model_version": "m1", "identifiers": [], "block_tokens": [], "bucket": 7,
              "current_person": None}
    assert store.create_account(person_id=f"{tag}-p1", account_id=f"{tag}-taken", new_person=True, **params) is None
    store.merge_persons(f"{tag}-p0", [f"{tag}-p1"], 1500, reason="test")
    for write in (store.create_account, lambda **kw: store.upsert_account(identifier_tokens=[], **kw)):
        assert write(person_id=f"{tag}-p1", account_id=f"{tag}-late", new_person=False, **params) is None
    store.delete_person(f"{tag}-p0", 1600)
    assert store.upsert_account(person_id=f"{tag}-p0", account_id=f"{tag}-late", identifier_tokens=[],
                                new_person=False, **params) is None
    assert store.get_person(f"{tag}-p0") is None  # an erased id is not brought back
    assert store.link_persons([f"{tag}-p0", f"{tag}-p1"]) == []
    row = store.create_account(person_id=f"{tag}-p2", account_id=f"{tag}-late", new_person=True, **params)
    assert row == {"account_id": f"{tag}-late", "person_id": f"{tag}-p2", "created_at": 2000}


def test_an_upsert_writes_nothing_when_the_account_moved_since_the_link_read_it(store):
    """A split between a link's read and its write: the link must not carry the account back."""
    tag = uuid.uuid4().hex
    _account(store, f"{tag}-stay", person=f"{tag}-p1", identifiers=[], blocks=[])
    _account(store, f"{tag}-leave", person=f"{tag}-p1", identifiers=[], blocks=[])
    params = {"account_id": f"{tag}-leave-account", "source": "webshop", "ref": "ref", "attrs": "a", "now": 2000,
              "method": "deterministic", "probability": 1.0, "model_version": "m1", "identifiers": [],
              "block_tokens": [], "bucket": 7, "identifier_tokens": [], "new_person": False}
    store.split_person(f"{tag}-p1", f"{tag}-p2", [f"{tag}-leave-account"], 1500, "test", fingerprint="f",
                       decisions=[])
    assert store.upsert_account(person_id=f"{tag}-p1", current_person=f"{tag}-p1", **params) is None
    assert store.persons_of_accounts([f"{tag}-leave-account"]) == {f"{tag}-leave-account": f"{tag}-p2"}
    assert store.upsert_account(person_id=f"{tag}-p1", current_person=f"{tag}-p2", **params) is not None


def test_staged_accounts_follow_a_merge_made_while_the_bulk_link_ran(store):
    tag = uuid.uuid4().hex

    def staged(n: int) -> dict:
        return {"account_id": f"{tag}-{n}", "source": "till", "bucket": 3, "ref": f"ref {n}", "attrs": f"attrs {n}",
                "identifiers": [], "block_tokens": ""}

    assert store.stage_accounts([staged(1), staged(2)], 1000) == 2
    store.create_persons([f"{tag}-old", f"{tag}-planned", f"{tag}-erased"], 1000)
    _account(store, f"{tag}-keep", person=f"{tag}-old", identifiers=[], blocks=[])
    _account(store, f"{tag}-other", person=f"{tag}-planned", identifiers=[], blocks=[])
    store.merge_persons(f"{tag}-old", [f"{tag}-planned"], 1500, reason="meanwhile")
    store.delete_person(f"{tag}-erased", 1600)
    assigned = store.assign_staged([
        {"account_id": f"{tag}-1", "person_id": f"{tag}-planned", "method": "probabilistic", "probability": 0.99},
        {"account_id": f"{tag}-2", "person_id": f"{tag}-erased", "method": "new", "probability": 1.0}], "m1", 2000)
    assert assigned == 1
    assert store.persons_of_accounts([f"{tag}-1", f"{tag}-2"]) == {f"{tag}-1": f"{tag}-old"}
    assert store.account_states([f"{tag}-2"]) == {f"{tag}-2": True}  # still staged, for the next bulk link


def test_a_split_statement_under_a_used_request_id_moves_nothing(store):
    """The service checks a split's request id first; the statement checks it again, for a reuse
    racing that check."""
    tag = uuid.uuid4().hex
    for n in (1, 2, 3):
        _account(store, f"{tag}-{n}", person=f"{tag}-p", identifiers=[], blocks=[])
    first = store.split_person(f"{tag}-p", f"{tag}-n", [f"{tag}-1-account"], 1500, "r", fingerprint="one",
                               decisions=[])
    assert first is not None
    assert first["moved"] == [f"{tag}-1-account"]
    assert store.split_person(f"{tag}-p", f"{tag}-n", [f"{tag}-2-account"], 1600, "r", fingerprint="two",
                              decisions=[]) is None
    assert store.persons_of_accounts([f"{tag}-2-account"]) == {f"{tag}-2-account": f"{tag}-p"}
    assert store.split_origin(f"{tag}-n") == {"fingerprint": "one", "split_from": f"{tag}-p"}
