"""The card's metrics: agree with ranx on random runs, and follow the documented definitions."""

from __future__ import annotations

import random

import pytest
from extras import require_extra

from colbert_az_pylate.evaluation import evaluate_run
from colbert_az_pylate.evaluation.metrics import skipped_queries

K_VALUES = (1, 3, 5, 10)


def _random_case(seed: int, graded: bool):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(30):
        relevant = rng.sample(docs, rng.randint(1, 6))
        qrels[f"q{q}"] = {doc: (rng.randint(1, 3) if graded else 1) for doc in relevant}
        run[f"q{q}"] = {doc: rng.random() for doc in rng.sample(docs, rng.randint(5, 25))}
    return run, qrels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("graded", [False, True])
def test_metrics_agree_with_ranx_to_1e6(seed, graded):
    ranx = require_extra("ranx", "test")
    run, qrels = _random_case(seed, graded)
    ours = evaluate_run(run, qrels, K_VALUES)
    names = {"P": "precision", "R": "recall", "NDCG": "ndcg", "F1": "f1"}
    metrics = [f"{names[m]}@{k}" for m in names for k in K_VALUES] + ["mrr@10"]
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), metrics, make_comparable=True)
    for m, name in names.items():
        for k in K_VALUES:
            assert ours[f"{m}@{k}"] == pytest.approx(theirs[f"{name}@{k}"], abs=1e-6), f"{m}@{k}"
    assert ours["MRR@10"] == pytest.approx(theirs["mrr@10"], abs=1e-6)


def test_one_relevant_document_per_query_gives_f1_at_10_equal_to_r_at_10_times_2_over_11():
    rng = random.Random(7)
    qrels = {f"q{i}": {f"d{rng.randint(0, 30)}": 1} for i in range(50)}
    run = {q: {f"d{j}": rng.random() for j in range(31)} for q in qrels}
    result = evaluate_run(run, qrels)
    assert result["F1@10"] == pytest.approx(result["R@10"] * 2 / 11, abs=1e-12)


def test_a_query_missing_from_the_run_scores_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    result = evaluate_run({"q1": {"a": 1.0}}, qrels)
    assert result["P@1"] == 0.5 and result["MRR@10"] == 0.5 and result["NDCG@10"] == 0.5


def test_queries_without_relevant_documents_are_skipped_and_reported():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    assert evaluate_run({"q1": {"a": 1.0}, "q2": {"b": 1.0}}, qrels)["P@1"] == 1.0
    assert skipped_queries(qrels) == ["q2"]


def test_k_larger_than_the_ranked_list_counts_missing_ranks_as_misses():
    result = evaluate_run({"q": {"a": 1.0, "b": 0.5}}, {"q": {"a": 1, "b": 1}}, k_values=(10,))
    assert result["P@10"] == pytest.approx(0.2) and result["R@10"] == 1.0 and result["NDCG@10"] == 1.0


def test_ties_are_broken_by_document_id():
    result = evaluate_run({"q": {"b": 1.0, "a": 1.0}}, {"q": {"a": 1}}, k_values=(1,))
    assert result["P@1"] == 1.0


@pytest.mark.parametrize(
    ("run", "qrels", "message"),
    [
        ({}, {"q": {"a": 1}}, "run is empty"),
        ({"q": {"a": 1.0}}, {"q": {"a": 0}}, "no query in qrels has a relevant document"),
    ],
)
def test_bad_input_is_refused(run, qrels, message):
    with pytest.raises(ValueError, match=message):
        evaluate_run(run, qrels)


def test_bad_k_values_are_refused():
    with pytest.raises(ValueError, match="positive integers"):
        evaluate_run({"q": {"a": 1.0}}, {"q": {"a": 1}}, k_values=(0,))


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_a_nan_score_is_refused_whatever_the_order_of_the_run(order):
    from colbert_az_pylate.errors import InvalidArgumentError

    scores = {"a": float("nan"), "b": 1.0}
    run = {"q": {doc: scores[doc] for doc in order}}
    with pytest.raises(InvalidArgumentError, match="the run scores document 'a' of query 'q' NaN"):
        evaluate_run(run, {"q": {"a": 1}}, k_values=(1,))


@pytest.mark.parametrize(
    ("run", "qrels", "message"),
    [
        ({"q": {"a": "high"}}, {"q": {"a": 1}}, "scores must be numbers"),
        ({"q": ["a", "b"]}, {"q": {"a": 1}}, "must map document ids to scores"),
        ({"q": {"a": 1.0}}, {"q": {"a": "1"}}, "grades must be numbers"),
    ],
)
def test_malformed_runs_and_qrels_are_refused_with_one_line(run, qrels, message):
    from colbert_az_pylate.errors import ColbertAzError

    with pytest.raises(ColbertAzError, match=message) as caught:
        evaluate_run(run, qrels)
    assert "\n" not in str(caught.value)
