"""Training, persisting and applying the Splink model.

Training runs Splink 5 (DuckDB) without labels: a first prior from deterministic rules, u by
random sampling, m by EM in sessions blocked on birth date and on the full name, then the prior
re-estimated with the trained m and u (see `_estimate_prior`). A run happens in a fresh
linker and must pass validation before it is returned, so a failed run never leaves a
half-trained model in use. The trained parameters are compiled into `RealtimeScorer`, which
scores one pair in-process (no DuckDB) exactly as Splink does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.identity.domain.guards import GivenNames
from services.identity.domain.model_settings import (
    COMPARISONS,
    EM_BLOCKING,
    PRIOR_RULES,
    TF_COLUMNS,
    ComparisonSpec,
    Record,
    prepare,
    splink_settings,
)

MIN_TRAINING_RECORDS = 200


class TrainingFailed(RuntimeError):
    """Training could not produce a usable model; the current model stays in use."""


@dataclass
class TrainedModel:
    settings: dict[str, Any]  # Splink's saved model
    tf_tables: dict[str, dict[str, float]]  # column -> value -> relative frequency
    trained_at_ms: int
    training_records: int
    version: str = ""
    # Established given names in the training data and their counts (guards.GivenNames): the
    # real-time guards tell Jan from Jana by them. Empty in models trained before it existed.
    given_name_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.version:
            body = json.dumps({"s": self.settings, "tf": self.tf_tables, "g": self.given_name_counts},
                              sort_keys=True).encode()
            self.version = hashlib.sha256(body).hexdigest()[:12]

    @property
    def given_names(self) -> GivenNames:
        return GivenNames(self.given_name_counts)

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "settings": self.settings, "tf_tables": self.tf_tables,
                           "trained_at_ms": self.trained_at_ms, "training_records": self.training_records,
                           "given_name_counts": self.given_name_counts})

    @classmethod
    def from_json(cls, text: str) -> TrainedModel:
        data = json.loads(text)
        return cls(settings=data["settings"], tf_tables=data["tf_tables"], trained_at_ms=data["trained_at_ms"],
                   training_records=data["training_records"], version=data["version"],
                   given_name_counts=data.get("given_name_counts", {}))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TrainedModel:
        return cls.from_json(path.read_text())


def _frame(records: Sequence[Record]) -> pd.DataFrame:
    return pd.DataFrame([prepare(r) for r in records])


def _linker(frame: pd.DataFrame, settings: dict[str, Any]) -> Any:
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI()
    return Linker(db.register(frame, dataset_display_name="accounts"), settings, log_level=logging.WARNING)


# Random pairs sampled for u. The rarest levels need millions: two strangers with given and
# family name swapped (Simon Martin / Martin Simon) are about 1 pair in 78,000, so the quarter of
# a million pairs sampled before for 12,000 records held only a few of them, and how many — it
# varied with the random account ids — decided whether swapped-name duplicates linked (the
# accuracy bench's F1 moved by 0.004 between runs on the same data).
U_SAMPLE_PAIRS = 5e6


def train(records: Sequence[Record], *, seed: int = 42) -> TrainedModel:
    if len(records) < MIN_TRAINING_RECORDS:
        raise TrainingFailed(f"need at least {MIN_TRAINING_RECORDS} accounts to train, got {len(records)}")
    from splink import block_on

    frame = _frame(records)
    try:
        linker = _linker(frame, splink_settings())
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*cols) for cols in PRIOR_RULES], recall=0.8)
        linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed)
        share = min(1.0, 300_000 / len(records))
        for cols in EM_BLOCKING:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*cols), record_sample_proportion=share)
        saved = _floor_probabilities(linker.misc.save_model_to_json())
        tf = {column: linker.table_management.compute_tf_table(column).as_pandas_dataframe()
              for column in TF_COLUMNS}
        saved["probability_two_random_records_match"] = _estimate_prior(frame, saved)
    except Exception as exc:  # Splink raises many types; none may leave a model behind
        raise TrainingFailed(f"training failed: {type(exc).__name__}: {exc}"[:500]) from exc
    tf_tables = {column: {str(v): float(f) for v, f in zip(table[column], table[f"tf_{column}"], strict=True)
                          if v is not None} for column, table in tf.items()}
    names = GivenNames.of(r.get("given_name") for r in records)  # as written: spelled names are no evidence here
    model = TrainedModel(saved, tf_tables, int(time.time() * 1000), len(records),
                         given_name_counts=dict(sorted(names.counts.items())))
    validate(model)
    return model


# No disagreement may make a pair impossible on its own: EM drives the m of a level that true
# matches never showed in the training data (a birth date typed wrong) towards 0, which would let
# that one comparison outweigh all other evidence by dozens of bits.
MIN_M_PROBABILITY = 1e-3


def _floor_probabilities(settings: dict[str, Any]) -> dict[str, Any]:
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            value = level.get("m_probability")
            if isinstance(value, int | float) and not math.isnan(value) and value < MIN_M_PROBABILITY:
                level["m_probability"] = MIN_M_PROBABILITY
    return settings


def _estimate_prior(frame: pd.DataFrame, settings: dict[str, Any], rounds: int = 100) -> float:
    """The probability that two random records match, re-estimated with the trained m and u.

    The deterministic rules' estimate rests on a guessed recall; records without a birth date
    never satisfy them, so it runs low when many records lack one. With m and u fixed, the prior's
    maximum-likelihood value is the mean match probability over all pairs (an EM update on the
    prior alone); pairs outside the prediction blocking contribute practically nothing, so the
    mean is taken over the blocked pairs, iterated to a fixed point."""
    start = settings["probability_two_random_records_match"]
    n = len(frame)
    total_pairs = n * (n - 1) / 2
    # Only the weights are needed; pairs more than ~1000:1 against a match add nothing to the sum.
    lean = {**settings, "retain_matching_columns": False, "retain_intermediate_calculation_columns": False}
    pairs = _linker(frame, lean).inference.predict(threshold_match_weight=-10.0)
    weights = pairs.as_pandas_dataframe()["match_weight"].to_numpy(dtype=float)
    if not len(weights) or total_pairs <= 0:
        return start
    base = weights - math.log2(start / (1 - start))
    prior = start
    for _ in range(rounds):
        shifted = np.clip(base + math.log2(prior / (1 - prior)), -1000.0, 1000.0)
        estimate = float(np.sum(1.0 / (1.0 + np.exp2(-shifted))) / total_pairs)
        estimate = min(max(estimate, 1e-12), 0.5)
        if abs(estimate - prior) <= 1e-6 * prior:
            prior = estimate
            break
        prior = estimate
    return prior


def validate(model: TrainedModel) -> None:
    prior = model.settings.get("probability_two_random_records_match")
    if not isinstance(prior, float) or not 0 < prior < 1:
        raise TrainingFailed("the prior is not a probability")
    for comparison in model.settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            for key in ("m_probability", "u_probability"):
                value = level.get(key)
                if not isinstance(value, int | float) or math.isnan(value) or not 0 < value <= 1:
                    raise TrainingFailed(f"{comparison['output_column_name']}: {level['label_for_charts']} "
                                         f"has no usable {key}")


@dataclass(frozen=True)
class Contribution:
    comparison: str
    level: str
    match_weight: float
    tf_adjustment: float = 0.0


@dataclass(frozen=True)
class Score:
    match_weight: float
    match_probability: float
    prior_match_weight: float
    contributions: tuple[Contribution, ...] = field(default_factory=tuple)
    gammas: tuple[int, ...] = ()


@dataclass(frozen=True)
class _CompiledLevel:
    label: str
    gamma: int
    log2_bf: float
    tf_column: str | None
    tf_weight: float
    tf_min_u: float
    u: float  # the u a term-frequency adjustment divides: that of the exact level on the same column


def match_probability(weight: float) -> float:
    """2^w / (1 + 2^w), without overflow for very large or very small weights."""
    if weight >= 0:
        return 1.0 / (1.0 + 2.0 ** -weight)
    odds = 2.0 ** weight
    return odds / (1.0 + odds)


class RealtimeScorer:
    """Scores one pair with the trained parameters, in-process, as Splink would."""

    def __init__(self, model: TrainedModel):
        self.version = model.version
        self.model = model
        prior = model.settings["probability_two_random_records_match"]
        self.prior_weight = math.log2(prior / (1 - prior))
        self._tf = model.tf_tables
        self._compiled: list[tuple[ComparisonSpec, list[_CompiledLevel]]] = []
        by_name = {c["output_column_name"]: c for c in model.settings["comparisons"]}
        for spec in COMPARISONS:
            if spec.name not in by_name:
                continue  # a model trained before this comparison existed scores without it, as Splink does
            levels = [lv for lv in by_name[spec.name]["comparison_levels"] if not lv.get("is_null_level")]
            # As Splink: every level adjusted on a column is adjusted against the u of that
            # column's exact level (a typo of a rare name is as telling as the name itself).
            exact_u = {lv.get("tf_adjustment_column"): lv["u_probability"] for lv in levels
                       if lv.get("tf_adjustment_column") and lv["label_for_charts"] == "exact"}
            compiled = []
            n = len(levels)
            for i, lv in enumerate(levels):
                m, u = lv["m_probability"], lv["u_probability"]
                column = lv.get("tf_adjustment_column")
                compiled.append(_CompiledLevel(lv["label_for_charts"], n - 1 - i, math.log2(m / u), column,
                                               float(lv.get("tf_adjustment_weight") or 0.0),
                                               float(lv.get("tf_minimum_u_value") or 0.0),
                                               exact_u.get(column, u)))
            self._compiled.append((spec, compiled))

    def _level(self, spec: ComparisonSpec, levels: list[_CompiledLevel], a: Record, b: Record
               ) -> tuple[_CompiledLevel, float, float] | None:
        """The level two prepared records reach in one comparison, its weight with the term-frequency
        adjustment, and the adjustment alone; None for the null level."""
        if spec.is_null(a, b):
            return None
        index = next((i for i, lv in enumerate(spec.levels) if lv.matches(a, b)), len(spec.levels))
        level = levels[index]
        tf_adj = 0.0
        if level.tf_column:
            table = self._tf.get(level.tf_column, {})
            # As Splink: the larger known frequency of the two values, at least the minimum.
            known = [t for t in (table.get(a[level.tf_column]), table.get(b[level.tf_column])) if t is not None]
            if known:
                tf_adj = level.tf_weight * (math.log2(level.u) - math.log2(max(*known, level.tf_min_u)))
        return level, level.log2_bf + tf_adj, tf_adj

    def score(self, left: Record, right: Record) -> Score:
        a, b = prepare(left), prepare(right)
        total = self.prior_weight
        contributions = []
        gammas = []
        for spec, levels in self._compiled:
            found = self._level(spec, levels, a, b)
            if found is None:
                contributions.append(Contribution(spec.name, "null", 0.0))
                gammas.append(-1)
                continue
            level, weight, tf_adj = found
            total += weight
            contributions.append(Contribution(spec.name, level.label, weight, tf_adj))
            gammas.append(level.gamma)
        probability = match_probability(total)
        return Score(total, probability, self.prior_weight, tuple(contributions), tuple(gammas))

    def match_probabilities(self, left: Record, rights: Sequence[Record]) -> list[float]:
        """`score(left, right).match_probability` for each right record, the same numbers without
        the explanation: the left record is prepared once and no contributions are built."""
        a = prepare(left)
        out = []
        for right in rights:
            b = prepare(right)
            total = self.prior_weight
            for spec, levels in self._compiled:
                found = self._level(spec, levels, a, b)
                if found is not None:
                    total += found[1]
            out.append(match_probability(total))
        return out


def predict_and_cluster(model: TrainedModel, records: Sequence[Record], *, threshold: float
                        ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Bulk: Splink's own predict over all blocked pairs, then its clustering at the threshold.
    Returns the scored pairs at or above `min(threshold, 0.5)` and unique_id → cluster id."""
    frame = _frame(records)
    # Only ids and scores leave DuckDB: the retained comparison columns would multiply memory.
    lean = {**model.settings, "retain_matching_columns": False, "retain_intermediate_calculation_columns": False}
    linker = _linker(frame, lean)
    del frame
    pairs = linker.inference.predict(threshold_match_probability=min(threshold, 0.5))
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs, threshold_match_probability=threshold)
    scored = pairs.as_duckdbpyrelation().project("unique_id_l, unique_id_r, match_probability, match_weight").df()
    table = clusters.as_duckdbpyrelation().project("unique_id, cluster_id").fetchall()
    return scored, {str(uid): str(cid) for uid, cid in table}
