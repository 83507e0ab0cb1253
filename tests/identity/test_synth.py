"""The synthetic population: deterministic, every trap kind present, noise present, every account
valid under the import contract, and identifiers shared between persons only inside trap groups."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from bench.synth import (
    PLACEHOLDER_PHONE,
    TRAP_KINDS,
    generate,
    generate_population,
    iter_persons,
    main,
    trap_kind,
)
from services.identity.domain.normalize import normalize_account, normalize_phone

PERSONS = 3000


@pytest.fixture(scope="module")
def population():
    return generate_population(PERSONS, seed=7)


@pytest.fixture(scope="module")
def normalized(population):
    accounts, _truth, _traps = population
    return {f"{a['source']}:{a['id']}": normalize_account(a) for a in accounts}


def test_deterministic_for_a_seed():
    assert generate_population(300, seed=3) == generate_population(300, seed=3)
    assert generate_population(300, seed=3)[0] != generate_population(300, seed=4)[0]
    streamed = [(accs, key, trap) for accs, key, trap in generate(300, seed=3)]
    assert [a for accs, _, _ in streamed for a in accs] == generate_population(300, seed=3)[0]


def test_exact_person_count_and_accounts_per_person(population):
    accounts, truth, _ = population
    per_person = Counter(truth.values())
    assert len(per_person) == PERSONS
    assert set(per_person.values()) <= {1, 2, 3, 4, 5}
    assert len(per_person.values()) > 1
    assert len(truth) == len(accounts)  # unique ids are unique
    assert {a["source"] for a in accounts} == {"webshop", "newsletter", "social", "app", "loyalty"}
    for n in (1, 2, 5, 17):
        assert len({key for _, key, _ in generate(n, seed=1)}) == n


def test_every_trap_kind_present(population):
    _, truth, traps = population
    kinds = Counter(t["trap"] for t in traps)
    assert set(kinds) == set(TRAP_KINDS)
    assert kinds["placeholder"] == 1  # one group: everyone with the till's placeholder phone
    persons = set(truth.values())
    for t in traps:
        assert trap_kind(t["group"]) == t["trap"]
        assert len(t["members"]) >= 2
        assert set(t["members"]) <= persons


def test_trap_groups_have_their_defining_traits(population):
    _accounts, _truth, traps = population
    people = {p.key: p for p in iter_persons(PERSONS, seed=7)}
    for t in traps:
        members = [people[k] for k in t["members"]]
        givens = {(m.given, m.family) for m in members}
        assert len(givens) == len(members), t  # never two identical names inside a trap
        if t["trap"] in ("family", "twins"):
            assert len({m.family for m in members}) == 1
            assert len({m.landline for m in members}) == 1
            assert members[0].landline is not None
            assert len({(m.address.street, m.address.number, m.address.postcode) for m in members}) == 1
            assert len({m.given for m in members}) == len(members)
            assert len({m.birth for m in members}) == (1 if t["trap"] == "twins" else len(members))
        if t["trap"] == "company":
            assert len({m.company_email for m in members}) == 1
            assert members[0].company_email.startswith("info@")
        if t["trap"] == "placeholder":
            assert all(any(PLACEHOLDER_PHONE in a.get("phones", []) or "030 12345678" in a.get("phones", [])
                           for a in m.accounts if a["source"] == "loyalty") for m in members)


def test_accounts_pass_normalisation_without_problems(normalized):
    problems = [(uid, p) for uid, acc in normalized.items() for p in acc.problems]
    assert problems == []
    assert all(acc.identifiers for acc in normalized.values() if acc.source != "newsletter")


def test_identifiers_are_shared_across_persons_only_by_traps(population, normalized):
    _, truth, traps = population
    group_of = {k: t["group"] for t in traps for k in t["members"]}
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for uid, acc in normalized.items():
        for ident in acc.identifiers:
            owners[(ident.kind, ident.value)].add(truth[uid])
    placeholder = normalize_phone(PLACEHOLDER_PHONE)[0]
    shared = {k: v for k, v in owners.items() if len(v) > 1}
    assert shared  # the traps do share identifiers
    for (kind, value), persons in shared.items():
        groups = {group_of.get(p) for p in persons}
        assert len(groups) == 1, (kind, value, persons)
        assert None not in groups, (kind, value)
        group = groups.pop()
        expected = {"company": "email", "family": "phone", "twins": "phone", "placeholder": "phone"}[trap_kind(group)]
        assert kind == expected
        if trap_kind(group) == "placeholder":
            assert value == placeholder


def test_noise_is_present(population, normalized):
    accounts, truth, _ = population
    emails = [e for a in accounts for e in a.get("emails", [])]
    phones = [p for a in accounts for p in a.get("phones", [])]
    cards = [c for a in accounts for c in a.get("loyalty_cards", [])]
    streets = [a["address"]["street"] for a in accounts if "address" in a]
    dates = [a["birth_date"] for a in accounts if "birth_date" in a]
    assert any(e != e.strip() for e in emails)
    assert any(e.strip() != e.strip().lower() for e in emails)
    assert any("+" in e.split("@")[0] for e in emails)
    assert any(e.lower().strip().endswith("@googlemail.com") for e in emails)
    for start in ("+49 ", "0049", "+49 (0)", "(0"):
        assert any(p.startswith(start) for p in phones), start
    assert any("/" in p for p in phones)
    assert any(" " in c for c in cards)
    assert any("-" in c for c in cards)
    assert any(s.split()[0].endswith("str.") for s in streets)
    assert any("." in d for d in dates)
    assert any("-" in d for d in dates)
    # names spelled differently for one person: umlaut spellings, typos, swaps, case
    spellings: dict[str, set[str]] = defaultdict(set)
    swapped = 0
    for a in accounts:
        if "family_name" in a:
            spellings[truth[f"{a['source']}:{a['id']}"]].add(a["family_name"])
    assert sum(len(s) > 1 for s in spellings.values()) > PERSONS * 0.05
    all_family = {n for s in spellings.values() for n in s}
    assert {"Müller", "Mueller", "Muller"} <= all_family
    assert any(n.isupper() for n in all_family)
    people = {p.key: p for p in iter_persons(PERSONS, seed=7)}
    for a in accounts:
        p = people[truth[f"{a['source']}:{a['id']}"]]
        if a.get("given_name") == p.family and a.get("family_name") == p.given:
            swapped += 1
    assert swapped > 0
    # moved people: one person, two different addresses
    addresses: dict[str, set[str]] = defaultdict(set)
    for uid, acc in normalized.items():
        if acc.postcode:
            addresses[truth[uid]].add(f"{acc.street} {acc.house_number} {acc.postcode}")
    assert any(len(a) > 1 for a in addresses.values())
    # sparse sources
    newsletters = [a for a in accounts if a["source"] == "newsletter"]
    assert all(set(a) <= {"source", "id", "emails", "given_name"} for a in newsletters)
    tills = [a for a in accounts if a["source"] == "loyalty"]
    assert any(set(a) <= {"source", "id", "loyalty_cards", "given_name", "family_name"} for a in tills)


def test_names_are_frequency_weighted(population):
    accounts, _, _ = population
    families = Counter(a["family_name"] for a in accounts if a["source"] == "webshop" and "family_name" in a)
    assert families["Müller"] > families.get("Noack", 0)


def test_cli_writes_accounts_truth_and_traps(tmp_path, capsys):
    out, truth, traps = tmp_path / "a.jsonl", tmp_path / "t.jsonl", tmp_path / "x.jsonl"
    main(["--persons", "200", "--seed", "5", "--out", str(out), "--truth", str(truth), "--traps", str(traps)])
    counts = json.loads(capsys.readouterr().out)
    accounts = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    truth_lines = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    trap_lines = [json.loads(line) for line in traps.read_text(encoding="utf-8").splitlines()]
    expected_accounts, expected_truth, expected_traps = generate_population(200, seed=5)
    assert accounts == expected_accounts
    assert {t["unique_id"]: t["person"] for t in truth_lines} == expected_truth
    assert trap_lines == expected_traps
    assert counts == {"persons": 200, "accounts": len(accounts), "trap_groups": len(trap_lines)}
    # without --traps the groups follow the truth lines in the truth file
    main(["--persons", "200", "--seed", "5", "--out", str(out), "--truth", str(truth)])
    lines = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    assert [x for x in lines if "trap" in x] == expected_traps
    assert len([x for x in lines if "unique_id" in x]) == len(accounts)
