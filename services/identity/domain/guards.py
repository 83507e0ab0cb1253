"""Over-merge guards: pure decisions about which candidate persons an account may join.

A shared identifier is strong evidence, but not proof: a family shares a landline, a shop types
its own phone number for customers who give none, colleagues share info@ addresses, twins share
almost everything. These rules keep such groups apart while letting ordinary duplicates link.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.identity.domain.normalize import one_letter_umlauts

DEFAULT_KIND_LIMITS: dict[str, int] = {"email": 10, "phone": 6, "social": 10, "login": 10, "loyalty": 5}


def parse_kind_limits(spec: str) -> dict[str, int]:
    """'email=10,phone=6' → {'email': 10, 'phone': 6}, on top of the defaults."""
    limits = dict(DEFAULT_KIND_LIMITS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, value = part.partition("=")
        if kind not in DEFAULT_KIND_LIMITS or not value.isdigit() or int(value) < 1:
            raise ValueError(f"bad identifier limit {part!r}: use kind=N with kind in {sorted(DEFAULT_KIND_LIMITS)}")
        limits[kind] = int(value)
    return limits


@dataclass(frozen=True)
class Traits:
    """The attributes guards compare; all normalised, any may be missing."""

    given_name: str | None = None
    family_name: str | None = None
    birth_date: str | None = None

    @classmethod
    def of(cls, record: Mapping[str, object]) -> Traits:
        def text(key: str) -> str | None:
            value = record.get(key)
            return str(value) if value else None

        return cls(text("given_name"), text("family_name"), text("birth_date"))


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: typos, including swapped neighbours, cost one each."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


# A given name is established when at least this many accounts carry it, and two established
# names are two people when the rarer is at least this share of the commoner. A typo or an
# umlaut spelt as one letter is a few in a thousand of its name's accounts ("baerbel" → "barbel"
# 7 against 6,877 in the 1M bench); a real name of its own is more, even beside a far commoner
# one (Anja beside Anna, Andrei beside Andreas: 4–6 % with German name frequencies).
ESTABLISHED_NAME_COUNT = 10
DISTINCT_NAME_SHARE = 0.02
ORIENTATION_SHARE = 0.1  # see `oriented`


@dataclass(frozen=True)
class GivenNames:
    """How many accounts carry each given name (names below `ESTABLISHED_NAME_COUNT` are left
    out). Two different names that are both established and of like frequency — Jan and Jana,
    Christian and Christine, Leon and Leonie — are two people however few letters apart, as in a
    family; a rare spelling close to a common name is taken for a typo of it. Empty: no name is
    known, and only spelling decides (what a model trained before the table existed gets)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, names: Iterable[str | None]) -> GivenNames:
        counted = Counter(n for n in names if n)
        return cls({n: k for n, k in counted.items() if k >= ESTABLISHED_NAME_COUNT})

    def established(self, name: str | None) -> bool:
        return bool(name) and name in self.counts

    def distinct(self, a: str, b: str) -> bool:
        if a == b:
            return False
        ca, cb = self.counts.get(a, 0), self.counts.get(b, 0)
        rarer = min(ca, cb)
        return rarer >= ESTABLISHED_NAME_COUNT and rarer >= DISTINCT_NAME_SHARE * max(ca, cb)


NO_NAMES = GivenNames()


def names_compatible(a: str | None, b: str | None, names: GivenNames = NO_NAMES) -> bool:
    """Missing names never conflict; two established different names always do; otherwise equal,
    one a prefix/initial of the other, or one typo apart (two for longer names)."""
    if not a or not b or a == b:
        return True
    if names.distinct(a, b):
        return False
    first_a, first_b = a.split()[0], b.split()[0]
    if first_a.startswith(first_b) or first_b.startswith(first_a):
        return True
    # Typos are counted on the spelling with umlauts as one letter: a slip on "ö" in "Jörg"
    # ("Jrg", "Jarg") is one typo, though the folded "joerg" spells it with two letters.
    a, b = one_letter_umlauts(a), one_letter_umlauts(b)
    return edit_distance(a, b) <= (1 if min(len(a), len(b)) <= 5 else 2)


def dates_compatible(a: str | None, b: str | None) -> bool:
    """Missing dates never conflict; one typo or day and month swapped is a data-entry slip."""
    if not a or not b or a == b:
        return True
    swapped = a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]
    return swapped or edit_distance(a, b) <= 1


def names_swapped(a: Traits, b: Traits) -> bool:
    """Given and family name swapped between the records: every crosswise pair that both records
    have is compatible, and there is at least one. When both records have both names, both must
    match crosswise (one shared surname alone is what families have); a record that has only a
    given name (a newsletter sign-up) may have typed the family name into it."""
    present = [(x, y) for x, y in ((a.given_name, b.family_name), (a.family_name, b.given_name)) if x and y]
    return bool(present) and all(names_compatible(x, y) for x, y in present)


def oriented(t: Traits, names: GivenNames = NO_NAMES) -> Traits:
    """The record the right way round: one whose family field holds an established given name,
    and whose given field holds a name under a tenth as common as a given name, had its names
    swapped at entry. (Surnames entered so become given names of a few accounts: "lehmann" on 150
    of the 1M bench's accounts, "dirk" on 2,500.) Two family members both entered surname first
    ("Ziegengold Wendelin", "Ziegengold Frank") would otherwise share a given name."""
    if t.given_name and names.established(t.family_name) and (
            names.counts.get(t.given_name, 0) < ORIENTATION_SHARE * names.counts[t.family_name]):
        return Traits(t.family_name, t.given_name, t.birth_date)
    return t


