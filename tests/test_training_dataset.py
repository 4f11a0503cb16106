"""The training set: ids stored, texts looked up on access, held-out queries kept out of training."""

from __future__ import annotations

import pytest
import torch
from pylate.utils import ColBERTCollator
from test_training_sources import BOOKS, write_books_folder

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError
from colbert_az_pylate.training import load_source, prepare_training_data
from colbert_az_pylate.training.dataset import split_heldout


def _data(tmp_path, queries=30, heldout=5, total=100):
    source = load_source(write_books_folder(tmp_path / "books", queries=queries, passages=40), BOOKS, name="books")
    return prepare_training_data([(source, 1.0)], total=total, heldout_per_source=heldout, negatives=8)


def test_the_training_set_stores_ids_and_scores_only_and_reads_texts_on_access(tmp_path):
    data = _data(tmp_path)
    assert data.train.data.column_names == ["query_id", "document_ids", "scores", "source"]
    row = data.train[0]
    assert list(row) == ["query", "documents", "scores"]
    assert row["query"].startswith("sual ") and len(row["documents"]) == len(row["scores"]) == 9
    assert all(text.startswith("passage ") for text in row["documents"])


def test_pylates_collator_gets_query_documents_and_scores_from_the_lazy_set(tmp_path):
    data = _data(tmp_path)
    seen = {}

    def tokenize(texts, is_query, pad, task):
        seen[is_query] = texts
        return {"input_ids": torch.zeros(len(texts), 3, dtype=torch.long)}

    batch = ColBERTCollator(tokenize)(data.train.__getitems__([0, 1]))
    assert batch["label"].shape == (2, 9) and batch["documents_input_ids"].shape == (18, 3)
    assert len(seen[True]) == 2 and seen[True][0].startswith("sual") and len(seen[False]) == 18


def test_held_out_queries_never_appear_in_training_and_rank_one_positive_among_k(tmp_path):
    data = _data(tmp_path, heldout=5)
    assert len(data.heldout) == 5
    heldout_queries = {row["query"] for row in data.heldout}
    assert heldout_queries.isdisjoint(data.train[:]["query"])
    assert len(data.train) == 25
    for row in data.heldout:
        assert row["source"] == "books" and len(set(row["negatives"])) == 8 and row["positive"] not in row["negatives"]


def test_held_out_rows_are_never_padded_ones():
    rows = [
        {"query_id": "padded", "document_ids": ["p", "n", "n"]},
        {"query_id": "full", "document_ids": ["p", "a", "b"]},
    ]
    train, heldout = split_heldout(rows, size=2)
    assert [row["query_id"] for row in heldout] == ["full"] and [row["query_id"] for row in train] == ["padded"]


def test_the_row_counts_and_the_split_are_reported(tmp_path):
    data = _data(tmp_path)
    assert data.summary().splitlines() == [
        "25 training rows, 5 held-out triplets",
        "books: rows in 30, rows out 30, false negatives removed 30; 5 queries held out",
    ]


def test_a_small_source_with_the_default_held_out_size_keeps_90_percent_for_training_and_says_so(tmp_path):
    """The README's snippet shape: one small source, total=100_000, heldout_per_source left at its default."""
    books = load_source(write_books_folder(tmp_path / "books", queries=40, passages=50), BOOKS, name="books")
    data = prepare_training_data([(books, 1.0)], total=100_000)
    assert (len(data.train), len(data.heldout)) == (36, 4)
    assert (
        data.summary().splitlines()[1].endswith("; 4 queries held out (10 % of its 40 queries: fewer than 10 × 1500)")
    )


def test_a_large_source_holds_out_the_cards_1500_queries():
    from colbert_az_pylate.training.data import PRESETS, TrainingSource

    corpus = {f"p{i}": f"mətn {i}" for i in range(20)}
    pairs = [{"query_id": f"q{i}", "passage_id": "p0", "pos_score": 9.0, "neg_1_id": f"p{1 + i % 19}",
              "neg_1_score": 1.0} for i in range(15_000)]  # fmt: skip
    queries = {f"q{i}": "sual" for i in range(15_000)}
    source = TrainingSource("big", pairs, queries, corpus, PRESETS[BOOKS])
    data = prepare_training_data([(source, 1.0)], total=100, negatives=1)
    assert len(data.heldout) == 1500 and data.heldout_notes["big"] == "1500 queries held out"


def test_an_explicit_held_out_size_that_leaves_no_training_row_names_heldout_per_source(tmp_path):
    books = load_source(write_books_folder(tmp_path / "books", queries=12, passages=30), BOOKS, name="books")
    with pytest.raises(InvalidArgumentError, match=r"heldout_per_source=1500 holds out every one of the 12 queries"):
        prepare_training_data([(books, 1.0)], total=100, heldout_per_source=1500)


def test_a_source_without_a_usable_row_is_named(tmp_path):
    books = load_source(write_books_folder(tmp_path / "books", queries=5, passages=30), BOOKS, name="books")
    with pytest.raises(DataFormatError, match="source 'books' gives no training row after filtering"):
        prepare_training_data([(books, 1.0)], total=100, false_negative_ratio=0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"total": 0}, "total"), ({"total": 10, "heldout_per_source": -1}, "heldout_per_source"),
     ({"total": 10, "negatives": 0}, "negatives"), ({"total": 10, "short_rows": "keep"}, "short_rows")],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    books = load_source(write_books_folder(tmp_path / "books", queries=5, passages=30), BOOKS, name="books")
    with pytest.raises(InvalidArgumentError, match=message):
        prepare_training_data([(books, 1.0)], **kwargs)
