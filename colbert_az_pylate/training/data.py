"""Training rows from reranked data sets: column mapping presets, false-negative filter, K negatives, mixing.

A row is ``{"query": str, "documents": [positive, negative_1 … negative_K], "scores": [teacher scores]}``, the
format pylate's ``ColBERTCollator`` and :class:`~colbert_az_pylate.losses.DistillationInfoNCE` consume (documents
are flattened batch × (1 + K), the positive first). Rows are built lazily from id columns, so the corpus text is
read per row and never held as a whole.

Documented policies (counted in :class:`RowStats`, never silent):

- a negative whose teacher score exceeds ``false_negative_ratio`` × the positive's is dropped (card: 0.9),
  applied literally to the scores as given;
- a row whose positive has no finite teacher score, or whose query or positive text is empty or unknown, is dropped;
  so is a negative with a non-finite score, an empty or unknown text;
- a row left with fewer than K negatives is padded by resampling its negatives (``"resample"``, the default) or
  dropped (``"drop"``); a row with no negative left is always dropped.
"""

from __future__ import annotations

import math
import numbers
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError

CARD_NEGATIVES = 8  # K, hard negatives per query
CARD_FALSE_NEGATIVE_RATIO = 0.9  # drop a negative scored above 0.9 × the positive


@dataclass(frozen=True)
class SourceSchema:
    """Where the ids, texts and teacher scores of a reranked data set live.

    Parameters
    ----------
    corpus_id, corpus_text
        Id and text columns of the ``corpus_config`` table.
    query_id, query_text
        Id and text columns of the queries (of ``queries_config``, or of the pairs table when it is None).
    positive_id, positive_score
        Columns of the pairs table with the positive's id and its teacher score.
    negative_id, negative_score
        Patterns with ``{k}`` for the negative's number (``"neg_{k}_id"``); every column that matches is used,
        whatever the count.
    corpus_config
        Name of the corpus config (default ``"corpus"``).
    queries_config
        Name of the queries config (default ``"queries"``); None when the query text is a column of the pairs table.
    pairs_config
        Name of the config with one row per query, its positive and its scored negatives (default
        ``"hard_negatives"``).

    Examples
    --------
    >>> schema = SourceSchema("pid", "passage", "qid", "query", "pos_pid", "pos_score", "neg_{k}_pid", "neg_{k}_score")
    >>> schema.negative_columns(["qid", "neg_2_pid", "neg_1_pid", "neg_1_score", "neg_2_score"])
    [('neg_1_pid', 'neg_1_score'), ('neg_2_pid', 'neg_2_score')]
    """

    corpus_id: str
    corpus_text: str
    query_id: str
    query_text: str
    positive_id: str
    positive_score: str
    negative_id: str
    negative_score: str
    corpus_config: str = "corpus"
    queries_config: str | None = "queries"  # None: the query text is a column of the pairs table
    pairs_config: str = "hard_negatives"

    def negative_columns(self, columns: Iterable[str]) -> list[tuple[str, str]]:
        """(id column, score column) pairs of the negatives present among ``columns``, in numeric order.

        A negative id column without its score column is a :class:`~colbert_az_pylate.errors.DataFormatError`.
        """
        pattern = re.compile("^" + re.escape(self.negative_id).replace(re.escape("{k}"), r"(\d+)") + "$")
        found = sorted((int(m.group(1)), name) for name in columns if (m := pattern.match(name)))
        columns = set(columns)
        pairs = [(name, self.negative_score.format(k=k)) for k, name in found]
        missing = [score for _, score in pairs if score not in columns]
        if missing:
            raise DataFormatError(
                f"negative score columns {missing[:3]} are missing; check the schema's negative_score"
            )
        return pairs


