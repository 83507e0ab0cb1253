"""Bulk linking: which person every staged account joins, decided for all of them at once.

Nodes are the persons already in the graph and the staged accounts (each alone at first). Edges
are exact shared identifiers (strongest, first) and Splink's scored pairs inside its clusters
(strongest first). A constrained union joins them only while the guards allow — no conflicting
birth dates or given names, identifier counts within the per-kind limits, no cannot-link decision
inside a group — exactly the rules the real-time path and `relink` apply. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from services.identity.domain import guards
from services.identity.domain.link_methods import METHOD_DETERMINISTIC, METHOD_NEW, METHOD_PROBABILISTIC

STAGED_CREATED_AT = 2**62  # a staged account is younger than every existing person


@dataclass(slots=True)
class BulkAccount:
    """One account as bulk linking sees it; `person_id` is None while it is staged. Slots and
    token tuples: a bulk link holds a million of these."""

    account_id: str
    person_id: str | None
    person_created_at: int
    traits: guards.Traits
    identifiers: Mapping[str, Collection[str]]  # kind → distinct blind-index tokens
    linking: Collection[str]  # the tokens that may link deterministically (role addresses do not)

    @property
    def node(self) -> str:
        return f"p:{self.person_id}" if self.person_id else f"a:{self.account_id}"


@dataclass(frozen=True)
class Assignment:
    account_id: str
    person_id: str
    method: str
    probability: float


@dataclass
class Plan:
    assignments: list[Assignment] = field(default_factory=list)
    new_persons: list[str] = field(default_factory=list)
    merges: list[tuple[str, list[str]]] = field(default_factory=list)  # (survivor, absorbed persons)
    review: list[tuple[str, str, float]] = field(default_factory=list)  # grey-zone account pairs
    contested: list[str] = field(default_factory=list)  # identifiers that joined provably different people
    not_linking: int = 0  # identifiers shared too widely to link


@dataclass(frozen=True)
class Limits:
    link_threshold: float
    review_threshold: float
    max_persons_per_identifier: int
    max_accounts_per_identifier: int
    kind_limits: Mapping[str, int]


def new_person_id(account_ids: Iterable[str]) -> str:
    """Deterministic, so a bulk run interrupted while writing creates the same persons again."""
    return hashlib.sha256(f"bulk-person:{min(account_ids)}".encode()).hexdigest()[:32]


@dataclass
class Groundwork:
    """What a plan starts from, computed before Splink scores anything: the graph's nodes (persons
    and staged accounts) and, per shared identifier, whether it links. The identifiers that do
    not link are no evidence for the model either (as in real time), so the bulk link removes
    them from the records it scores."""

    nodes: dict[str, guards.Candidate]
    linking: dict[str, list[str]]  # identifier token → the nodes holding it, sorted
    not_linking: set[str]  # shared too widely, or contested (known before, or found now)
    contested: list[str]  # found now: holders that provably are different people
    given_names: guards.GivenNames = guards.NO_NAMES  # which given names are established


def groundwork(accounts: list[BulkAccount], limits: Limits,
               contested: set[str] | frozenset[str] = frozenset(),
               given_names: guards.GivenNames | None = None) -> Groundwork:
    """An identifier held by too many accounts or persons does not link; one whose holders
    provably are different people (conflicting birth dates or given names: a family's landline)
    is contested and stops linking altogether — whatever order the accounts came in. Which given
    names are established is counted over these accounts (the graph's and the staged ones) unless
    given."""
    names = given_names if given_names is not None else guards.GivenNames.of(a.traits.given_name for a in accounts)
    nodes: dict[str, guards.Candidate] = {}
    for acc in accounts:
        if acc.person_id is None:  # a staged account is a node of its own: its identifiers need no copy
            node = nodes[acc.node] = guards.Candidate(person_id=acc.node, created_at=STAGED_CREATED_AT, method="",
                                                      identifiers=acc.identifiers)  # type: ignore[arg-type]
            node.traits.append(acc.traits)
            continue
        node = nodes.get(acc.node)
        if node is None:
            node = nodes[acc.node] = guards.Candidate(person_id=acc.node, created_at=acc.person_created_at, method="")
        node.traits.append(acc.traits)
        for kind, tokens in acc.identifiers.items():
            node.identifiers.setdefault(kind, set()).update(tokens)
    holders: dict[str, list[BulkAccount]] = defaultdict(list)
    for acc in accounts:
        for token in acc.linking:
            holders[token].append(acc)
    work = Groundwork(nodes, {}, set(), [], names)
    for token, held in holders.items():
        if len(held) < 2 or not any(a.person_id is None for a in held):
            continue
        persons = {a.person_id for a in held if a.person_id}
        if (token in contested or len(held) >= limits.max_accounts_per_identifier
                or len(persons) >= limits.max_persons_per_identifier):
            work.not_linking.add(token)
            continue
        ordered = sorted({a.node for a in held})
        if any(guards.conflict_between(nodes[x].traits, nodes[y].traits, names)
               for i, x in enumerate(ordered) for y in ordered[i + 1:]):
            work.contested.append(token)
            work.not_linking.add(token)
            continue
        if len(ordered) > 1:
            work.linking[token] = ordered
    return work


def plan(accounts: list[BulkAccount], pairs: Iterable[tuple[str, str, float]], clusters: Mapping[str, str] | None,
         *, limits: Limits, cannot_link: Iterable[tuple[str, str]] = (),
         contested: set[str] | frozenset[str] = frozenset(), prepared: Groundwork | None = None) -> Plan:
    """Decides persons for the staged accounts among `accounts` (which also holds every linked
    account, so that staged ones can join existing persons). `pairs` are Splink's scored account
    pairs, `clusters` its clusters at the link threshold (None: the pairs at or above the link
    threshold are taken as inside one cluster, which is what Splink's clustering at that
    threshold makes them), `cannot_link` account pairs. `prepared`: the `groundwork` of these
    accounts, when the caller already has it."""
    by_id = {a.account_id: a for a in accounts}
    work = prepared if prepared is not None else groundwork(accounts, limits, contested)
    nodes = work.nodes
    out = Plan(contested=list(work.contested), not_linking=len(work.not_linking - set(work.contested)))
    edges = _identifier_edges(work)
    for left, right, p in pairs:
        a, b = by_id.get(left), by_id.get(right)
        if a is None or b is None or a.node == b.node or (a.person_id and b.person_id):
            continue  # only pairs with a staged side: linked persons were decided before
        if p >= limits.link_threshold and (clusters is None or clusters.get(left) == clusters.get(right)):
            edges.append((p, METHOD_PROBABILISTIC, a.node, b.node, ""))
        elif p >= limits.review_threshold:
            out.review.append((min(left, right), max(left, right), p))
    cannot = set()
    for x, y in cannot_link:
        if x in by_id and y in by_id:
            cannot.add(tuple(sorted((by_id[x].node, by_id[y].node))))
    union = guards.ConstrainedUnion(nodes, cannot, limits.kind_limits, work.given_names)
    joined: dict[str, tuple[str, float]] = {}  # staged node → strongest accepted edge
    contested_now = set()
    for p, method, a, b, token in sorted(edges, key=lambda e: (-e[0], e[1], e[2], e[3])):
        if union.join(a, b):
            for node in (a, b):
                if node.startswith("a:") and node not in joined:
                    joined[node] = (method, p)
        elif token and union.conflicting(a, b):
            # Refused for conflicting attributes, not for a limit or a manual decision: the
            # identifier is shared by different people.
            contested_now.add(token)
    out.contested = sorted({*out.contested, *contested_now})
    _assign(union.groups(), by_id, accounts, joined, out)
    return out


def _identifier_edges(work: Groundwork) -> list[tuple[float, str, str, str, str]]:
    """A star of exact edges per linking identifier, from one of its staged holders."""
    edges = []
    for token, ordered in work.linking.items():
        center = next(n for n in ordered if n.startswith("a:"))  # every edge has a staged side
        edges.extend((1.0, METHOD_DETERMINISTIC, center, other, token) for other in ordered if other != center)
    return edges


def _assign(groups: list[list[guards.Candidate]], by_id: Mapping[str, BulkAccount], accounts: list[BulkAccount],
            joined: Mapping[str, tuple[str, float]], out: Plan) -> None:
    staged_of = {a.node: a.account_id for a in accounts if a.person_id is None}
    for members in groups:
        staged = [m.person_id for m in members if m.person_id.startswith("a:")]
        if not staged:
            continue
        existing = sorted((m for m in members if m.person_id.startswith("p:")),
                          key=lambda c: (c.created_at, c.person_id))
        if existing:
            survivor = existing[0].person_id[2:]
            if len(existing) > 1:
                out.merges.append((survivor, [c.person_id[2:] for c in existing[1:]]))
        else:
            survivor = new_person_id(staged_of[n] for n in staged)
            out.new_persons.append(survivor)
        for node in staged:
            method, p = joined.get(node, (METHOD_NEW, 1.0))
            out.assignments.append(Assignment(by_id[staged_of[node]].account_id, survivor, method, p))
