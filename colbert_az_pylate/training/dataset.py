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

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError
from colbert_az_pylate.training.data import (
    CARD_FALSE_NEGATIVE_RATIO,
    CARD_NEGATIVES,
    TrainingSource,
    build_id_rows,
    mix_sources,
    row_texts,
)

logger = logging.getLogger(__name__)

CARD_HELDOUT_PER_SOURCE = 1500  # held-out triplets per native source
SMALL_SOURCE_SHARE = 0.1  # by default a source with fewer than 10 × 1,500 queries holds out 10 % of them


class TextLookup:
    """The ``set_transform`` of the training set: id rows in, ``query``/``documents``/``scores`` columns out.

    Only those three columns come out, in that order: the collator tokenizes every column it is given, and the loss
    takes the queries first.

    Parameters
    ----------
    sources
        The sources by name, whose tables hold the texts.

    Examples
    --------
    >>> from colbert_az_pylate.training.data import PRESETS
    >>> source = TrainingSource("s", [], {"q": "sual"}, {"p": "cavab"}, PRESETS["LocalDoc/msmarco-az-reranked"])
    >>> TextLookup({"s": source})({"source": ["s"], "query_id": ["q"], "document_ids": [["p"]], "scores": [[1.0]]})
    {'query': ['sual'], 'documents': [['cavab']], 'scores': [[1.0]]}
    """

    def __init__(self, sources: Mapping[str, TrainingSource]) -> None:
        self.sources = dict(sources)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        queries, documents = [], []
        for name, query_id, document_ids in zip(batch["source"], batch["query_id"], batch["document_ids"], strict=True):
            query, texts = row_texts({"query_id": query_id, "document_ids": document_ids}, self.sources[name])
            queries.append(query)
            documents.append(texts)
        return {"query": queries, "documents": documents, "scores": batch["scores"]}


