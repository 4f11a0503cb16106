"""Evaluation with the model card's metrics (P@k, R@k, NDCG@k, F1@k, MRR@10)."""

from colbert_az_pylate.evaluation.metrics import evaluate_run, per_query_metrics

__all__ = ["evaluate_run", "per_query_metrics"]
