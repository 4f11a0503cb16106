"""Held-out triplet protocol (the card's first table): rank each positive among its hard negatives."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from colbert_az_pylate.evaluation.metrics import evaluate_run
from colbert_az_pylate.scores import maxsim_scores, pad_documents

TRIPLET_METRICS = ("R@1", "R@3", "MRR@10", "NDCG@10")


def _validate(row: Mapping, index: int) -> None:
    for key in ("query", "positive", "negatives"):
        if key not in row:
            raise ValueError(f"triplet row {index} has no {key!r} column; rows need query, positive, negatives")
    if not str(row["query"]).strip() or not str(row["positive"]).strip():
        raise ValueError(f"triplet row {index} has an empty query or positive")
    if not row["negatives"]:
        raise ValueError(f"triplet row {index} has no negatives; the protocol ranks the positive among them")


def triplet_run(model, rows: Sequence[Mapping], batch_size: int = 32, show_progress_bar: bool = True):
    """Score every row's positive and negatives with ``model`` (a pylate ColBERT); returns (run, qrels).

    The positive of row ``i`` is document ``"pos"`` of query ``str(i)``, its negatives ``"neg{j}"``.
    """
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for index, row in enumerate(rows):
        _validate(row, index)
    chunk = 64  # rows encoded per call: pylate's encode has a large fixed cost per call
    for start in tqdm(range(0, len(rows), chunk), desc="Ranking triplets", disable=not show_progress_bar):
        block = rows[start : start + chunk]
        queries = model.encode([row["query"] for row in block], is_query=True, show_progress_bar=False)
        groups = [[row["positive"], *row["negatives"]] for row in block]
        encoded = model.encode(
            [text for group in groups for text in group], is_query=False, batch_size=batch_size, show_progress_bar=False
        )
        offset = 0
        for index, (query, group) in enumerate(zip(queries, groups, strict=True), start=start):
            vectors = [torch.as_tensor(d) for d in encoded[offset : offset + len(group)]]
            offset += len(group)
            scores = maxsim_scores(torch.as_tensor(query)[None], *pad_documents(vectors))[0].tolist()
            ids = ["pos", *(f"neg{j}" for j in range(len(group) - 1))]
            run[str(index)] = dict(zip(ids, scores, strict=True))
            qrels[str(index)] = {"pos": 1}
    return run, qrels


def evaluate_triplets(
    model, rows: Iterable[Mapping], batch_size: int = 32, show_progress_bar: bool = True
) -> dict[str, dict[str, float]]:
    """R@1, R@3, MRR, NDCG@10 per ``source`` column (``"all"`` when absent) and their ``"macro"`` average.

    >>> rows = [{"query": "sual", "positive": "cavab", "negatives": ["başqa"], "source": "books"}]
    >>> evaluate_triplets(model, rows)["macro"]["R@1"]  # doctest: +SKIP
    1.0
    """
    by_source: dict[str, list[Mapping]] = defaultdict(list)
    for row in rows:
        by_source[str(row.get("source", "all"))].append(row)
    if not by_source:
        raise ValueError("no triplet rows to evaluate")
    results = {}
    for source, source_rows in sorted(by_source.items()):
        run, qrels = triplet_run(model, source_rows, batch_size, show_progress_bar)
        metrics = evaluate_run(run, qrels, k_values=(1, 3, 10))
        results[source] = {name: metrics[name] for name in TRIPLET_METRICS}
    results["macro"] = {name: sum(r[name] for r in results.values()) / len(by_source) for name in TRIPLET_METRICS}
    return results
