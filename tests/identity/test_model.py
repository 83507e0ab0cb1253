"""The Splink model: training, persistence, and the in-process scorer equal to Splink's own."""

from __future__ import annotations

import itertools

import pytest

from bench.synth import generate
from services.identity.domain.model import (
    RealtimeScorer,
    TrainedModel,
    TrainingFailed,
    _frame,
    _linker,
    predict_and_cluster,
    train,
)
from services.identity.domain.model_settings import COMPARISONS, levenshtein, levenshtein_within
from services.identity.domain.normalize import normalize_account, to_model_record


@pytest.fixture(scope="module")
def records() -> list[dict]:
    out = []
    for accounts, _person, _trap in generate(1500, seed=11):
        for acc in accounts:
            out.append(to_model_record(normalize_account(acc)))
    return out


@pytest.fixture(scope="module")
def model(records) -> TrainedModel:
    return train(records, seed=3)


def test_trained_model_has_every_parameter(model):
    assert 0 < model.settings["probability_two_random_records_match"] < 1
    assert len(model.settings["comparisons"]) == len(COMPARISONS)
    assert model.tf_tables["family_name"]
    assert len(model.version) == 12


def test_realtime_scores_equal_splinks_own(model, records):
    """Every pair Splink's predict scores gets the same match weight and levels in-process."""
    frame = _frame(records)
    predictions = _linker(frame, model.settings).inference.predict().as_pandas_dataframe()
    assert len(predictions) > 1000
    by_id = {r["unique_id"]: r for r in records}
    scorer = RealtimeScorer(model)
    for row in predictions.itertuples():
        score = scorer.score(by_id[row.unique_id_l], by_id[row.unique_id_r])
        assert score.match_weight == pytest.approx(row.match_weight, abs=1e-9)
        assert score.match_probability == pytest.approx(row.match_probability, abs=1e-12)
        assert list(score.gammas) == [getattr(row, f"gamma_{spec.name}") for spec in COMPARISONS]
    # Every level of the handle comparison occurs among the pairs, so the twins are compared on each;
    # of the role-address comparison, null and agreement do (two different role addresses on one
    # pair are rare; that level is the e-mail comparison's, built by the same `_array`).
    assert {-1, 0, 1} <= set(predictions["gamma_handles"])
    assert {-1, 1} <= set(predictions["gamma_role_emails"])


def test_batch_probabilities_equal_score_and_splinks_own(model, records):
    """The real-time path scores a new record against all its candidates at once: the same
    probabilities as `score`, bit for bit, and as Splink's predict."""
    frame = _frame(records)
    predictions = _linker(frame, model.settings).inference.predict().as_pandas_dataframe()
    by_id = {r["unique_id"]: r for r in records}
    expected: dict[str, list[tuple[str, float]]] = {}
    for row in predictions.itertuples():
        expected.setdefault(row.unique_id_l, []).append((row.unique_id_r, row.match_probability))
    scorer = RealtimeScorer(model)
    for left, pairs in expected.items():
        rights = [by_id[r] for r, _p in pairs]
        batch = scorer.match_probabilities(by_id[left], rights)
        assert batch == [scorer.score(by_id[left], r).match_probability for r in rights]
        assert batch == pytest.approx([p for _r, p in pairs], abs=1e-12)
    assert scorer.match_probabilities(records[0], []) == []


def test_levenshtein_within_answers_as_the_full_distance():
    import random

    rng = random.Random(7)
    alphabet = "aeimnrsäöüß東 -"
    words = ["müller", "mueller", "muller", "schmidt", "schmitt", "", "a", "東京", "straße", "strasse", "ab", "ba",
             "1980-03-12", "1980-12-03", "1981-03-12"]
    for _ in range(3000):
        word = [rng.choice(alphabet) for _ in range(rng.randint(0, 10))]
        for _ in range(rng.randint(0, 4)):
            at = rng.randint(0, len(word))
            word[at:at + rng.randint(0, 1)] = rng.choice(["", rng.choice(alphabet)])
        words.append("".join(word))
    for x, y in zip(words, [*words[1:], words[0]], strict=True):
        for n in (0, 1, 2, 3):
            assert levenshtein_within(x, y, n) == (levenshtein(x, y) <= n), (x, y, n)
    for x in words[:15]:
        for y in words[:15]:
            for n in (1, 2):
                assert levenshtein_within(x, y, n) == (levenshtein(x, y) <= n), (x, y, n)


def test_scorer_handles_nulls_umlauts_and_gives_a_waterfall(model):
    scorer = RealtimeScorer(model)
    a = {"unique_id": "a", "given_name": "juergen", "family_name": "mueller", "given_name_phonetic": "0746",
         "family_name_phonetic": "657", "birth_date": "1980-05-01", "emails": [], "phones": []}
    b = {**a, "unique_id": "b", "birth_date": None, "given_name": "jurgen"}
    score = scorer.score(a, b)
    contributions = {c.comparison: c for c in score.contributions}
    assert contributions["birth_date"].level == "null"
    assert contributions["given_name"].level in {"same phonetic code", "levenshtein <= 2"}
    assert contributions["family_name"].level == "exact"
    total = score.prior_match_weight + sum(c.match_weight for c in score.contributions)
    assert score.match_weight == pytest.approx(total)


