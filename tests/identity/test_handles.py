"""Social handles and login names as model evidence: which handles count, the comparison's SQL and
Python twins, and the widely shared ones dropped in the bulk table and in real time alike."""

from __future__ import annotations

import duckdb
import pytest

from services.identity.bulk_splink import RecordTable
from services.identity.domain.model_settings import COMPARISONS, prepare
from services.identity.domain.normalize import (
    Identifier,
    model_handle,
    model_handles,
    normalize_account,
    to_match_record,
    to_model_record,
)
from services.identity.service import model_value, without

HANDLES = next(spec for spec in COMPARISONS if spec.name == "handles")


def test_social_handle_and_login_give_the_same_bare_handle():
    shop = normalize_account({"source": "webshop", "id": "1", "logins": [" Anna.Schmidt77 "]})
    social = normalize_account({"source": "social", "id": "2",
                                "social": [{"provider": "IG", "handle": "@anna.schmidt77"}]})
    assert model_handles(shop) == model_handles(social) == ["anna.schmidt77"]
    record = to_model_record(social)
    assert record == {**to_match_record(social), "handles": ["anna.schmidt77"]}


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("social", "instagram:anna.s", "anna.s"),
    ("login", "webshop:anna.s", "anna.s"),
    ("login", "webshop:abc", None),  # too short to tell people apart
    ("social", "facebook:info", None),  # a role name, as role e-mail addresses
    ("login", "webshop:shop", None),
    ("login", "app:100234", None),  # a customer number: another system's other customer
    ("login", "webshop:anna@x.de", None),  # an e-mail address: the e-mail comparison's evidence
    ("email", "anna.s@x.de", None),
    ("phone", "+4915123456789", None),
])
def test_which_handles_count(kind, value, expected):
    assert model_handle(Identifier(kind, value)) == expected


def _duckdb_levels(pairs: list[tuple[list[str] | None, list[str] | None]]) -> list[int]:
    """The level Splink's SQL gives each pair: -1 null, then the levels from most similar, then else."""
    con = duckdb.connect()
    con.execute('CREATE TABLE p (i INTEGER, "handles_l" VARCHAR[], "handles_r" VARCHAR[])')
    con.executemany("INSERT INTO p VALUES (?, ?, ?)", [(i, a, b) for i, (a, b) in enumerate(pairs)])
    cases = " ".join(f"WHEN {lv.sql} THEN {i}" for i, lv in enumerate(HANDLES.levels))
    sql = f"SELECT CASE WHEN {HANDLES.null_sql} THEN -1 {cases} ELSE {len(HANDLES.levels)} END FROM p ORDER BY i"  # noqa: S608 (declared SQL)
    return [row[0] for row in con.execute(sql).fetchall()]


def _python_levels(pairs: list[tuple[list[str] | None, list[str] | None]]) -> list[int]:
    out = []
    for a, b in pairs:
        left, right = prepare({"handles": a}), prepare({"handles": b})
        if HANDLES.is_null(left, right):
            out.append(-1)
            continue
        out.append(next((i for i, lv in enumerate(HANDLES.levels) if lv.matches(left, right)), len(HANDLES.levels)))
    return out


def test_handle_comparison_twins_agree():
    pairs = [(None, ["anna.s"]), ([], ["anna.s"]), (["anna.s"], None), (["anna.s"], ["anna.s"]),
             (["anna.s", "bx_42"], ["bx_42"]), (["anna.s"], ["anna.s2"]), (["anna.s"], ["ANNA.S"]), ([], [])]
    # None inside SQL lists never equals anything; the Python records never hold one (prepare).
    expected = [-1, -1, -1, 0, 0, 1, 1, -1]
    assert _duckdb_levels(pairs) == expected
    assert _python_levels(pairs) == expected


def test_widely_shared_handles_are_dropped_in_bulk():
    base = {"given_name": "anna", "family_name": "schmidt", "emails": [], "phones": []}
    records = [{**base, "handles": ["gamer_pro", f"anna{i}x"] if i < 3 else ["anna3x"]} for i in range(4)]
    table = RecordTable(memory_limit="256MB")
    try:
        table.append(enumerate(records))
        assert table.drop_widely_shared(3) == 1  # gamer_pro on 3 records
        rows = table.records([0, 3], ["r0", "r1", "r2", "r3"])
    finally:
        table.close()
    assert rows[0] == prepare({**records[0], "handles": ["anna0x"], "unique_id": "r0"})
    assert rows[1]["handles"] == ["anna3x"]


def test_widely_shared_handles_are_no_evidence_in_real_time():
    assert model_value("social", "instagram:gamer_pro") == ("handles", "gamer_pro")
    assert model_value("login", "webshop:gamer_pro") == ("handles", "gamer_pro")
    assert model_value("login", "webshop:abc") is None
    assert model_value("email", "a@x.de") == ("emails", "a@x.de")
    assert model_value("loyalty", "6001234") is None
    match = {"emails": ["a@x.de"], "phones": [], "handles": ["gamer_pro", "anna0x"]}
    noise = {model_value("login", "webshop:gamer_pro")}
    assert without(match, noise) == {"emails": ["a@x.de"], "phones": [], "handles": ["anna0x"], "role_emails": []}
    # Records stored before handles were compared have none: no error, no evidence.
    assert without({"emails": [], "phones": []}, noise)["handles"] == []


def test_realtime_link_compares_a_social_handle_with_a_webshop_login(stack_factory):
    """Through the real service: the records it stores and scores carry the handles, so a social
    account whose handle is a webshop account's login shows that as evidence, and joins it."""
    from tessera.identity.v1 import identity_pb2 as pb
    from tessera.identity.v1 import identity_pb2_grpc
    from tessera.type.v1 import subject_pb2

    from bench.synth import generate
    from services.identity.cli import _raw_to_input

    stub = identity_pb2_grpc.IdentityServiceStub(stack_factory("identity").channel("identity"))
    batch = [pb.LinkAccountRequest(account=_raw_to_input(raw))
             for accounts, _person, _trap in generate(300, seed=9) for raw in accounts]
    list(stub.BatchLinkAccounts(iter([pb.BatchLinkAccountsRequest(requests=batch[i:i + 200])
                                      for i in range(0, len(batch), 200)])))
    stub.TrainModel(pb.TrainModelRequest(seed=3))
    names = {"given_name": "Quirin", "family_name": "Zwiebelmann"}
    shop = stub.LinkAccount(pb.LinkAccountRequest(account=_raw_to_input(
        {"source": "webshop", "id": "h-1", "logins": ["QuirinZ_88"], **names})))
    social = stub.LinkAccount(pb.LinkAccountRequest(account=_raw_to_input(
        {"source": "social", "id": "h-2", "social": [{"provider": "instagram", "handle": "@quirinz_88"}], **names})))
    assert social.person.name == shop.person.name
    assert social.account.link_method == pb.LINK_METHOD_PROBABILISTIC
    explanation = stub.ExplainMatch(pb.ExplainMatchRequest(
        account_a=subject_pb2.AccountRef(source="webshop", external_id="h-1"),
        account_b=subject_pb2.AccountRef(source="social", external_id="h-2")))
    handles = next(c for c in explanation.contributions if c.comparison == "handles")
    assert handles.level == "share a handle"
    assert handles.match_weight > 5
