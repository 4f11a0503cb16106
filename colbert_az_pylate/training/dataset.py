"""The training set: per-source held-out split, weighted mixing, and a ``datasets.Dataset`` of ids whose texts are
looked up on access.

The mixed set holds query and document ids and teacher scores (a few hundred bytes per row); a transform turns each
batch into the ``query``, ``documents``, ``scores`` columns pylate's ``ColBERTCollator`` consumes, reading the texts
from the sources' tables only then. 3M rows × 9 documents never need the whole text in memory.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from colbert_az_pylate.training.data import (
    CARD_FALSE_NEGATIVE_RATIO,
    CARD_NEGATIVES,
    TrainingSource,
    build_id_rows,
    mix_sources,
)

logger = logging.getLogger(__name__)

CARD_HELDOUT_PER_SOURCE = 1500  # held-out triplets per native source


class TextLookup:
    """The ``set_transform`` of the training set: id rows in, ``query``/``documents``/``scores`` columns out.

    Only those three columns come out, in that order: the collator tokenizes every column it is given, and the loss
    takes the queries first.
    """

    def __init__(self, sources: Mapping[str, TrainingSource]) -> None:
        self.sources = dict(sources)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        queries, documents = [], []
        for name, query_id, document_ids in zip(batch["source"], batch["query_id"], batch["document_ids"], strict=True):
            source = self.sources[name]
            queries.append(source.queries[query_id])
            documents.append([source.corpus[doc] for doc in document_ids])
        return {"query": queries, "documents": documents, "scores": batch["scores"]}


def lazy_training_dataset(id_rows: Iterable[Mapping], sources: Mapping[str, TrainingSource]):
    """A ``datasets.Dataset`` of id rows (from :func:`build_id_rows`) that yields texts when read.

    >>> from colbert_az_pylate.training.data import PRESETS
    >>> schema = PRESETS["LocalDoc/azerbaijani_books_retriever_corpus-reranked"]
    >>> source = TrainingSource("books", [], {"q": "sual"}, {"p": "cavab", "n": "başqa"}, schema)
    >>> rows = [{"query_id": "q", "document_ids": ["p", "n"], "scores": [5.0, 1.0], "source": "books"}]
    >>> lazy_training_dataset(rows, {"books": source})[0]
    {'query': 'sual', 'documents': ['cavab', 'başqa'], 'scores': [5.0, 1.0]}
    """
    from datasets import Dataset, Features, Sequence, Value

    features = Features(
        {
            "query_id": Value("string"),
            "document_ids": Sequence(Value("string")),
            "scores": Sequence(Value("float64")),
            "source": Value("string"),
        }
    )
    rows = [{name: row[name] for name in features} for row in id_rows]
    unknown = {row["source"] for row in rows} - set(sources)
    if unknown:
        raise ValueError(f"rows name sources {sorted(unknown)} that are not given; given: {sorted(sources)}")
    return Dataset.from_list(rows, features=features).with_transform(TextLookup(sources))


def heldout_triplet(row: Mapping, source: TrainingSource) -> dict:
    """The ``{"query", "positive", "negatives", "source"}`` triplet row of an id row, for the held-out evaluator."""
    positive, *negatives = (source.corpus[doc] for doc in row["document_ids"])
    return {
        "query": source.queries[row["query_id"]],
        "positive": positive,
        "negatives": negatives,
        "source": source.name,
    }


def split_heldout(id_rows: Iterable[Mapping], size: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of one source: ``size`` queries held out, one row each, none left in training.

    Held-out rows are drawn among rows whose documents are distinct (not padded by resampling), so each ranks one
    positive among K different hard negatives; every other row of a held-out query leaves the training set.

    >>> rows = [{"query_id": f"q{i % 5}", "document_ids": ["p", f"n{i}"]} for i in range(10)]
    >>> train, heldout = split_heldout(rows, size=2)
    >>> len(heldout), {r["query_id"] for r in heldout} & {r["query_id"] for r in train}
    (2, set())
    """
    rows = [dict(row) for row in id_rows]
    first_full_row: dict[str, int] = {}
    for position, row in enumerate(rows):
        if len(set(row["document_ids"])) == len(row["document_ids"]):
            first_full_row.setdefault(row["query_id"], position)
    eligible = sorted(first_full_row)
    if size > len(eligible):
        logger.warning("only %d queries can be held out (asked for %d)", len(eligible), size)
    chosen = set(random.Random(seed).sample(eligible, min(size, len(eligible))))
    heldout = [rows[first_full_row[query]] for query in sorted(chosen)]
    return [row for row in rows if row["query_id"] not in chosen], heldout


@dataclass
class TrainingData:
    """The mixed training set (ids, texts on access), the held-out triplets, and per-source row counts."""

    train: object  # datasets.Dataset with the TextLookup transform
    heldout: list[dict]
    sources: dict[str, TrainingSource] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{len(self.train)} training rows, {len(self.heldout)} held-out triplets"]
        lines += [f"{name}: {source.stats.summary()}" for name, source in self.sources.items()]
        return "\n".join(lines)


def prepare_training_data(
    sources: Sequence[tuple[TrainingSource, float]],
    total: int,
    *,
    heldout_per_source: int = CARD_HELDOUT_PER_SOURCE,
    negatives: int = CARD_NEGATIVES,
    false_negative_ratio: float = CARD_FALSE_NEGATIVE_RATIO,
    short_rows: Literal["resample", "drop"] = "resample",
    seed: int = 0,
) -> TrainingData:
    """The card's data pipeline: rows per source (filter, K negatives), held-out split, weighted mix up to ``total``.

    >>> data = prepare_training_data([(msmarco, 50), (books, 25)], total=3_000_000)  # doctest: +SKIP
    >>> train(model, data.train, "./out", eval_rows=data.heldout)  # doctest: +SKIP
    """
    names = [source.name for source, _ in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be distinct, got {names}; give each source a name")
    training, heldout = {}, []
    for source, _ in sources:
        rows = build_id_rows(source, negatives, false_negative_ratio, short_rows, seed)
        training[source.name], held = split_heldout(rows, heldout_per_source, seed)
        heldout.extend(heldout_triplet(row, source) for row in held)
        logger.info("%s: %s; %d held out", source.name, source.stats.summary(), len(held))
    mixed = mix_sources(training, {source.name: weight for source, weight in sources}, total, seed)
    if not mixed:
        raise ValueError("no training rows left after filtering and the held-out split; see the row counts")
    by_name = {source.name: source for source, _ in sources}
    return TrainingData(lazy_training_dataset(mixed, by_name), heldout, by_name)