#: Column mappings of the card's LocalDoc data sets, by hub id (see :func:`resolve_schema`).
PRESETS: dict[str, SourceSchema] = {
    # configs: corpus (pid, passage), queries (qid, query), triplets (qid, pos_pid, …, neg_{k}_pid, …_reranker)
    "LocalDoc/msmarco-az-reranked": SourceSchema(
        "pid",
        "passage",
        "qid",
        "query",
        "pos_pid",
        "pos_score_reranker",
        "neg_{k}_pid",
        "neg_{k}_score_reranker",
        pairs_config="triplets",
    ),
    # configs: corpus (passage_id, content), queries (query_id, passage_id, query, query_type), hard_negatives
    "LocalDoc/azerbaijani_books_retriever_corpus-reranked": SourceSchema(
        "passage_id", "content", "query_id", "query", "passage_id", "pos_score", "neg_{k}_id", "neg_{k}_score"
    ),
    # configs: corpus (chunk_id, law_id, law_title, passage), hard_negatives (query_id, chunk_id, pos_score, …);
    # the query text column is assumed to be `query` beside query_id
    "LocalDoc/azerbaijan_legislation_queries_passages": SourceSchema(
        "chunk_id",
        "passage",
        "query_id",
        "query",
        "chunk_id",
        "pos_score",
        "neg_{k}_id",
        "neg_{k}_score",
        queries_config=None,
    ),
}


def resolve_schema(schema: SourceSchema | str) -> SourceSchema:
    """The schema itself, or the preset of that name: the one place presets are looked up.

    Parameters
    ----------
    schema
        A :class:`SourceSchema`, or the name of a preset (a key of :data:`PRESETS`).

    Returns
    -------
    SourceSchema

    Examples
    --------
    >>> resolve_schema("LocalDoc/msmarco-az-reranked").pairs_config
    'triplets'
    >>> resolve_schema("LocalDoc/nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: unknown preset 'LocalDoc/nope'; known presets: ...
    """
    if isinstance(schema, SourceSchema):
        return schema
    if schema not in PRESETS:
        raise InvalidArgumentError(
            f"unknown preset {schema!r}; known presets: {', '.join(PRESETS)} (or give a schema: a column mapping)"
        )
    return PRESETS[schema]


@dataclass
class RowStats:
    """What building the rows of one source kept, filtered, padded and dropped (counts, filled in as rows are read).

    Attributes
    ----------
    rows_in, rows_out
        Pair rows read, training rows given.
    false_negatives_removed
        Negatives scored above ``false_negative_ratio`` × the positive.
    negatives_without_score, negatives_without_text
        Negatives left out: a NaN, infinite or missing teacher score; an empty or unknown text.
    rows_padded
        Rows with fewer than K negatives left, padded by resampling them.
    rows_dropped_short, rows_dropped_no_positive_score, rows_dropped_no_text
        Rows dropped: no (or, with ``short_rows="drop"``, too few) negatives left; a positive without a finite
        score; an empty or unknown query or positive text.

    Examples
    --------
    >>> RowStats(rows_in=3, rows_out=2, rows_dropped_no_text=1).summary()
    'rows in 3, rows out 2, rows dropped no text 1'
    """

    rows_in: int = 0
    rows_out: int = 0
    false_negatives_removed: int = 0
    negatives_without_score: int = 0
    negatives_without_text: int = 0
    rows_padded: int = 0
    rows_dropped_short: int = 0
    rows_dropped_no_positive_score: int = 0
    rows_dropped_no_text: int = 0

    def summary(self) -> str:
        """The non-zero counts on one line."""
        parts = [f"{name.replace('_', ' ')} {value}" for name, value in vars(self).items() if value]
        return ", ".join(parts) or "no rows"


@dataclass
class TrainingSource:
    """One data set: its pair rows, its query and corpus texts by id, and its schema.

    Parameters
    ----------
    name
        Distinct name of the source (rows and held-out triplets carry it).
    pairs
        Iterable of pair rows (dicts with the schema's pair columns).
    queries
        Query texts by id (a mapping; :class:`~colbert_az_pylate.training.sources.TextTable` over a data set).
    corpus
        Document texts by id.
    schema
        The column mapping.
    stats
        Row counts, filled in by :func:`build_id_rows`.

    Examples
    --------
    >>> source = TrainingSource("books", [], {"q": "sual"}, {"p": "cavab"}, PRESETS["LocalDoc/msmarco-az-reranked"])
    >>> row_texts({"query_id": "q", "document_ids": ["p"]}, source)
    ('sual', ['cavab'])
    """

    name: str
    pairs: Iterable[Mapping]
    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    schema: SourceSchema
    stats: RowStats = field(default_factory=RowStats)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _score(value) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _text(table: Mapping[str, str], key) -> str | None:
    text = table.get(str(key)) if key is not None else None
    return text if text and text.strip() else None


