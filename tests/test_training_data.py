"""Training rows: presets over a column mapping, false-negative filter, K negatives, short rows, mixing."""

from __future__ import annotations

import math

import pytest

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError
from colbert_az_pylate.training import PRESETS, TrainingSource, build_training_rows, mix_sources

BOOKS = PRESETS["LocalDoc/azerbaijani_books_retriever_corpus-reranked"]
CORPUS = {f"p{i}": f"passage {i}" for i in range(20)}
QUERIES = {"q1": "sual bir", "q2": "sual iki"}


def _pair(query="q1", positive="p0", positive_score=10.0, negatives=()):
    row = {"query_id": query, "passage_id": positive, "pos_score": positive_score}
    for k, (doc, score) in enumerate(negatives, start=1):
        row[f"neg_{k}_id"], row[f"neg_{k}_score"] = doc, score
    return row


def _rows(pairs, **kwargs):
    source = TrainingSource("books", pairs, QUERIES, CORPUS, BOOKS)
    return list(build_training_rows(source, **kwargs)), source.stats


def test_negatives_above_09_of_the_positive_score_are_removed_as_false_negatives():
    pairs = [_pair(negatives=[("p1", 9.5), ("p2", 9.0), ("p3", 2.0)])]
    rows, stats = _rows(pairs, negatives=2)
    assert stats.false_negatives_removed == 1
    assert sorted(rows[0]["documents"][1:]) == ["passage 2", "passage 3"]
    assert rows[0]["documents"][0] == "passage 0" and rows[0]["scores"][0] == 10.0
    assert rows[0] == {**rows[0], "query": "sual bir", "source": "books"}


def test_k_negatives_are_sampled_and_scores_follow_their_documents():
    pairs = [_pair(negatives=[(f"p{i}", float(i) / 10) for i in range(1, 11)])]
    rows, _ = _rows(pairs, negatives=8, seed=3)
    documents, scores = rows[0]["documents"], rows[0]["scores"]
    assert len(documents) == len(scores) == 9 and len(set(documents[1:])) == 8
    assert all(scores[j] == int(documents[j].split()[1]) / 10 for j in range(1, 9))


def test_short_rows_are_padded_by_resampling_or_dropped_and_counted():
    pairs = [_pair(negatives=[("p1", 1.0), ("p2", 2.0)])]
    rows, stats = _rows(pairs, negatives=4)
    assert len(rows[0]["documents"]) == 5 and stats.rows_padded == 1
    assert set(rows[0]["documents"][1:]) == {"passage 1", "passage 2"}
    rows, stats = _rows(pairs, negatives=4, short_rows="drop")
    assert rows == [] and stats.rows_dropped_short == 1


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "x"])
def test_a_positive_without_a_finite_teacher_score_drops_the_row(bad):
    rows, stats = _rows([_pair(positive_score=bad, negatives=[("p1", 1.0)])], negatives=1)
    assert rows == [] and stats.rows_dropped_no_positive_score == 1


def test_negatives_with_nan_scores_or_empty_text_are_left_out_and_counted():
    corpus_with_empty = {**CORPUS, "empty": "  "}
    source = TrainingSource(
        "books", [_pair(negatives=[("p1", math.nan), ("empty", 1.0), ("p2", 1.0)])], QUERIES, corpus_with_empty, BOOKS
    )
    rows = list(build_training_rows(source, negatives=1))
    assert rows[0]["documents"] == ["passage 0", "passage 2"]
    assert source.stats.negatives_without_score == 1 and source.stats.negatives_without_text == 1


def test_rows_with_unknown_query_text_are_dropped_and_counted():
    rows, stats = _rows([_pair(query="missing", negatives=[("p1", 1.0)])], negatives=1)
    assert rows == [] and stats.rows_dropped_no_text == 1


def test_missing_columns_are_named():
    with pytest.raises(DataFormatError, match="pos_score"):
        _rows([{"query_id": "q1", "passage_id": "p0", "neg_1_id": "p1", "neg_1_score": 1.0}], negatives=1)


def test_every_preset_finds_its_negative_columns():
    for name, schema in PRESETS.items():
        columns = [schema.negative_id.format(k=k) for k in (1, 2, 10)] + [
            schema.negative_score.format(k=k) for k in (1, 2, 10)
        ]
        assert [pair[0] for pair in schema.negative_columns(columns)] == [
            schema.negative_id.format(k=k) for k in (1, 2, 10)
        ], name


def test_mixing_follows_the_weights_and_the_seed():
    sources = {name: [{"source": name, "i": i} for i in range(1000)] for name in ("a", "b", "c", "d")}
    weights = {"a": 0.5, "b": 0.25, "c": 0.15, "d": 0.10}
    rows = mix_sources(sources, weights, total=400, seed=1)
    counts = {name: sum(row["source"] == name for row in rows) for name in weights}
    assert counts == {"a": 200, "b": 100, "c": 60, "d": 40}
    assert rows == mix_sources(sources, weights, total=400, seed=1)
    assert rows != mix_sources(sources, weights, total=400, seed=2)


def test_mixing_refuses_unknown_sources():
    with pytest.raises(InvalidArgumentError, match="not given"):
        mix_sources({"a": []}, {"b": 1.0}, total=1)


@pytest.mark.parametrize(
    ("weights", "total", "message"),
    [({"a": -1.0}, 1, "non-negative"), ({"a": "heavy"}, 1, "non-negative"), ({"a": 1.0}, 0, "total"),
     ({"a": 1.0}, 2.5, "total")],
)  # fmt: skip
def test_mixing_refuses_bad_weights_and_totals(weights, total, message):
    with pytest.raises(InvalidArgumentError, match=message):
        mix_sources({"a": [{"i": 1}]}, weights, total=total)


def test_one_preset_lookup_for_config_and_python():
    from colbert_az_pylate.training import resolve_schema
    from colbert_az_pylate.training.config import SourceConfig
    from colbert_az_pylate.training.sources import load_source

    with pytest.raises(InvalidArgumentError) as python:
        load_source("LocalDoc/nope", "LocalDoc/nope")
    with pytest.raises(InvalidArgumentError) as direct:
        resolve_schema("LocalDoc/nope")
    with pytest.raises(DataFormatError) as config:
        SourceConfig(weight=1, preset="LocalDoc/nope").resolved_schema()
    assert str(python.value) == str(direct.value) == str(config.value)
