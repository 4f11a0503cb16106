"""The training set: ids stored, texts looked up on access, held-out queries kept out of training."""

from __future__ import annotations

import torch
from pylate.utils import ColBERTCollator
from test_training_sources import BOOKS, write_books_folder

from colbert_az_pylate.training.dataset import prepare_training_data, split_heldout
from colbert_az_pylate.training.sources import load_source


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
        "books: rows in 30, rows out 30, false negatives removed 30",
    ]