def conflict(a: Traits, b: Traits, names: GivenNames = NO_NAMES) -> str | None:
    """Why two records cannot be one person, or None. Different birth dates, or different given
    names, are decisive even when an identifier is shared (families, twins, colleagues). Given and
    family name swapped between the records is a data-entry slip, not a conflict."""
    a, b = oriented(a, names), oriented(b, names)
    if not dates_compatible(a.birth_date, b.birth_date):
        return "conflicting_birth_date"
    if not names_compatible(a.given_name, b.given_name, names) and not names_swapped(a, b):
        return "conflicting_given_name"
    return None


def conflict_between(group_a: Iterable[Traits], group_b: Iterable[Traits], names: GivenNames = NO_NAMES
                     ) -> str | None:
    group_b = list(group_b)
    for x in group_a:
        for y in group_b:
            why = conflict(x, y, names)
            if why:
                return why
    return None


@dataclass
class Candidate:
    """A person the account could join, with the evidence for it."""

    person_id: str
    created_at: int
    method: str  # deterministic | probabilistic
    probability: float = 1.0
    traits: list[Traits] = field(default_factory=list)
    identifiers: dict[str, set[str]] = field(default_factory=dict)  # kind -> blind-index tokens
    evidence: list[str] = field(default_factory=list)


@dataclass
class Selection:
    chosen: list[Candidate]
    blocked: dict[str, str]  # person_id -> reason


def select_persons(
    account: Traits,
    account_identifiers: Mapping[str, set[str]],
    candidates: list[Candidate],
    *,
    cannot_link: set[str],
    cannot_link_pairs: set[tuple[str, str]],
    kind_limits: Mapping[str, int],
    current_person: Candidate | None = None,
    given_names: GivenNames = NO_NAMES,
) -> Selection:
    """Greedy, oldest first: a candidate joins when it is not cannot-linked to the account or to a
    person already chosen, has no conflicting attributes with the account or with the persons
    already chosen, and the union of distinct identifiers stays within the per-kind limits."""
    chosen: list[Candidate] = [current_person] if current_person else []
    blocked: dict[str, str] = {}
    union: dict[str, set[str]] = {kind: set(tokens) for kind, tokens in account_identifiers.items()}
    for c in chosen:
        for kind, tokens in c.identifiers.items():
            union.setdefault(kind, set()).update(tokens)
    for cand in sorted(candidates, key=lambda c: (c.created_at, c.person_id)):
        if any(cand.person_id == c.person_id for c in chosen):
            continue
        if cand.person_id in cannot_link:
            blocked[cand.person_id] = "cannot_link"
            continue
        if any(tuple(sorted((cand.person_id, c.person_id))) in cannot_link_pairs for c in chosen):
            blocked[cand.person_id] = "cannot_link"
            continue
        why = conflict_between([account], cand.traits, given_names) or conflict_between(
            cand.traits, [t for c in chosen for t in c.traits], given_names)
        if why:
            blocked[cand.person_id] = why
            continue
        over = [k for k, tokens in cand.identifiers.items()
                if len(union.get(k, set()) | tokens) > kind_limits.get(k, 10**9)]
        if over:
            blocked[cand.person_id] = f"too_many_identifiers:{over[0]}"
            continue
        chosen.append(cand)
        for kind, tokens in cand.identifiers.items():
            union.setdefault(kind, set()).update(tokens)
    return Selection(chosen=chosen, blocked=blocked)


class ConstrainedUnion:
    """Union-find over persons where a union only happens while the joined group stays
    consistent: no cannot-link decision inside it, no conflicting attributes, identifiers within
    the per-kind limits."""

    def __init__(self, persons: Mapping[str, Candidate], cannot_link_pairs: set[tuple[str, str]],
                 kind_limits: Mapping[str, int], given_names: GivenNames = NO_NAMES):
        self._names = given_names
        self._parent = {pid: pid for pid in persons}
        self._members: dict[str, list[Candidate]] = {pid: [c] for pid, c in persons.items()}
        self._cannot = cannot_link_pairs
        self._limits = kind_limits

    def _find(self, x: str) -> str:
        while self._parent[x] != x:
            self._parent[x] = self._parent[self._parent[x]]
            x = self._parent[x]
        return x

    def join(self, a: str, b: str) -> bool:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return True
        left, right = self._members[ra], self._members[rb]
        if any(tuple(sorted((x.person_id, y.person_id))) in self._cannot for x in left for y in right):
            return False
        if self._conflict(left, right):
            return False
        union: dict[str, set[str]] = {}
        for c in (*left, *right):
            for kind, tokens in c.identifiers.items():
                union.setdefault(kind, set()).update(tokens)
        if any(len(tokens) > self._limits.get(kind, 10**9) for kind, tokens in union.items()):
            return False
        self._parent[rb] = ra
        self._members[ra] = [*left, *right]
        del self._members[rb]
        return True

    def conflicting(self, a: str, b: str) -> bool:
        """Whether the groups of `a` and `b` hold provably different people (what `join` refuses
        besides cannot-link decisions and identifier limits)."""
        return self._conflict(self.members(a), self.members(b))

    def _conflict(self, left: list[Candidate], right: list[Candidate]) -> bool:
        return conflict_between([t for c in left for t in c.traits], [t for c in right for t in c.traits],
                                self._names) is not None

    def members(self, x: str) -> list[Candidate]:
        """The group `x` currently belongs to."""
        return self._members[self._find(x)]

    def groups(self) -> list[list[Candidate]]:
        return list(self._members.values())
