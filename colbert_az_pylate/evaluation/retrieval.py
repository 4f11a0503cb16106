"""Exact (brute-force MaxSim) full-corpus retrieval: the quality yardstick for evaluation and indexes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from colbert_az_pylate.evaluation.metrics import ranked_documents
from colbert_az_pylate.scores import maxsim_scores, pad_documents


def exact_run(
    model,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    k: int = 10,
    batch_size: int = 32,
    chunk_size: int = 512,
    show_progress_bar: bool = True,
) -> dict[str, dict[str, float]]:
    """Top-``k`` documents of ``corpus`` for every query by exact MaxSim with ``model`` (a pylate ColBERT)."""
    if not corpus:
        raise ValueError("the corpus is empty; nothing to retrieve from")
    doc_ids = list(corpus)
    doc_vectors = [
        torch.as_tensor(v)
        for v in model.encode(
            [corpus[d] for d in doc_ids], is_query=False, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
    ]
    query_ids = list(queries)
    query_vectors = torch.stack(
        [
            torch.as_tensor(v)
            for v in model.encode(
                [queries[q] for q in query_ids], is_query=True, batch_size=batch_size, show_progress_bar=False
            )
        ]
    )
    scores = torch.empty(len(query_ids), len(doc_ids))
    for start in tqdm(range(0, len(doc_ids), chunk_size), desc="Scoring", disable=not show_progress_bar):
        scores[:, start : start + chunk_size] = maxsim_scores(
            query_vectors, *pad_documents(doc_vectors[start : start + chunk_size])
        )
    top = scores.topk(min(k, len(doc_ids)), dim=1)
    return {
        query: {doc_ids[j]: float(s) for s, j in zip(values.tolist(), indices.tolist(), strict=True)}
        for query, values, indices in zip(query_ids, top.values, top.indices, strict=True)
    }


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str) -> None:
    """Save ``run`` in TREC format (``qid Q0 docid rank score tag``), ranked by score."""
    tag = tag.replace(" ", "_") or "run"
    with open(path, "w", encoding="utf-8") as handle:
        for query, scores in run.items():
            for rank, doc in enumerate(ranked_documents(scores, len(scores)), start=1):
                handle.write(f"{query} Q0 {doc} {rank} {scores[doc]:.6f} {tag}\n")
