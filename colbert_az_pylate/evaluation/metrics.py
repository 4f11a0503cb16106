"""The model card's retrieval metrics over a run, defined as in its two tables and AZ-MIRAGE.

- Averaged over the queries in ``qrels`` that have at least one relevant document (relevance > 0); the others
  are skipped (``skipped_queries`` counts them). A query missing from the run scores zero.
- ``P@k`` = relevant in the top k / k; ``R@k`` = relevant in the top k / all relevant.
- ``NDCG@k``: gain = relevance, discount log2(rank + 1); the ideal ranking uses the true relevant documents.
- ``F1@k`` per query from its P@k and R@k (0 when both are 0), then averaged.
- ``MRR@10``: 1 / rank of the first relevant document within the top 10, else 0.

Documents are ranked by score, highest first; equal scores are broken by document id, so results are
deterministic. (With one relevant document per query, F1@10 = R@10 × 2/11, as the card's 0.1464 = 0.8054 × 0.1818.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_K_VALUES = (1, 3, 5, 10)
MRR_DEPTH = 10


def ranked_documents(scores: Mapping[str, float], depth: int) -> list[str]:
    """The ``depth`` best document ids, by score then id."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]]


def per_query_metrics(
    ranking: list[str], relevance: Mapping[str, int], k_values: Iterable[int] = DEFAULT_K_VALUES
) -> dict[str, float]:
    """Every metric for one query, given its ranked document ids and its relevance judgements.

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

    Keys: ``P@k``, ``R@k``, ``NDCG@k``, ``F1@k`` for each k, and ``MRR@10``.

    >>> evaluate_run({"q1": {"d1": 0.9, "d2": 0.5}}, {"q1": {"d1": 1}}, k_values=(1,))
    {'P@1': 1.0, 'R@1': 1.0, 'NDCG@1': 1.0, 'F1@1': 1.0, 'MRR@10': 1.0}
    """
    k_values = tuple(k_values)
    if not k_values or any(not isinstance(k, int) or k < 1 for k in k_values):
        raise ValueError(f"k_values must be positive integers, got {k_values}")
    if not run:
        raise ValueError("the run is empty: it has no query with retrieved documents")
    evaluable = evaluable_qrels(qrels)
    if not evaluable:
        raise ValueError("no query in qrels has a relevant document (relevance > 0); nothing to evaluate")
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
    """The queries of ``qrels`` with at least one relevant document: the ones metrics average over."""
    return {query: judged for query, judged in qrels.items() if _has_relevant(judged)}


def skipped_queries(qrels: Qrels) -> list[str]:
    """Query ids in ``qrels`` without any relevant document: reported, never averaged in."""
    return [query for query, judged in qrels.items() if not _has_relevant(judged)]
