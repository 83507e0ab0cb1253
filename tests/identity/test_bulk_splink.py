"""The bulk link's DuckDB record table: the same records, pairs and scores as Splink over a pandas
frame, the widely shared identifiers dropped, and the training sample in order."""

from __future__ import annotations

import pytest

from bench.synth import generate
from services.identity.bulk_splink import RecordTable
from services.identity.domain.bulk_link import BulkAccount, Limits, groundwork, plan
from services.identity.domain.guards import DEFAULT_KIND_LIMITS, Traits
from services.identity.domain.model import TrainedModel, predict_and_cluster, train
from services.identity.domain.model_settings import prepare
from services.identity.domain.normalize import normalize_account, to_match_record


@pytest.fixture(scope="module")
def records() -> list[dict]:
    out = []
    for accounts, _person, _trap in generate(1200, seed=17):
        for acc in accounts:
            record = to_match_record(normalize_account(acc))
            record["unique_id"] = f"{acc['source']}:{acc['id']}"
            out.append(record)
    return out


@pytest.fixture(scope="module")
def model(records) -> TrainedModel:
    return train(records, seed=5)


def _table(records: list[dict]) -> RecordTable:
    table = RecordTable(memory_limit="512MB")
    for start in range(0, len(records), 500):
        table.append((i, records[i]) for i in range(start, min(start + 500, len(records))))
    return table


def test_scored_pairs_equal_splinks_predict_over_a_frame(model, records):
    ids = [r["unique_id"] for r in records]
    table = _table(records)
    try:
        assert table.count == len(records)
        left, right, probability = table.scored_pairs(model, predict_threshold=0.5, keep_from=0.6)
    finally:
        table.close()
    found = {tuple(sorted((ids[x], ids[y]))): p for x, y, p in zip(left, right, probability, strict=True)}
    scored, clusters = predict_and_cluster(model, records, threshold=0.95)
    expected = {tuple(sorted((a, b))): p for a, b, p in zip(scored["unique_id_l"], scored["unique_id_r"],
                                                            scored["match_probability"], strict=True) if p >= 0.6}
    assert len(expected) > 500
    assert found.keys() == expected.keys()
    assert all(found[k] == pytest.approx(expected[k], abs=1e-12) for k in expected)
    # Splink's clusters at the link threshold hold every pair at or above it: the plan may skip them.
    assert all(clusters[a] == clusters[b] for (a, b), p in expected.items() if p >= 0.95)


def test_widely_shared_identifiers_are_dropped_and_first_columns_follow():
    base = {"given_name": "anna", "family_name": "schmidt", "emails": [], "phones": []}
    records = [{**base, "emails": ["shop@x.de", f"a{i}@x.de"], "phones": ["+4930111"] if i < 2 else []}
               for i in range(4)]
    table = RecordTable(memory_limit="256MB")
    try:
        table.append(enumerate(records))
        assert table.drop_widely_shared(3) == 1  # shop@x.de on 4 records; the phone on 2 only
        rows = table.records([3, 0, 2], ["r0", "r1", "r2", "r3"])
    finally:
        table.close()
    assert [r["unique_id"] for r in rows] == ["r3", "r0", "r2"]  # in the order asked for
    assert rows[0]["emails"] == ["a3@x.de"]
    assert rows[0]["first_email"] == "a3@x.de"
    assert rows[1]["phones"] == ["+4930111"]
    assert rows[1]["first_phone"] == "+4930111"
    expected = prepare({**records[3], "emails": ["a3@x.de"], "unique_id": "r3"})
    assert rows[0] == expected