def build_id_rows(
    source: TrainingSource,
    negatives: int = CARD_NEGATIVES,
    false_negative_ratio: float = CARD_FALSE_NEGATIVE_RATIO,
    short_rows: Literal["resample", "drop"] = "resample",
    seed: int = 0,
) -> Iterator[dict]:
    """Rows ``{"query_id", "document_ids", "scores", "source"}`` of ``source`` with K = ``negatives``, lazily.

    Texts are looked up only to check that they exist and are not empty; rows hold ids (see :func:`row_texts`).
    Filtered, padded and dropped rows are counted in ``source.stats`` (the module docstring gives the policies).

    Parameters
    ----------
    source
        The data set.
    negatives
        K, negatives per row (card: 8), at least 1.
    false_negative_ratio
        A negative scored above this × the positive's teacher score is dropped (card: 0.9).
    short_rows
        ``"resample"`` (default): a row with fewer than K negatives left is padded by resampling them;
        ``"drop"``: it is dropped.
    seed
        Seed of the negative sampling.

    Returns
    -------
    Iterator[dict]
        The id rows, the positive first.

    Examples
    --------
    >>> schema = PRESETS["LocalDoc/azerbaijani_books_retriever_corpus-reranked"]
    >>> pairs = [{"query_id": "q", "passage_id": "p", "pos_score": 5.0, "neg_1_id": "n", "neg_1_score": 1.0}]
    >>> source = TrainingSource("books", pairs, {"q": "sual"}, {"p": "cavab", "n": "başqa"}, schema)
    >>> next(build_id_rows(source, negatives=1))
    {'query_id': 'q', 'document_ids': ['p', 'n'], 'scores': [5.0, 1.0], 'source': 'books'}
    """
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1:
        raise InvalidArgumentError(f"negatives must be a whole number of at least 1, got {negatives!r}")
    if short_rows not in ("resample", "drop"):
        raise InvalidArgumentError(f"short_rows must be 'resample' or 'drop', got {short_rows!r}")
    rng = random.Random(seed)
    schema, stats = source.schema, source.stats
    negative_columns = None
    for pair in source.pairs:
        stats.rows_in += 1
        if negative_columns is None:
            negative_columns = schema.negative_columns(pair.keys())
            unknown = {schema.query_id, schema.positive_id, schema.positive_score} - set(pair.keys())
            if unknown:
                raise DataFormatError(
                    f"{source.name}: columns {sorted(unknown)} are missing; rows have {sorted(pair)[:8]}…"
                )
        positive_score = _score(pair[schema.positive_score])
        if positive_score is None:
            stats.rows_dropped_no_positive_score += 1
            continue
        query_id, positive_id = str(pair[schema.query_id]), str(pair[schema.positive_id])
        if _text(source.queries, query_id) is None or _text(source.corpus, positive_id) is None:
            stats.rows_dropped_no_text += 1
            continue
        candidates = []
        for id_column, score_column in negative_columns:
            if pair.get(id_column) is None:
                continue
            score = _score(pair.get(score_column))
            if score is None:
                stats.negatives_without_score += 1
            elif _text(source.corpus, pair[id_column]) is None:
                stats.negatives_without_text += 1
            elif score > false_negative_ratio * positive_score:
                stats.false_negatives_removed += 1
            else:
                candidates.append((str(pair[id_column]), score))
        if not candidates or (len(candidates) < negatives and short_rows == "drop"):
            stats.rows_dropped_short += 1
            continue
        if len(candidates) >= negatives:
            chosen = rng.sample(candidates, negatives)
        else:
            stats.rows_padded += 1
            chosen = candidates + rng.choices(candidates, k=negatives - len(candidates))
        stats.rows_out += 1
        yield {
            "query_id": query_id,
            "document_ids": [positive_id, *(doc for doc, _ in chosen)],
            "scores": [positive_score, *(score for _, score in chosen)],
            "source": source.name,
        }


def row_texts(row: Mapping, source: TrainingSource) -> tuple[str, list[str]]:
    """The query text and the document texts of an id row: the one place ids become texts.

    Parameters
    ----------
    row
        An id row (``query_id``, ``document_ids``), as :func:`build_id_rows` yields.
    source
        The source the row comes from.

    Returns
    -------
    tuple
        (query text, [document texts]), the positive first.

    Examples
    --------
    >>> schema = PRESETS["LocalDoc/msmarco-az-reranked"]
    >>> source = TrainingSource("s", [], {"q": "sual"}, {"p": "cavab", "n": "başqa"}, schema)
    >>> row_texts({"query_id": "q", "document_ids": ["p", "n"]}, source)
    ('sual', ['cavab', 'başqa'])
    """
    return source.queries[row["query_id"]], [source.corpus[doc] for doc in row["document_ids"]]


