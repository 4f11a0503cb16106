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
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

CARD_NEGATIVES = 8  # K, hard negatives per query
CARD_FALSE_NEGATIVE_RATIO = 0.9  # drop a negative scored above 0.9 × the positive


@dataclass(frozen=True)
class SourceSchema:
    """Where the ids, texts and teacher scores of a reranked data set live.

    ``negative_id`` and ``negative_score`` are patterns with ``{k}`` for the negative's number; every column that
    matches is used, whatever the count.
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
        """(id column, score column) pairs of the negatives present, in numeric order."""
        pattern = re.compile("^" + re.escape(self.negative_id).replace(re.escape("{k}"), r"(\d+)") + "$")
        found = sorted((int(m.group(1)), name) for name in columns if (m := pattern.match(name)))
        columns = set(columns)
        pairs = [(name, self.negative_score.format(k=k)) for k, name in found]
        missing = [score for _, score in pairs if score not in columns]
        if missing:
            raise ValueError(f"negative score columns {missing[:3]} are missing; check the schema's negative_score")
        return pairs


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


@dataclass
class RowStats:
    """What building the rows kept, filtered, padded and dropped."""

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
        parts = [f"{name.replace('_', ' ')} {value}" for name, value in vars(self).items() if value]
        return ", ".join(parts) or "no rows"


@dataclass
class TrainingSource:
    """One data set: its pair rows (iterable of dicts), query texts and corpus texts by id, and its schema."""

    name: str
    pairs: Iterable[Mapping]
    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    schema: SourceSchema
    stats: RowStats = field(default_factory=RowStats)


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

    Texts are looked up only to check that they exist and are not empty; rows hold ids (see :func:`resolve_texts`).

    >>> schema = PRESETS["LocalDoc/azerbaijani_books_retriever_corpus-reranked"]
    >>> pairs = [{"query_id": "q", "passage_id": "p", "pos_score": 5.0, "neg_1_id": "n", "neg_1_score": 1.0}]
    >>> source = TrainingSource("books", pairs, {"q": "sual"}, {"p": "cavab", "n": "başqa"}, schema)
    >>> next(build_id_rows(source, negatives=1))
    {'query_id': 'q', 'document_ids': ['p', 'n'], 'scores': [5.0, 1.0], 'source': 'books'}
    """
    if negatives < 1:
        raise ValueError(f"negatives must be at least 1, got {negatives}")
    if short_rows not in ("resample", "drop"):
        raise ValueError(f"short_rows must be 'resample' or 'drop', got {short_rows!r}")
    rng = random.Random(seed)
    schema, stats = source.schema, source.stats
    negative_columns = None
    for pair in source.pairs:
        stats.rows_in += 1
        if negative_columns is None:
            negative_columns = schema.negative_columns(pair.keys())
            unknown = {schema.query_id, schema.positive_id, schema.positive_score} - set(pair.keys())
            if unknown:
                raise ValueError(f"{source.name}: columns {sorted(unknown)} are missing; rows have {sorted(pair)[:8]}…")
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


def resolve_texts(row: Mapping, source: TrainingSource) -> dict:
    """The ``{"query", "documents", "scores", "source"}`` row of an id row of ``source``."""
    return {
        "query": source.queries[row["query_id"]],
        "documents": [source.corpus[doc] for doc in row["document_ids"]],
        "scores": list(row["scores"]),
        "source": row["source"],
    }


def build_training_rows(source: TrainingSource, **options) -> Iterator[dict]:
    """Rows ``{"query", "documents", "scores", "source"}`` of ``source``, lazily; ``options`` as :func:`build_id_rows`.

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

    >>> rows = mix_sources({"a": [{"i": i} for i in range(10)], "b": [{"i": i} for i in range(10)]},
    ...                    {"a": 0.75, "b": 0.25}, total=8)
    >>> len(rows)
    8
    """
    unknown = set(weights) - set(sources)
    if unknown or not weights:
        raise ValueError(f"weights name sources that are not given: {sorted(unknown)}" if unknown else "no weights")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
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
