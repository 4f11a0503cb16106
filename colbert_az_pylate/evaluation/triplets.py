"""Held-out triplet protocol (the card's first table): rank each positive among its hard negatives."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from colbert_az_pylate.errors import DataFormatError
from colbert_az_pylate.evaluation.data import check_triplet_row
from colbert_az_pylate.evaluation.metrics import evaluate_run
from colbert_az_pylate.scores import maxsim_scores, pad_documents

TRIPLET_METRICS = ("R@1", "R@3", "MRR@10", "NDCG@10")


def triplet_run(model, rows: Sequence[Mapping], batch_size: int = 32, show_progress_bar: bool = True):
    """Score every row's positive and negatives with ``model`` (a pylate ColBERT); returns (run, qrels).

    The positive of row ``i`` is document ``"pos"`` of query ``str(i)``, its negatives ``"neg{j}"``.

    Parameters
    ----------
    model
        Anything with pylate's ``encode(texts, is_query=…)`` returning one (tokens, dim) array per text.
    rows : Sequence[Mapping]
        Triplet rows (``query``, ``positive``, ``negatives``), checked first.
    batch_size : int, default 32
        Encoding batch size.
    show_progress_bar : bool, default True
        Show a progress bar on stderr.

    Returns
    -------
    tuple[dict, dict]
        The run (query id → {document id: MaxSim score}) and its qrels.

    Raises
    ------
    DataFormatError
        On a malformed row, naming it (``triplet row 1`` is the first).
    """
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    rows = list(rows)
    for index, row in enumerate(rows, start=1):
        check_triplet_row(row, f"triplet row {index}")
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

    Parameters
    ----------
    model
        Anything with pylate's ``encode(texts, is_query=…)`` (a ``pylate.models.ColBERT``).
    rows : Iterable[Mapping]
        Triplet rows: ``query`` and ``positive`` texts, ``negatives`` a list of texts, optionally ``source``.
    batch_size : int, default 32
        Encoding batch size.
    show_progress_bar : bool, default True
        Show a progress bar on stderr.

    Returns
    -------
    dict[str, dict[str, float]]
        Source → {``R@1``, ``R@3``, ``MRR@10``, ``NDCG@10``}, plus ``"macro"``: the mean over the sources.

    Raises
    ------
    DataFormatError
        On no rows, or a malformed row (named by its number, the first is 1).

    Examples
    --------
    >>> import numpy as np
    >>> class OneHotWords:  # a stand-in encoder: MaxSim counts the query words a document holds
    ...     words = ["bakı", "paytaxt", "şəki", "nizami"]
    ...     def encode(self, texts, is_query, **kwargs):
    ...         eye = np.eye(len(self.words), dtype=np.float32)
    ...         return [np.stack([eye[self.words.index(w)] for w in text.split()]) for text in texts]
    >>> rows = [{"query": "bakı paytaxt", "positive": "bakı paytaxt", "negatives": ["şəki", "nizami"]}]
    >>> evaluate_triplets(OneHotWords(), rows, show_progress_bar=False)["macro"]
    {'R@1': 1.0, 'R@3': 1.0, 'MRR@10': 1.0, 'NDCG@10': 1.0}
    """
    by_source: dict[str, list[Mapping]] = defaultdict(list)
    rows = list(rows)
    for index, row in enumerate(rows, start=1):
        check_triplet_row(row, f"triplet row {index}")
        source = row.get("source")
        by_source["all" if source is None else str(source)].append(row)
    if not by_source:
        raise DataFormatError("no triplet rows to evaluate")
    results = {}
    for source, source_rows in sorted(by_source.items()):
        run, qrels = triplet_run(model, source_rows, batch_size, show_progress_bar)
        metrics = evaluate_run(run, qrels, k_values=(1, 3, 10))
        results[source] = {name: metrics[name] for name in TRIPLET_METRICS}
    results["macro"] = {name: sum(r[name] for r in results.values()) / len(by_source) for name in TRIPLET_METRICS}
    return results