def resolve_texts(row: Mapping, source: TrainingSource) -> dict:
    """The ``{"query", "documents", "scores", "source"}`` row of an id row of ``source`` (see :func:`row_texts`).

    Examples
    --------
    >>> source = TrainingSource("s", [], {"q": "sual"}, {"p": "cavab"}, PRESETS["LocalDoc/msmarco-az-reranked"])
    >>> resolve_texts({"query_id": "q", "document_ids": ["p"], "scores": [1.0], "source": "s"}, source)
    {'query': 'sual', 'documents': ['cavab'], 'scores': [1.0], 'source': 's'}
    """
    query, documents = row_texts(row, source)
    return {"query": query, "documents": documents, "scores": list(row["scores"]), "source": row["source"]}


def build_training_rows(source: TrainingSource, **options) -> Iterator[dict]:
    """Rows ``{"query", "documents", "scores", "source"}`` of ``source``, lazily: :func:`build_id_rows` with texts.

    Parameters
    ----------
    source
        The data set.
    **options
        ``negatives``, ``false_negative_ratio``, ``short_rows``, ``seed``, as :func:`build_id_rows` takes them.

    Returns
    -------
    Iterator[dict]
        Text rows, the format pylate's ``ColBERTCollator`` and :func:`~colbert_az_pylate.training.trainer.train`
        take.

    Examples
    --------
    >>> schema = PRESETS["LocalDoc/azerbaijani_books_retriever_corpus-reranked"]
    >>> pairs = [{"query_id": "q", "passage_id": "p", "pos_score": 5.0, "neg_1_id": "n", "neg_1_score": 1.0}]
    >>> source = TrainingSource("books", pairs, {"q": "sual"}, {"p": "cavab", "n": "başqa"}, schema)
    >>> next(build_training_rows(source, negatives=1))["documents"]
    ['cavab', 'başqa']
    """
    for row in build_id_rows(source, **options):
        yield resolve_texts(row, source)


def mix_sources(
    sources: Mapping[str, Iterable[dict]], weights: Mapping[str, float], total: int, seed: int = 0
) -> list[dict]:
    """Up to ``total`` rows drawn from each source in proportion to its weight, shuffled with ``seed``.

    A source with fewer rows than its share gives what it has (the shortfall is not redistributed).

    Parameters
    ----------
    sources
        Rows by source name (any iterables; each is read once, memory bounded by its share).
    weights
        Weight by source name (non-negative, not all zero; normalised).
    total
        N, rows wanted in all.
    seed
        Seed of the sampling and the shuffle.

    Returns
    -------
    list[dict]
        The mixed rows.

    Examples
    --------
    >>> rows = mix_sources({"a": [{"i": i} for i in range(10)], "b": [{"i": i} for i in range(10)]},
    ...                    {"a": 0.75, "b": 0.25}, total=8)
    >>> len(rows)
    8
    """
    unknown = set(weights) - set(sources)
    if unknown or not weights:
        raise InvalidArgumentError(
            f"weights name sources that are not given: {sorted(unknown)}" if unknown else "no weights"
        )
    if not all(_is_number(w) and w >= 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise InvalidArgumentError(f"weights must be non-negative numbers, not all zero; got {dict(weights)}")
    if not _is_number(total) or total != int(total) or total < 1:
        raise InvalidArgumentError(f"total must be a whole number of rows of at least 1, got {total!r}")
    total = int(total)
    norm = sum(weights.values())
    quotas = {name: round(total * w / norm) for name, w in weights.items()}
    rng = random.Random(seed)
    mixed: list[dict] = []
    for name, quota in quotas.items():
        reservoir: list[dict] = []
        for seen, row in enumerate(sources[name]):  # reservoir sampling: one pass, memory bounded by the quota
            if len(reservoir) < quota:
                reservoir.append(row)
            else:
                slot = rng.randint(0, seen)
                if slot < quota:
                    reservoir[slot] = row
        mixed.extend(reservoir)
    rng.shuffle(mixed)
    return mixed