def test_plan_without_clusters_equals_plan_with_splinks_clusters():
    def account(i: int, given: str) -> BulkAccount:
        return BulkAccount(f"acc{i}", None, 0, Traits(given, "schmidt", "1980-01-01"), {"email": (f"t{i}",)}, ())

    accounts = [account(0, "anna"), account(1, "anna"), account(2, "anne"), account(3, "bernd")]
    pairs = [("acc0", "acc1", 0.99), ("acc1", "acc2", 0.97), ("acc2", "acc3", 0.7)]
    limits = Limits(0.95, 0.6, 3, 10, DEFAULT_KIND_LIMITS)
    with_clusters = plan(accounts, pairs, {"acc0": "c", "acc1": "c", "acc2": "c", "acc3": "d"}, limits=limits)
    without = plan(accounts, pairs, None, limits=limits)
    assert with_clusters == without
    assert len({a.person_id for a in without.assignments if a.account_id != "acc3"}) == 1
    assert without.review == [("acc2", "acc3", 0.7)]


def test_identifiers_that_do_not_link_are_dropped_from_the_records():
    base = {"given_name": "thomas", "family_name": "kevin", "emails": [], "phones": []}
    records = [{**base, "phones": ["+49341", f"+49170{i}"], "emails": ["fam@x.de"] if i < 2 else [f"k{i}@x.de"]}
               for i in range(3)]
    table = RecordTable(memory_limit="256MB")
    try:
        table.append(enumerate(records))
        # Only values on two or more records are looked at; "+491702" is on one, so never asked.
        assert table.drop_identifiers(lambda kind, value: f"{kind}:{value}", {"phone:+49341", "phone:+491702"}) == 1
        rows = table.records([0, 2], ["r0", "r1", "r2"])
    finally:
        table.close()
    assert rows[0]["phones"] == ["+491700"]
    assert rows[0]["first_phone"] == "+491700"
    assert rows[0]["emails"] == ["fam@x.de"]  # the shared e-mail links: it stays
    assert rows[1]["phones"] == ["+491702"]


def test_groundwork_counts_established_given_names_over_its_accounts():
    def account(i: int, given: str, tokens: tuple[str, ...] = ()) -> BulkAccount:
        return BulkAccount(f"acc{i}", None, 0, Traits(given, "schulze" if tokens else f"f{i}", None),
                           {"phone": tokens}, tokens)

    others = [account(i, "jan" if i % 2 else "jana") for i in range(2, 40)]
    family = [account(0, "jan", ("landline",)), account(1, "jana", ("landline",))]
    limits = Limits(0.95, 0.6, 3, 10, DEFAULT_KIND_LIMITS)
    work = groundwork([*family, *others], limits)
    assert work.given_names.counts == {"jan": 20, "jana": 20}
    assert work.contested == ["landline"]  # Jan and Jana Schulze on one landline: a family
    decided = plan([*family, *others], [("acc0", "acc1", 0.99)], None, limits=limits, prepared=work)
    person = {a.account_id: a.person_id for a in decided.assignments}
    assert person["acc0"] != person["acc1"]  # nor does the model's pair join them
    # Without enough accounts to know the names, "jan" may be a shortened "jana": the old rule.
    assert groundwork(family, limits).linking == {"landline": ["a:acc0", "a:acc1"]}


def test_groundwork_contests_an_identifier_whose_holders_conflict():
    def account(i: int, given: str, family: str, tokens: tuple[str, ...]) -> BulkAccount:
        return BulkAccount(f"acc{i}", None, 0, Traits(given, family, None), {"phone": tokens}, tokens)

    accounts = [account(0, "thomas", "jennifer", ("landline",)), account(1, "thomas", "kevin", ("landline",)),
                account(2, "sabine", "thomas", ("landline",)), account(3, "anna", "roth", ("mobile",)),
                account(4, "anna", "roth", ("mobile",))]
    work = groundwork(accounts, Limits(0.95, 0.6, 3, 10, DEFAULT_KIND_LIMITS))
    assert work.contested == ["landline"]
    assert work.not_linking == {"landline"}
    assert work.linking == {"mobile": ["a:acc3", "a:acc4"]}
    decided = plan(accounts, [("acc0", "acc1", 0.99)], None, limits=Limits(0.95, 0.6, 3, 10, DEFAULT_KIND_LIMITS),
                   prepared=work)
    assert decided.contested == ["landline"]
    person = {a.account_id: a.person_id for a in decided.assignments}
    assert person["acc3"] == person["acc4"]
