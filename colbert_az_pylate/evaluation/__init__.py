"""Evaluation with the model card's metrics (P@k, R@k, NDCG@k, F1@k, MRR@10), and reranking a first stage's run."""

from colbert_az_pylate.evaluation.metrics import evaluate_run, per_query_metrics
from colbert_az_pylate.evaluation.rerank_run import read_candidates, rerank_candidates
from colbert_az_pylate.evaluation.triplets import evaluate_triplets

__all__ = ["evaluate_run", "evaluate_triplets", "per_query_metrics", "read_candidates", "rerank_candidates"]
