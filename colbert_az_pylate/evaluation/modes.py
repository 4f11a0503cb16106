"""A retrieval run in each search mode of :class:`~colbert_az_pylate.retrieval.Searcher` (``colbert-az evaluate
--mode``): ``late`` (exact MaxSim over the whole corpus), ``bm25``, ``bm25+rerank`` (BM25's top ``candidates``
reranked by exact MaxSim) and ``fusion`` (reciprocal rank fusion of both, each ``candidates`` deep).

The rules are the searcher's own: :func:`~colbert_az_pylate.retrieval.lexical.bm25_rank` (the BM25 index's text
rules and parameters, in memory), :func:`~colbert_az_pylate.evaluation.rerank_run.rerank_candidates` (the MaxSim of
``retrieval.rerank``) and :func:`~colbert_az_pylate.retrieval.hybrid.reciprocal_rank_fusion`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from colbert_az_pylate.errors import check_count
from colbert_az_pylate.evaluation.rerank_run import rerank_candidates
from colbert_az_pylate.evaluation.retrieval import exact_run
from colbert_az_pylate.retrieval.hybrid import DEFAULT_CANDIDATES, check_mode, reciprocal_rank_fusion
from colbert_az_pylate.retrieval.lexical import bm25_rank

__all__ = ["mode_run"]


def mode_run(
    model,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    *,
    mode: str = "late",
    k: int = 10,
    candidates: int = DEFAULT_CANDIDATES,
    batch_size: int = 32,
    show_progress_bar: bool | None = True,
    cache_dir: str | Path | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Each query's top ``k`` documents of ``corpus`` in search mode ``mode`` (query id → {document id: score}).

    Examples
    --------
    >>> import numpy as np
    >>> class OneHotWords:  # a stand-in encoder: MaxSim counts the query words a document holds
    ...     words = ["bakı", "paytaxt", "şəki", "saray"]
    ...     def encode(self, texts, is_query, **kwargs):
    ...         eye = np.eye(len(self.words), dtype=np.float32)
    ...         return [np.stack([eye[self.words.index(w)] for w in text.split()]) for text in texts]
    >>> corpus = {"d1": "şəki saray", "d2": "bakı paytaxt", "d3": "bakı"}
    >>> run = mode_run(OneHotWords(), {"q": "bakı paytaxt"}, corpus, mode="bm25+rerank", show_progress_bar=False)
    >>> list(run["q"])
    ['d2', 'd3']
    """
    check_mode(mode)
    candidates = check_count(candidates, "candidates")
    late_settings = {"batch_size": batch_size, "show_progress_bar": show_progress_bar, "cache_dir": cache_dir}
    if mode == "late":
        return exact_run(model, queries, corpus, k=k, say=say, **late_settings)
    query_ids = list(queries)
    depth = k if mode == "bm25" else max(candidates, k)
    lexical = dict(zip(query_ids, bm25_rank(dict(corpus), [queries[q] for q in query_ids], depth), strict=True))
    if mode == "bm25":
        return {q: {entry["id"]: entry["score"] for entry in lexical[q]} for q in query_ids}
    if mode == "bm25+rerank":
        found = {q: [entry["id"] for entry in lexical[q]] for q in query_ids if lexical[q]}
        if not found:  # no query shares a word with the corpus
            return {q: {} for q in query_ids}
        reranked = rerank_candidates(
            model, found, dict(queries), dict(corpus), batch_size=batch_size, show_progress_bar=bool(show_progress_bar)
        )
        return {q: dict(reranked.ranking.get(q, [])[:k]) for q in query_ids}
    late = exact_run(model, queries, corpus, k=depth, say=say, **late_settings)
    fused = {}
    for q in query_ids:
        late_ranking = [{"id": doc} for doc, _ in sorted(late[q].items(), key=lambda item: -item[1])]
        fused[q] = {e["id"]: e["score"] for e in reciprocal_rank_fusion([late_ranking, lexical[q]], k=k)}
    return fused
