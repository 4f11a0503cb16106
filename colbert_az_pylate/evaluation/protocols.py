"""The three evaluation protocols on any model ``colbert_az_pylate.load`` accepts.

- ``triplets``: rank each positive among its hard negatives (the card's held-out table), per source + macro;
- ``az-mirage``: full-pool exact MaxSim retrieval over ``doc_pool.json`` (the card's AZ-MIRAGE table);
- ``beir``: full-corpus exact MaxSim retrieval over a BEIR folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import DataFormatError
from colbert_az_pylate.evaluation.data import EvaluationData
from colbert_az_pylate.evaluation.metrics import evaluable_qrels, evaluate_run, skipped_queries
from colbert_az_pylate.evaluation.modes import mode_run
from colbert_az_pylate.evaluation.triplets import evaluate_triplets
from colbert_az_pylate.retrieval.hybrid import DEFAULT_CANDIDATES

RETRIEVAL_METRICS = ("P@1", "R@5", "R@10", "NDCG@5", "NDCG@10", "MRR@10", "F1@10")


@dataclass
class ProtocolResult:
    """Metrics per group (``"all"`` for retrieval, each source and ``"macro"`` for triplets), with counts.

    Parameters
    ----------
    metrics : dict[str, dict[str, float]]
        Group → metric name → value.
    evaluated : int
        Queries (or triplet rows) averaged over.
    skipped : int
        Queries left out because they have no relevant document.
    notes : list[str]
        What else was left out or worth knowing, one line each.
    run : dict[str, dict[str, float]], optional
        The retrieval run (query id → {document id: score}), for TREC run files.

    Examples
    --------
    >>> ProtocolResult({"all": {"P@1": 1.0}}, evaluated=3).skipped
    0
    """

    metrics: dict[str, dict[str, float]]
    evaluated: int
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    run: dict[str, dict[str, float]] | None = None


def evaluate_retrieval(
    model,
    data: EvaluationData,
    k: int = 10,
    batch_size: int = 32,
    show_progress_bar: bool | None = True,
    *,
    cache_dir: str | Path | None = None,
    say: Callable[[str], None] | None = None,
    mode: str = "late",
    candidates: int = DEFAULT_CANDIDATES,
) -> ProtocolResult:
    """Retrieval of every evaluable query over the whole corpus, scored at the top ``k``: exact MaxSim by default,
    or another search mode (:func:`~colbert_az_pylate.evaluation.modes.mode_run`).

    Parameters
    ----------
    model
        A ``pylate.models.ColBERT`` (anything with its ``encode``).
    data : EvaluationData
        Queries, corpus and qrels (from ``load_az_mirage`` or ``load_beir``).
    k : int, default 10
        Documents retrieved per query.
    batch_size : int, default 32
        Encoding batch size.
    show_progress_bar : bool or None, default True
        Show progress bars on stderr (``None``: on long work only).
    cache_dir : str or Path, optional
        Where the document encodings are kept and reused (see
        :func:`~colbert_az_pylate.evaluation.retrieval.exact_run`).
    say : callable, optional
        Told where the encodings are cached, or why they are not.
    mode : str, default "late"
        ``"late"`` (exact MaxSim: the model card's protocol), ``"bm25"``, ``"bm25+rerank"`` or ``"fusion"``.
    candidates : int, default 100
        How deep BM25 (and, for ``fusion``, MaxSim) rank before the rerank or the fusion.

    Returns
    -------
    ProtocolResult
        ``metrics["all"]`` holds P@1, R@5, R@10, NDCG@5, NDCG@10, MRR@10, F1@10; ``run`` the retrieved lists.

    Raises
    ------
    DataFormatError
        When no query has a relevant document.

    Examples
    --------
    >>> import numpy as np
    >>> class OneHotWords:  # a stand-in encoder: MaxSim counts the query words a document holds
    ...     words = ["bakı", "paytaxt", "şəki", "nizami"]
    ...     def encode(self, texts, is_query, **kwargs):
    ...         eye = np.eye(len(self.words), dtype=np.float32)
    ...         return [np.stack([eye[self.words.index(w)] for w in text.split()]) for text in texts]
    >>> data = EvaluationData({"q1": "bakı paytaxt"}, {"d1": "şəki", "d2": "bakı paytaxt"}, {"q1": {"d2": 1}})
    >>> result = evaluate_retrieval(OneHotWords(), data, show_progress_bar=False)
    >>> result.metrics["all"]["P@1"], result.evaluated
    (1.0, 1)
    """
    skipped = skipped_queries(data.qrels)
    qrels = evaluable_qrels(data.qrels)
    if not qrels:
        raise DataFormatError("no query has a relevant document in the corpus; nothing to evaluate")
    queries = {q: data.queries[q] for q in qrels}
    run = mode_run(
        model,
        queries,
        data.corpus,
        mode=mode,
        k=k,
        candidates=candidates,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        cache_dir=cache_dir,
        say=say,
    )
    metrics = evaluate_run(run, qrels, k_values=(1, 5, 10))
    notes = list(data.notes)
    if skipped:
        notes.append(f"{len(skipped)} queries without a relevant document were skipped")
    return ProtocolResult(
        {"all": {name: metrics[name] for name in RETRIEVAL_METRICS}}, len(qrels), len(skipped), notes, run
    )


def evaluate_triplet_rows(model, rows: list[dict], show_progress_bar: bool = True) -> ProtocolResult:
    """The held-out triplet protocol as a :class:`ProtocolResult` (see :func:`evaluate_triplets`).

    Parameters
    ----------
    model
        A ``pylate.models.ColBERT``.
    rows : list[dict]
        Triplet rows.
    show_progress_bar : bool, default True
        Show a progress bar on stderr.

    Returns
    -------
    ProtocolResult
        Metrics per source and ``"macro"``; ``evaluated`` is the number of rows.
    """
    return ProtocolResult(evaluate_triplets(model, rows, show_progress_bar=show_progress_bar), len(rows))
