"""Held-out triplet protocol: the positive ranked among its negatives, per source and macro-averaged."""

from __future__ import annotations

import pytest
import torch

from colbert_az_pylate import load
from colbert_az_pylate.evaluation import evaluate_triplets


class WordOverlapModel:
    """A stand-in encoder: one unit vector per word, so MaxSim counts the query words a document contains."""

    vocabulary = ("bakı", "paytaxt", "nizami", "şair", "xəzər", "dənizi", "pad")

    def encode(self, texts, is_query, **kwargs):
        eye = torch.eye(len(self.vocabulary))
        out = []
        for text in texts:
            words = [w for w in text.split() if w in self.vocabulary] or ["pad"]
            vectors = torch.stack([eye[self.vocabulary.index(w)] for w in words])
            out.append(vectors.numpy())
        return out


@pytest.fixture(scope="module")
def model():
    return WordOverlapModel()


def test_runs_with_a_real_pylate_model(converted):
    rows = [{"query": "bakı", "positive": "bakı paytaxt", "negatives": ["nizami", "xəzər"]}]
    results = evaluate_triplets(load(converted["wordpiece"][0], device="cpu"), rows, show_progress_bar=False)
    assert set(results) == {"all", "macro"} and 0.0 <= results["all"]["MRR@10"] <= 1.0


def test_a_positive_holding_every_query_word_ranks_first_in_every_source(model):
    rows = [
        {"query": "bakı paytaxt", "positive": "bakı paytaxt", "negatives": ["xəzər dənizi", "nizami"], "source": s}
        for s in ("books", "legislation")
    ]
    results = evaluate_triplets(model, rows, show_progress_bar=False)
    assert set(results) == {"books", "legislation", "macro"}
    assert results["macro"] == {"R@1": 1.0, "R@3": 1.0, "MRR@10": 1.0, "NDCG@10": 1.0}


def test_macro_average_is_the_mean_of_the_sources(model):
    rows = [
        {"query": "bakı", "positive": "bakı", "negatives": ["nizami"], "source": "a"},
        {"query": "bakı", "positive": "nizami şair", "negatives": ["bakı", "xəzər", "nizami"], "source": "b"},
    ]
    results = evaluate_triplets(model, rows, show_progress_bar=False)
    assert results["a"]["R@1"] == 1.0 and results["b"]["R@1"] == 0.0
    assert results["macro"]["R@1"] == 0.5
    assert results["macro"]["MRR@10"] == pytest.approx((results["a"]["MRR@10"] + results["b"]["MRR@10"]) / 2)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"query": "q", "negatives": ["n"]}, "no 'positive' column"),
        ({"query": " ", "positive": "p", "negatives": ["n"]}, "empty query or positive"),
        ({"query": "q", "positive": "p", "negatives": []}, "no negatives"),
    ],
)
def test_bad_rows_are_refused_with_the_row_number(model, row, message):
    with pytest.raises(ValueError, match=message):
        evaluate_triplets(model, [row], show_progress_bar=False)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"query": "q", "positive": "p", "negatives": "nizami"}, "triplet row 2: negatives must be a list of texts"),
        ({"query": 123, "positive": "p", "negatives": [None, 5]}, "triplet row 2: query must be a text, got int"),
        ({"query": "q", "positive": "p", "negatives": [None, 5]}, "triplet row 2: negative 0 must be a non-empty text"),
        ({"query": "q", "positive": "p", "negatives": {"n": 1}}, "triplet row 2: negatives must be a list"),
        ("just a string", "triplet row 2 is str"),
    ],
)
def test_malformed_rows_are_refused_with_the_row_number_instead_of_scoring_wrong(model, row, message):
    from colbert_az_pylate.errors import DataFormatError

    good = {"query": "bakı", "positive": "bakı", "negatives": ["nizami"]}
    with pytest.raises(DataFormatError, match=message) as caught:
        evaluate_triplets(model, [good, row], show_progress_bar=False)
    assert "\n" not in str(caught.value)