def test_swapped_names_are_one_piece_of_evidence_and_share_a_blocking_key(model):
    from services.identity.domain.blocking import block_keys

    a = {"unique_id": "a", "given_name": "renate", "family_name": "schmitz", "birth_date": "1950-01-01",
         "emails": [], "phones": []}
    b = {**a, "unique_id": "b", "given_name": "schmitz", "family_name": "renate"}
    levels = {c.comparison: c.level for c in RealtimeScorer(model).score(a, b).contributions}
    assert levels["given_name"] == "swapped with family name"
    assert levels["family_name"] == "null"  # not counted a second time
    assert dict(block_keys(a))["name_pair"] == dict(block_keys(b))["name_pair"]


def test_levenshtein_matches_duckdb():
    import duckdb

    words = ["müller", "mueller", "muller", "schmidt", "schmitt", "", "a", "東京", "straße", "strasse", "ab", "ba"]
    con = duckdb.connect()
    for x in words:
        for y in words:
            assert levenshtein(x, y) == con.execute("SELECT levenshtein(?, ?)", [x, y]).fetchone()[0]


def test_save_and_load_give_identical_scores(model, records, tmp_path):
    model.save(tmp_path / "m.json")
    loaded = TrainedModel.load(tmp_path / "m.json")
    assert loaded.version == model.version
    assert loaded.given_names == model.given_names
    s1, s2 = RealtimeScorer(model), RealtimeScorer(loaded)
    for a, b in itertools.pairwise(records):
        assert s1.score(a, b) == s2.score(a, b)


def test_the_model_knows_the_established_given_names_of_its_training_data(model, records):
    counted = {}
    for r in records:
        if r.get("given_name"):
            counted[r["given_name"]] = counted.get(r["given_name"], 0) + 1
    established = {n: k for n, k in counted.items() if k >= 10}
    assert model.given_name_counts == established
    assert len(established) > 50  # the generator's commoner names, not its typos
    assert {"andrea", "andreas"} <= set(established)
    assert model.given_names.distinct("andrea", "andreas")
    legacy = TrainedModel.from_json(model.to_json().replace('"given_name_counts"', '"unused"'))
    assert legacy.given_name_counts == {}  # a model saved before the table: spelling alone decides
    assert not legacy.given_names.distinct("andrea", "andreas")


def test_training_on_too_little_data_fails_without_a_model():
    with pytest.raises(TrainingFailed):
        train([{"unique_id": str(i), "given_name": "x"} for i in range(3)])


def test_bulk_predict_and_cluster(model, records):
    pairs, clusters = predict_and_cluster(model, records, threshold=0.95)
    assert set(clusters) == {r["unique_id"] for r in records}
    assert (pairs["match_probability"] >= 0.5).all()
    assert len(set(clusters.values())) < len(records)


def test_a_model_trained_before_the_handle_comparison_still_scores(model, records):
    """A model persisted by an earlier release has no `handles` comparison: after an upgrade it
    scores with the comparisons it has (as Splink's predict with that model does), until retrained."""
    old_settings = {**model.settings,
                    "comparisons": [c for c in model.settings["comparisons"] if c["output_column_name"] != "handles"]}
    old = RealtimeScorer(TrainedModel(old_settings, model.tf_tables, model.trained_at_ms, model.training_records))
    current = RealtimeScorer(model)
    sharing = next((a, b) for a, b in itertools.combinations(records[:400], 2)
                   if set(a["handles"]) & set(b["handles"]))
    with_handles, without_handles = current.score(*sharing), old.score(*sharing)
    handle_weight = next(c.match_weight for c in with_handles.contributions if c.comparison == "handles")
    assert handle_weight > 5
    assert "handles" not in {c.comparison for c in without_handles.contributions}
    assert without_handles.match_weight == pytest.approx(with_handles.match_weight - handle_weight, abs=1e-9)


def test_a_shared_role_address_is_evidence_but_never_enough_alone(model, records):
    """Colleagues share info@ of their firm: the address adds weight to agreeing names, but two
    records that have nothing else in common (two nameless newsletter sign-ups) stay far apart."""
    scorer = RealtimeScorer(model)
    address = next(r["role_emails"][0] for r in records if r["role_emails"])
    lone = scorer.score({"unique_id": "n1", "role_emails": [address]}, {"unique_id": "n2", "role_emails": [address]})
    role = next(c for c in lone.contributions if c.comparison == "role_emails")
    assert role.level == "share a role address"
    assert role.match_weight > 3
    assert lone.match_probability < 0.5
    named = {"unique_id": "a", "given_name": "ida", "family_name": "horn"}
    names_only = scorer.score(named, {**named, "unique_id": "b"})
    names_and_role = scorer.score({**named, "role_emails": [address]},
                                  {**named, "unique_id": "b", "role_emails": [address]})
    assert names_and_role.match_weight == pytest.approx(names_only.match_weight + role.match_weight, abs=1e-9)
