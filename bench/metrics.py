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
    clusters_of_person: dict[str, set[str]] = {}
    for account, person in truth.items():
        clusters_of_person.setdefault(person, set()).add(predicted[account])
    groups: dict[str, list[str]] = {}
    for person, group in traps.items():
        groups.setdefault(group, []).append(person)
    merged = 0
    for members in groups.values():
        seen: set[str] = set()
        for person in members:
            if seen & clusters_of_person.get(person, set()):
                merged += 1
                break
            seen |= clusters_of_person.get(person, set())
    return Scores(precision, recall, f1, tt, pp, len(groups), merged)
