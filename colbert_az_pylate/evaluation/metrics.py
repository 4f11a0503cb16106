"""The model card's retrieval metrics over a run, defined as in its two tables and AZ-MIRAGE.

- Averaged over the queries in ``qrels`` that have at least one relevant document (relevance > 0); the others
  are skipped (``skipped_queries`` counts them). A query missing from the run scores zero.
- ``P@k`` = relevant in the top k / k; ``R@k`` = relevant in the top k / all relevant.
- ``NDCG@k``: gain = relevance, discount log2(rank + 1); the ideal ranking uses the true relevant documents.
- ``F1@k`` per query from its P@k and R@k (0 when both are 0), then averaged.
- ``MRR@10``: 1 / rank of the first relevant document within the top 10, else 0.

Documents are ranked by score, highest first; equal scores are broken by document id, so results are
deterministic. A NaN score has no place in that order and is refused (it means a broken model), as is any score
or grade that is not a number. (With one relevant document per query, F1@10 = R@10 × 2/11, as the card's
0.1464 = 0.8054 × 0.1818.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_K_VALUES = (1, 3, 5, 10)
MRR_DEPTH = 10


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def ranked_documents(scores: Mapping[str, float], depth: int) -> list[str]:
    """The ``depth`` best document ids, by score (highest first) then id.

    Parameters
    ----------
    scores : Mapping[str, float]
        Document id → score of one query.
    depth : int
        How many ids to return at most.

    Returns
    -------
    list[str]
        The ranked ids.

    Raises
    ------
    InvalidArgumentError
        When a score is NaN or not a number (no ranking would be deterministic).

    Examples
    --------
    >>> ranked_documents({"d2": 0.5, "d1": 0.9, "d3": 0.5}, depth=3)
    ['d1', 'd2', 'd3']
    """
    for doc, score in scores.items():
        if not _is_number(score):
            raise InvalidArgumentError(f"the score of document {doc!r} is {score!r}; scores must be numbers, not NaN")
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]]


def check_run(run: Run) -> None:
    """Refuse a run that is not query id → {document id: number} or holds a NaN score, naming the entry.

    Examples
    --------
    >>> check_run({"q1": {"d1": float("nan")}})
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: the run scores document 'd1' of query 'q1' NaN; ...
    """
    if not isinstance(run, Mapping):
        raise InvalidArgumentError(f"a run maps query ids to {{document id: score}}, got {type(run).__name__}")
    for query, scores in run.items():
        if not isinstance(scores, Mapping):
            raise InvalidArgumentError(
                f"the run entry of query {query!r} must map document ids to scores, got {type(scores).__name__}"
            )
        for doc, score in scores.items():
            if isinstance(score, numbers.Real) and not isinstance(score, bool) and math.isnan(score):
                raise InvalidArgumentError(
                    f"the run scores document {doc!r} of query {query!r} NaN; NaN has no rank (a model that "
                    "outputs NaN is broken)"
                )
            if not _is_number(score):
                raise InvalidArgumentError(
                    f"the run scores document {doc!r} of query {query!r} {score!r}; scores must be numbers"
                )


def check_qrels(qrels: Qrels) -> None:
    """Refuse qrels that are not query id → {document id: number}, naming the entry.

    Examples
    --------
    >>> check_qrels({"q1": {"d1": "yes"}})
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.DataFormatError: the qrels grade of document 'd1' for query 'q1' is 'yes'; ...
    """
    if not isinstance(qrels, Mapping):
        raise DataFormatError(f"qrels map query ids to {{document id: grade}}, got {type(qrels).__name__}")
    for query, judged in qrels.items():
        if not isinstance(judged, Mapping):
            raise DataFormatError(
                f"the qrels entry of query {query!r} must map document ids to grades, got {type(judged).__name__}"
            )
        for doc, grade in judged.items():
            if not _is_number(grade):
                raise DataFormatError(
                    f"the qrels grade of document {doc!r} for query {query!r} is {grade!r}; grades must be numbers"
                )


def per_query_metrics(
    ranking: list[str], relevance: Mapping[str, int], k_values: Iterable[int] = DEFAULT_K_VALUES
) -> dict[str, float]:
    """Every metric for one query, given its ranked document ids and its relevance judgements.

    Parameters
    ----------
    ranking : list[str]
        Document ids, best first.
    relevance : Mapping[str, int]
        Document id → grade; at least one grade must be positive.
    k_values : Iterable[int], default (1, 3, 5, 10)
        The cut-offs of P@k, R@k, NDCG@k and F1@k.

    Returns
    -------
    dict[str, float]
        ``P@k``, ``R@k``, ``NDCG@k``, ``F1@k`` for each k, and ``MRR@10``.

    Examples
    --------
    >>> per_query_metrics(["d2", "d1"], {"d1": 1}, k_values=(1, 2))["MRR@10"]
    0.5
    """
    relevant = {doc: grade for doc, grade in relevance.items() if grade > 0}
    ideal = sorted(relevant.values(), reverse=True)
    out: dict[str, float] = {}
    for k in k_values:
        top = ranking[:k]
        hits = sum(1 for doc in top if doc in relevant)
        precision, recall = hits / k, hits / len(relevant)
        dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(top))
        idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal[:k]))
        out[f"P@{k}"] = precision
        out[f"R@{k}"] = recall
        out[f"NDCG@{k}"] = dcg / idcg
        out[f"F1@{k}"] = 2 * precision * recall / (precision + recall) if hits else 0.0
    first = next((rank for rank, doc in enumerate(ranking[:MRR_DEPTH], start=1) if doc in relevant), None)
    out[f"MRR@{MRR_DEPTH}"] = 1.0 / first if first else 0.0
    return out


def evaluate_run(run: Run, qrels: Qrels, k_values: Iterable[int] = DEFAULT_K_VALUES) -> dict[str, float]:
    """Mean metrics of ``run`` (query id → {document id: score}) against ``qrels`` (query id → {doc: grade}).

    Parameters
    ----------
    run : Mapping[str, Mapping[str, float]]
        Scores of the retrieved documents per query; a query missing from it scores zero.
    qrels : Mapping[str, Mapping[str, int]]
        Relevance grades per query; queries without a positive grade are skipped.
    k_values : Iterable[int], default (1, 3, 5, 10)
        The cut-offs.

    Returns
    -------
    dict[str, float]
        ``P@k``, ``R@k``, ``NDCG@k``, ``F1@k`` for each k, and ``MRR@10``, averaged over the evaluable queries.

    Raises
    ------
    InvalidArgumentError
        On bad ``k_values``, an empty run, a NaN or non-numeric score.
    DataFormatError
        On qrels without any relevant document, or with a non-numeric grade.

    Examples
    --------
    >>> evaluate_run({"q1": {"d1": 0.9, "d2": 0.5}}, {"q1": {"d1": 1}}, k_values=(1,))
    {'P@1': 1.0, 'R@1': 1.0, 'NDCG@1': 1.0, 'F1@1': 1.0, 'MRR@10': 1.0}
    >>> evaluate_run({"q1": {"d1": 0.2, "d2": 0.5}, "q2": {"d3": 1.0}}, {"q1": {"d1": 1}, "q2": {"d4": 1}})["MRR@10"]
    0.25
    """
    k_values = tuple(k_values)
    if not k_values or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in k_values):
        raise InvalidArgumentError(f"k_values must be positive integers, got {k_values}")
    check_run(run)
    check_qrels(qrels)
    if not run:
        raise InvalidArgumentError("the run is empty: it has no query with retrieved documents")
    evaluable = evaluable_qrels(qrels)
    if not evaluable:
        raise DataFormatError("no query in qrels has a relevant document (relevance > 0); nothing to evaluate")
    depth = max(max(k_values), MRR_DEPTH)
    totals: dict[str, float] = {}
    for query, judged in evaluable.items():
        ranking = ranked_documents(run.get(query, {}), depth)
        for name, value in per_query_metrics(ranking, judged, k_values).items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: value / len(evaluable) for name, value in totals.items()}


def _has_relevant(judged: Mapping[str, int]) -> bool:
    return any(grade > 0 for grade in judged.values())


def evaluable_qrels(qrels: Qrels) -> dict[str, Mapping[str, int]]:
    """The queries of ``qrels`` with at least one relevant document: the ones metrics average over.

    Examples
    --------
    >>> evaluable_qrels({"q1": {"d1": 1}, "q2": {"d2": 0}})
    {'q1': {'d1': 1}}
    """
    return {query: judged for query, judged in qrels.items() if _has_relevant(judged)}


def skipped_queries(qrels: Qrels) -> list[str]:
    """Query ids in ``qrels`` without any relevant document: reported, never averaged in.

    Examples
    --------
    >>> skipped_queries({"q1": {"d1": 1}, "q2": {"d2": 0}, "q3": {}})
    ['q2', 'q3']
    """
    return [query for query, judged in qrels.items() if not _has_relevant(judged)]
