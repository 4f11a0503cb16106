"""MaxSim scoring shared by the reference, verification, evaluation and search."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from colbert_az_pylate.errors import InvalidArgumentError

PADDING_MODES = ("exclude", "zero")


def reduce_maxsim(
    similarity: torch.Tensor,
    documents_mask: torch.Tensor | None = None,
    queries_mask: torch.Tensor | None = None,
    padding: str = "exclude",
) -> torch.Tensor:
    """The MaxSim rule, once: (…, query_tokens, document_tokens) similarities → (…) scores, for each query token
    the best document token, summed over query tokens; masks broadcast over the leading dims.

    ``padding="exclude"`` (the model card's MaxSim): a masked document token is never the best; a document with no
    token left scores 0. ``padding="zero"`` (pylate's training scores): masked similarities count as 0.

    >>> reduce_maxsim(torch.tensor([[[1.0, 0.2], [0.1, -0.5]]]), torch.tensor([[True, False]]))
    tensor([1.1000])
    """
    if padding not in PADDING_MODES:
        raise InvalidArgumentError(f"padding must be 'exclude' or 'zero', got {padding!r}")
    if documents_mask is not None:
        keep = documents_mask.bool().unsqueeze(-2)
        if padding == "exclude":
            best = similarity.masked_fill(~keep, float("-inf")).max(dim=-1).values
            best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))  # a document without tokens
        else:
            best = (similarity * keep).max(dim=-1).values
    else:
        best = similarity.max(dim=-1).values
    if queries_mask is not None:
        query_keep = queries_mask.to(best.dtype)
        best = best * query_keep.view(query_keep.size(0), *([1] * (best.dim() - 2)), query_keep.size(1))
    return best.sum(dim=-1)


def maxsim_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    documents_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Late-interaction scores: for each query token the best document token, summed over query tokens.

    ``queries`` is (n_queries, query_tokens, dim), ``documents`` (n_documents, document_tokens, dim) and
    ``documents_mask`` (n_documents, document_tokens), true where a document token counts. Returns
    (n_queries, n_documents). Query tokens are all counted, as in the model card (queries attend to every
    expansion token).

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> d = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    >>> maxsim_scores(q, d)
    tensor([[1.8000]])
    """
    similarity = torch.einsum("qld,bnd->qbln", queries, documents)
    return reduce_maxsim(similarity, None if documents_mask is None else documents_mask[None])


def pad_documents(documents: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length token vectors into (n, max_tokens, dim) plus the mask of real tokens.

    >>> padded, mask = pad_documents([torch.ones(2, 4), torch.ones(3, 4)])
    >>> padded.shape, mask.sum().item()
    (torch.Size([2, 3, 4]), 5)
    """
    padded = torch.nn.utils.rnn.pad_sequence(documents, batch_first=True)
    lengths = torch.tensor([len(d) for d in documents])
    mask = torch.arange(padded.size(1))[None, :] < lengths[:, None]
    return padded, mask


def packed_maxsim_scores(query: np.ndarray, vectors: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """MaxSim of one query against documents packed end to end in ``vectors`` (numpy, no padding).

    ``query`` is (query_tokens, dim); ``vectors`` (total_tokens, dim) holds the documents one after the other,
    document ``i`` starting at row ``starts[i]`` (increasing, every document non-empty). Returns one score per
    document; equal to :func:`maxsim_scores` on the padded form.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> docs = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    >>> [round(float(s), 4) for s in packed_maxsim_scores(q, docs, np.array([0, 2]))]
    [1.8, 1.0]
    """
    similarity = _similarities(query, vectors)
    return np.maximum.reduceat(similarity, starts, axis=1).sum(axis=0)


def rerank_scores(query: np.ndarray, documents: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(order, scores)`` of ``documents`` (one token matrix each) for one query: MaxSim per document and the
    positions best first, ties kept in the order given. The rule of every rerank (in process, served, a run file).

    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> order, scores = rerank_scores(q, [np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])])
    >>> order.tolist(), scores.tolist()
    ([1, 2, 0], [0.0, 1.0, 1.0])
    """
    starts = np.cumsum([0] + [len(matrix) for matrix in documents[:-1]])
    scores = packed_maxsim_scores(np.asarray(query), np.concatenate(documents), starts)
    return np.argsort(-scores, kind="stable"), scores


def _similarities(rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``rows @ vectors.T`` in float32 on torch's thread pool, the one the encoder uses (threads.py: no second
    BLAS pool spinning beside it)."""
    return torch.mm(_tensor(rows), _tensor(vectors).T).numpy()


def _tensor(array: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(array, np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())  # torch wants writable memory


def document_blocks(starts: np.ndarray, total_rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Cut packed documents into runs of whole documents of about ``max_rows`` rows (a longer document alone).

    Returns ``(first_document, end_document)`` pairs covering every document in order.

    >>> document_blocks(np.array([0, 3, 5, 9]), 12, 5)
    [(0, 2), (2, 3), (3, 4)]
    """
    ends = np.append(np.asarray(starts[1:], np.int64), total_rows)
    blocks, first = [], 0
    while first < len(starts):
        # the last document whose end stays within max_rows of the block's first row; at least one document
        end = int(np.searchsorted(ends, int(starts[first]) + max_rows, side="right"))
        end = max(end, first + 1)
        blocks.append((first, end))
        first = end
    return blocks


def maxsim_top_k(
    queries: Sequence[np.ndarray] | np.ndarray,
    vectors: np.ndarray,
    starts: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    block_elements: int = 1 << 22,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` documents per query by MaxSim over packed documents, in memory bounded by ``block_elements``.

    The work is a blocked matrix product: a block of queries (their token rows stacked) times a block of whole
    documents' rows, reduced to each document's best row per query token and summed — no per-document loop, no
    padding of documents, and peak memory set by ``block_elements`` (similarities held at once, float32), whatever
    the number of queries or documents.

    Parameters
    ----------
    queries
        One (tokens, dim) matrix per query, or a (queries, tokens, dim) array; shorter queries are padded with zero
        rows, which add exactly 0 to every score.
    vectors
        (total_rows, dim) document token vectors packed end to end (float32 or float16; a memory map is read one
        block at a time). Document ``i`` holds rows ``starts[i]`` up to the next start (the last: to the end).
    starts
        Increasing first rows of the documents, every document non-empty.
    k
        Documents kept per query (at most the number of documents allowed).
    allowed
        A boolean mask over the documents: only these may be returned (default: all); blocks without an allowed
        document are skipped.
    block_elements
        Similarities computed at once (default 2**22: 16 MiB of float32).
    progress
        Called with the number of documents finished after each block of documents.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        ``(documents, scores)``, each (queries, min(k, documents)): document numbers and their MaxSim, best first
        (ties: the lower document number first).

    Examples
    --------
    >>> q = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    >>> docs = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    >>> documents, scores = maxsim_top_k(q, docs, np.array([0, 2]), k=2)
    >>> documents.tolist(), [round(float(s), 4) for s in scores[0]]
    ([[0, 1]], [1.8, 1.0])
    """
    starts = np.asarray(starts, np.int64)
    if isinstance(queries, np.ndarray) and queries.ndim == 3:
        stacked = np.ascontiguousarray(queries, np.float32)
    else:
        queries = [np.asarray(q, np.float32) for q in queries]
        length = max((len(q) for q in queries), default=0)
        stacked = np.zeros((len(queries), length, vectors.shape[1]), np.float32)
        for row, query in enumerate(queries):
            stacked[row, : len(query)] = query
    n_queries, tokens, dim = stacked.shape
    n_documents = len(starts)
    k = min(k, n_documents if allowed is None else int(np.count_nonzero(allowed)))
    best_documents = np.zeros((n_queries, 0), np.int64)
    best_scores = np.zeros((n_queries, 0), np.float32)
    if n_queries == 0 or k == 0:
        return best_documents, best_scores
    query_block = max(1, min(n_queries, block_elements // max(1, tokens * 4096)))
    max_rows = max(1, block_elements // (query_block * tokens))
    total_rows = vectors.shape[0]
    ends = np.append(starts[1:], total_rows)
    block_scores = []
    for first, end in document_blocks(starts, total_rows, max_rows):
        if allowed is not None and not allowed[first:end].any():
            if progress is not None:
                progress(end - first)
            continue
        row_begin, row_end = int(starts[first]), int(ends[end - 1])
        block = np.ascontiguousarray(vectors[row_begin:row_end], np.float32)
        local_starts = starts[first:end] - row_begin
        scores = np.empty((n_queries, end - first), np.float32)
        for q_begin in range(0, n_queries, query_block):
            similarity = _similarities(stacked[q_begin : q_begin + query_block].reshape(-1, dim), block)
            best = np.maximum.reduceat(similarity, local_starts, axis=1)
            scores[q_begin : q_begin + query_block] = best.reshape(-1, tokens, end - first).sum(axis=1)
        if allowed is not None:
            scores[:, ~allowed[first:end]] = -np.inf
        block_scores.append((first, scores))
        if sum(s.shape[1] for _, s in block_scores) >= max(k, 4096):
            best_documents, best_scores = _merge_top_k(best_documents, best_scores, block_scores, k)
            block_scores = []
        if progress is not None:
            progress(end - first)
    if block_scores:
        best_documents, best_scores = _merge_top_k(best_documents, best_scores, block_scores, k)
    return best_documents, best_scores


def _merge_top_k(best_documents, best_scores, block_scores, k):
    """The running top ``k`` merged with new blocks of scores (``(first document, scores)`` pairs)."""
    documents = np.concatenate(
        [np.broadcast_to(np.arange(first, first + s.shape[1]), s.shape) for first, s in block_scores], axis=1
    )
    return merge_top_k(best_documents, best_scores, documents, np.concatenate([s for _, s in block_scores], axis=1), k)


def merge_top_k(
    documents: np.ndarray, scores: np.ndarray, new_documents: np.ndarray, new_scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of two top lists per query, best first (ties: the lower document number first).

    >>> merge_top_k(np.array([[3, 1]]), np.array([[0.9, 0.5]]), np.array([[0]]), np.array([[0.5]]), 2)
    (array([[3, 0]]), array([[0.9, 0.5]]))
    """
    documents = np.concatenate([documents, new_documents], axis=1)
    scores = np.concatenate([scores, new_scores], axis=1)
    order = np.lexsort((documents, -scores), axis=1)[:, :k]
    return np.take_along_axis(documents, order, axis=1), np.take_along_axis(scores, order, axis=1)
