"""Pairwise precision/recall/F1 and trap-group violations for a clustering against ground truth."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    trap_groups: int
    trap_groups_merged: int


def score(predicted: Mapping[str, str], truth: Mapping[str, str], traps: Mapping[str, str]) -> Scores:
    """`predicted` and `truth` map account → cluster / person; `traps` maps person → trap group."""
    both = Counter((predicted[a], truth[a]) for a in truth)
    tp = sum(_pairs(n) for n in both.values())
    pp = sum(_pairs(n) for n in Counter(predicted[a] for a in truth).values())
    tt = sum(_pairs(n) for n in Counter(truth.values()).values())
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    merged = len(merged_trap_groups(predicted, truth, traps))
    return Scores(precision, recall, f1, tt, pp, len(set(traps.values())), merged)


def merged_trap_groups(predicted: Mapping[str, str], truth: Mapping[str, str],
                       traps: Mapping[str, str]) -> dict[str, set[str]]:
    """Trap group → the predicted clusters two or more of its persons share."""
    clusters_of_person: dict[str, set[str]] = {}
    for account, person in truth.items():
        clusters_of_person.setdefault(person, set()).add(predicted[account])
    groups: dict[str, list[str]] = {}
    for person, group in traps.items():
        groups.setdefault(group, []).append(person)
    out: dict[str, set[str]] = {}
    for group, members in groups.items():
        holders = Counter(c for person in members for c in clusters_of_person.get(person, set()))
        shared = {c for c, n in holders.items() if n > 1}
        if shared:
            out[group] = shared
    return out


def trap_report(predicted: Mapping[str, str], truth: Mapping[str, str],
                traps: Mapping[str, str]) -> list[dict[str, object]]:
    """For each wrongly merged trap group, the shared clusters with their accounts and true persons:
    what a reader needs to see why the merge happened."""
    members_of_cluster: dict[str, list[tuple[str, str]]] = {}
    for account, person in truth.items():
        members_of_cluster.setdefault(predicted[account], []).append((account, person))
    return [{"trap_group": group, "clusters": [{"cluster": c, "accounts": sorted(members_of_cluster[c])}
                                               for c in sorted(shared)]}
            for group, shared in sorted(merged_trap_groups(predicted, truth, traps).items())]