def lazy_training_dataset(id_rows: Iterable[Mapping], sources: Mapping[str, TrainingSource]):
    """A ``datasets.Dataset`` of id rows (from :func:`build_id_rows`) that yields texts when read.

    Parameters
    ----------
    id_rows
        Rows ``{"query_id", "document_ids", "scores", "source"}``.
    sources
        The sources by name that the rows name.

    Returns
    -------
    datasets.Dataset
        Ids and scores stored; each read gives ``{"query", "documents", "scores"}`` (see :class:`TextLookup`).

    Examples
    --------
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
        raise InvalidArgumentError(f"rows name sources {sorted(unknown)} that are not given; given: {sorted(sources)}")
    return Dataset.from_list(rows, features=features).with_transform(TextLookup(sources))


def heldout_triplet(row: Mapping, source: TrainingSource) -> dict:
    """The ``{"query", "positive", "negatives", "source"}`` triplet row of an id row, for the held-out evaluator.

    Examples
    --------
    >>> from colbert_az_pylate.training.data import PRESETS
    >>> schema = PRESETS["LocalDoc/msmarco-az-reranked"]
    >>> source = TrainingSource("s", [], {"q": "sual"}, {"p": "cavab", "n": "başqa"}, schema)
    >>> heldout_triplet({"query_id": "q", "document_ids": ["p", "n"]}, source)
    {'query': 'sual', 'positive': 'cavab', 'negatives': ['başqa'], 'source': 's'}
    """
    query, (positive, *negatives) = row_texts(row, source)
    return {"query": query, "positive": positive, "negatives": negatives, "source": source.name}


def split_heldout(id_rows: Iterable[Mapping], size: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of one source: ``size`` queries held out, one row each, none left in training.

    Held-out rows are drawn among rows whose documents are distinct (not padded by resampling), so each ranks one
    positive among K different hard negatives; every other row of a held-out query leaves the training set.

    Parameters
    ----------
    id_rows
        The source's id rows.
    size
        Queries to hold out (fewer when fewer queries have a row of distinct documents; a warning says so).
    seed
        Seed of the choice.

    Returns
    -------
    tuple
        (training rows, held-out rows).

    Examples
    --------
    >>> rows = [{"query_id": f"q{i % 5}", "document_ids": ["p", f"n{i}"]} for i in range(10)]
    >>> train, heldout = split_heldout(rows, size=2)
    >>> len(heldout), {r["query_id"] for r in heldout} & {r["query_id"] for r in train}
    (2, set())
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgumentError(f"the held-out size must be a whole number >= 0, got {size!r}")
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


def heldout_size(queries: int, heldout_per_source: int | None) -> tuple[int, str]:
    """How many of a source's ``queries`` to hold out, and why, in words.

    ``heldout_per_source=None`` is the default policy: the card's 1,500, but 10 % of the queries (rounded down) for
    a source with fewer than 10 × 1,500, so that a small source still trains on 90 % of its rows. A number is taken
    as is.

    Parameters
    ----------
    queries
        Distinct queries of the source (after filtering).
    heldout_per_source
        Held-out queries asked for, or None for the default policy.

    Returns
    -------
    tuple
        (queries to hold out, a phrase for the data summary).

    Examples
    --------
    >>> heldout_size(40_000, None)
    (1500, '1500 queries held out')
    >>> heldout_size(120, None)
    (12, '12 queries held out (10 % of its 120 queries: fewer than 10 × 1500)')
    >>> heldout_size(120, 30)
    (30, '30 queries held out')
    """
    if heldout_per_source is not None:
        if isinstance(heldout_per_source, bool) or not isinstance(heldout_per_source, int) or heldout_per_source < 0:
            raise InvalidArgumentError(
                f"heldout_per_source must be a whole number >= 0 (or None: 1500, 10 % of a small source), "
                f"got {heldout_per_source!r}"
            )
        return heldout_per_source, f"{heldout_per_source} queries held out"
    if queries >= CARD_HELDOUT_PER_SOURCE / SMALL_SOURCE_SHARE:
        return CARD_HELDOUT_PER_SOURCE, f"{CARD_HELDOUT_PER_SOURCE} queries held out"
    size = int(queries * SMALL_SOURCE_SHARE)
    share = f"{SMALL_SOURCE_SHARE:.0%}".replace("%", " %")
    limit = f"fewer than {int(1 / SMALL_SOURCE_SHARE)} × {CARD_HELDOUT_PER_SOURCE}"
    return size, f"{size} queries held out ({share} of its {queries} queries: {limit})"


@dataclass
class TrainingData:
    """The mixed training set (ids, texts on access), the held-out triplets, and per-source row counts.

    Parameters
    ----------
    train
        The ``datasets.Dataset`` of id rows with the :class:`TextLookup` transform.
    heldout
        Held-out triplet rows ``{"query", "positive", "negatives", "source"}``.
    sources
        The sources by name (their ``stats`` hold the row counts).
    heldout_notes
        Per source, how many queries were held out and why (see :func:`heldout_size`).

    Examples
    --------
    >>> from colbert_az_pylate.training.data import PRESETS
    >>> source = TrainingSource("books", [], {}, {}, PRESETS["LocalDoc/msmarco-az-reranked"])
    >>> print(TrainingData([{"query_id": "q"}] * 9, [], {"books": source}, {"books": "1 queries held out"}).summary())
    9 training rows, 0 held-out triplets
    books: no rows; 1 queries held out
    """

    train: object  # datasets.Dataset with the TextLookup transform
    heldout: list[dict]
    sources: dict[str, TrainingSource] = field(default_factory=dict)
    heldout_notes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """Rows in all, then one line per source: its row counts and its held-out split."""
        lines = [f"{len(self.train)} training rows, {len(self.heldout)} held-out triplets"]
        for name, source in self.sources.items():
            note = self.heldout_notes.get(name)
            lines.append(f"{name}: {source.stats.summary()}" + (f"; {note}" if note else ""))
        return "\n".join(lines)


def prepare_training_data(
    sources: Sequence[tuple[TrainingSource, float]],
    total: int,
    *,
    heldout_per_source: int | None = None,
    negatives: int = CARD_NEGATIVES,
    false_negative_ratio: float = CARD_FALSE_NEGATIVE_RATIO,
    short_rows: Literal["resample", "drop"] = "resample",
    seed: int = 0,
) -> TrainingData:
    """The card's data pipeline: rows per source (filter, K negatives), held-out split, weighted mix up to ``total``.

    Parameters
    ----------
    sources
        (source, weight) pairs; names must be distinct.
    total
        N, training rows wanted in all (mixed by weight).
    heldout_per_source
        Held-out queries per source. Default (None): the card's 1,500, or 10 % of the queries of a source with
        fewer than 15,000 (the summary says so). A number is taken as is; one that leaves a source without a
        training row is an error naming it.
    negatives, false_negative_ratio, short_rows, seed
        As in :func:`~colbert_az_pylate.training.data.build_id_rows`.

    Returns
    -------
    TrainingData
        ``train`` for :func:`~colbert_az_pylate.training.trainer.train`, ``heldout`` for its ``eval_rows``.

    Examples
    --------
    >>> from colbert_az_pylate.training.data import PRESETS
    >>> schema = PRESETS["LocalDoc/azerbaijani_books_retriever_corpus-reranked"]
    >>> corpus = {f"p{i}": f"mətn {i}" for i in range(30)}
    >>> pairs = [{"query_id": f"q{i}", "passage_id": f"p{i}", "pos_score": 9.0,
    ...           **{f"neg_{k}_id": f"p{(i + k) % 30}" for k in (1, 2)}, "neg_1_score": 1.0, "neg_2_score": 2.0}
    ...          for i in range(20)]
    >>> books = TrainingSource("books", pairs, {f"q{i}": f"sual {i}" for i in range(20)}, corpus, schema)
    >>> print(prepare_training_data([(books, 1.0)], total=100, negatives=2).summary())
    18 training rows, 2 held-out triplets
    books: rows in 20, rows out 20; 2 queries held out (10 % of its 20 queries: fewer than 10 × 1500)
    """
    names = [source.name for source, _ in sources]
    if not names:
        raise InvalidArgumentError("no sources given; pass [(source, weight), …]")
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"source names must be distinct, got {names}; give each source a name")
    training, heldout, notes = {}, [], {}
    for source, weight in sources:
        rows = list(build_id_rows(source, negatives, false_negative_ratio, short_rows, seed))
        if not rows:
            raise DataFormatError(
                f"source {source.name!r} gives no training row after filtering ({source.stats.summary()}); "
                "check its teacher scores and texts, or leave it out"
            )
        queries = len({row["query_id"] for row in rows})
        size, notes[source.name] = heldout_size(queries, heldout_per_source)
        training[source.name], held = split_heldout(rows, size, seed)
        if not training[source.name] and weight > 0:
            raise InvalidArgumentError(
                f"heldout_per_source={heldout_per_source} holds out every one of the {queries} queries of source "
                f"{source.name!r}, leaving no training row; lower heldout_per_source, or leave it unset "
                f"(10 % of a source with fewer than {int(CARD_HELDOUT_PER_SOURCE / SMALL_SOURCE_SHARE)} queries)"
            )
        if len(held) < size:
            notes[source.name] = f"{len(held)} queries held out (asked for {size}; only {len(held)} have a full row)"
        heldout.extend(heldout_triplet(row, source) for row in held)
        logger.info("%s: %s; %s", source.name, source.stats.summary(), notes[source.name])
    mixed = mix_sources(training, {source.name: weight for source, weight in sources}, total, seed)
    by_name = {source.name: source for source, _ in sources}
    return TrainingData(lazy_training_dataset(mixed, by_name), heldout, by_name, notes)
