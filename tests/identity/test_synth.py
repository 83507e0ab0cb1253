"""The synthetic population the benchmarks use: deterministic, every trap kind present, noisy, and
valid under the import contract."""

from __future__ import annotations

from collections import Counter

from bench.synth import PLACEHOLDER_PHONE, generate
from services.identity.domain.normalize import normalize_account


def population(persons: int, seed: int) -> list[tuple[list[dict], str, str | None]]:
    return list(generate(persons, seed))


def test_same_seed_same_population_and_different_seed_differs():
    assert population(300, 4) == population(300, 4)
    assert population(300, 4) != population(300, 5)


def test_every_trap_kind_is_present_and_groups_have_several_persons():
    rows = population(2000, 1)
    groups: dict[str, set[str]] = {}
    for _accounts, person, trap in rows:
        if trap:
            groups.setdefault(trap, set()).add(person)
    assert "T-placeholder" in groups
    assert len(groups["T-placeholder"]) >= 10
    multi = [g for g, members in groups.items() if g != "T-placeholder" and len(members) >= 2]
    assert len(multi) >= 50
    placeholder_accounts = [a for accounts, _p, trap in rows if trap == "T-placeholder" for a in accounts
                            if PLACEHOLDER_PHONE in (a.get("phones") or [])]
    assert len(placeholder_accounts) >= 10
    company = [a for accounts, _p, _t in rows for a in accounts
               if any(e.strip().lower().startswith("info@firma-") for e in a.get("emails") or [])]
    assert company


def test_accounts_follow_the_import_contract_and_carry_noise():
    rows = population(1000, 2)
    accounts = [a for accs, _p, _t in rows for a in accs]
    sources = Counter(a["source"] for a in accounts)
    assert set(sources) == {"webshop", "newsletter", "social", "app", "loyalty"}
    for acc in accounts:
        normalize_account(acc)  # never raises InvalidAccount
    emails = [e for a in accounts for e in a.get("emails") or []]
    phones = [p for a in accounts for p in a.get("phones") or []]
    cards = [c for a in accounts for c in a.get("loyalty_cards") or []]
    names = [a.get("family_name", "") for a in accounts]
    assert any(e != e.strip() or e != e.lower() for e in emails)
    assert any(p.startswith("0049") for p in phones)
    assert any("/" in p for p in phones)
    assert any(" " in c or "-" in c for c in cards)
    assert any("ue" in n or "oe" in n for n in names)
    assert any(n.isupper() for n in names if n)
    assert len({a["id"] for a in accounts}) == len(accounts)


def test_trap_scores_count_a_group_once_and_the_report_shows_the_shared_cluster():
    from bench.metrics import score, trap_report

    truth = {"a1": "p1", "a2": "p1", "b1": "p2", "c1": "p3", "d1": "p4"}
    traps = {"p1": "T-1", "p2": "T-1", "p3": "T-1", "p4": "T-2"}
    predicted = {"a1": "x", "a2": "y", "b1": "y", "c1": "y", "d1": "z"}  # p1, p2, p3 meet in y
    scores = score(predicted, truth, traps)
    assert (scores.trap_groups, scores.trap_groups_merged) == (2, 1)
    assert (scores.true_pairs, scores.predicted_pairs) == (1, 3)
    assert scores.precision == 0.0
    assert scores.recall == 0.0
    report = trap_report(predicted, truth, traps)
    assert report == [{"trap_group": "T-1", "clusters": [
        {"cluster": "y", "accounts": [("a2", "p1"), ("b1", "p2"), ("c1", "p3")]}]}]


def test_the_oracles_link_only_inside_a_person_and_names_alone_only_when_asked():
    from bench.accuracy import evidence_oracle

    accounts = [
        {"source": "social", "id": "a1", "given_name": "Anna", "family_name": "Müller"},
        {"source": "loyalty", "id": "a2", "given_name": "Mueller", "family_name": "Anna"},  # swapped
        {"source": "webshop", "id": "a3", "given_name": "Anna", "family_name": "Müller",
         "birth_date": "1980-02-03", "emails": ["anna@web.de"]},
        {"source": "app", "id": "a4", "given_name": "ANNA", "family_name": "Mueller",
         "birth_date": "3.2.1980"},
        {"source": "newsletter", "id": "a5", "emails": ["Anna@web.de "]},
        {"source": "app", "id": "b1", "given_name": "Anna", "family_name": "Müller",
         "birth_date": "1980-02-03"},  # a namesake with the same birth date
    ]
    truth = {f"{a['source']}:{a['id']}": ("B" if a["id"] == "b1" else "A") for a in accounts}

    def clusters(names_alone: bool) -> set[frozenset[str]]:
        found: dict[str, set[str]] = {}
        for key, cluster in evidence_oracle(accounts, truth, names_alone=names_alone).items():
            found.setdefault(cluster, set()).add(key.split(":")[1])
        return {frozenset(c) for c in found.values()}

    # Names with a birth date (a3, a4) or an e-mail (a3, a5) tie; names alone (a1, a2) only on request.
    assert clusters(False) == {frozenset({"a1"}), frozenset({"a2"}), frozenset({"a3", "a4", "a5"}),
                               frozenset({"b1"})}
    assert clusters(True) == {frozenset({"a1", "a2", "a3", "a4", "a5"}), frozenset({"b1"})}
