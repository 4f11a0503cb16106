"""The three evaluation protocols on any model ``colbert_az_pylate.load`` accepts.

- ``triplets``: rank each positive among its hard negatives (the card's held-out table), per source + macro;
- ``az-mirage``: full-pool exact MaxSim retrieval over ``doc_pool.json`` (the card's AZ-MIRAGE table);
- ``beir``: full-corpus exact MaxSim retrieval over a BEIR folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from colbert_az_pylate.evaluation.data import EvaluationData
from colbert_az_pylate.evaluation.metrics import evaluable_qrels, evaluate_run, skipped_queries
from colbert_az_pylate.evaluation.retrieval import exact_run
from colbert_az_pylate.evaluation.triplets import evaluate_triplets

RETRIEVAL_METRICS = ("P@1", "R@5", "R@10", "NDCG@5", "NDCG@10", "MRR@10", "F1@10")


@dataclass
class ProtocolResult:
    """Metrics per group (``"all"`` for retrieval, each source and ``"macro"`` for triplets), with counts."""

    metrics: dict[str, dict[str, float]]
    evaluated: int
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    run: dict[str, dict[str, float]] | None = None


def evaluate_retrieval(
    model, data: EvaluationData, k: int = 10, batch_size: int = 32, show_progress_bar: bool = True
) -> ProtocolResult:
    """Exact MaxSim retrieval of every evaluable query over the whole corpus, scored at the top ``k``."""
    skipped = skipped_queries(data.qrels)
    qrels = evaluable_qrels(data.qrels)
    if not qrels:
        raise ValueError("no query has a relevant document in the corpus; nothing to evaluate")
    queries = {q: data.queries[q] for q in qrels}
    run = exact_run(model, queries, data.corpus, k=k, batch_size=batch_size, show_progress_bar=show_progress_bar)
    metrics = evaluate_run(run, qrels, k_values=(1, 5, 10))
    notes = list(data.notes)
    if skipped:
        notes.append(f"{len(skipped)} queries without a relevant document were skipped")
    return ProtocolResult(
        {"all": {name: metrics[name] for name in RETRIEVAL_METRICS}}, len(qrels), len(skipped), notes, run
    )


def evaluate_triplet_rows(model, rows: list[dict], show_progress_bar: bool = True) -> ProtocolResult:
    """The held-out triplet protocol as a :class:`ProtocolResult`."""
    return ProtocolResult(evaluate_triplets(model, rows, show_progress_bar=show_progress_bar), len(rows))
