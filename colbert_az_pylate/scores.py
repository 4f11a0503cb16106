"""MaxSim scoring shared by the reference, verification, evaluation and search."""

from __future__ import annotations

import numpy as np
import torch


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
    if documents_mask is not None:
        similarity = similarity.masked_fill(~documents_mask.bool()[None, :, None, :], float("-inf"))
    return similarity.max(dim=-1).values.sum(dim=-1)


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
    similarity = query.astype(np.float32, copy=False) @ vectors.astype(np.float32, copy=False).T
    return np.maximum.reduceat(similarity, starts, axis=1).sum(axis=0)
