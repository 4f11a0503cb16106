"""Token vectors as the indexes take them: one float32 (tokens, dimension) matrix per document or query."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from colbert_az_pylate.errors import InvalidArgumentError, first_line

__all__ = ["as_matrices"]


def _as_matrix(embeddings, what: str, dimension: int) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().float().cpu().numpy()
    try:
        array = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{what} is not a (tokens, {dimension}) matrix of numbers: {first_line(exc)}"
        ) from exc
    if array.ndim != 2 or array.shape[0] == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty (tokens, {dimension}) matrix, got shape {array.shape}")
    if array.shape[1] != dimension:
        raise InvalidArgumentError(
            f"{what} has vectors of dimension {array.shape[1]} but the index holds dimension {dimension}; "
            "encode with the model the index was built with"
        )
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"{what} holds NaN or infinite values")
    return array


def as_matrices(embeddings, what: str, dimension: int) -> list[np.ndarray]:
    """Token-vector matrices as float32 arrays of ``dimension`` columns, or a one-line error naming the first bad
    one (not a matrix, empty, the wrong dimension, NaN): how every index checks what it is given.

    >>> [m.shape for m in as_matrices([np.ones((3, 4))], "document", 4)]
    [(3, 4)]
    >>> as_matrices([np.ones((3, 5))], "document", 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: document 0 has vectors of dimension 5 but the index holds ...
    """
    if isinstance(embeddings, (np.ndarray, torch.Tensor)) and embeddings.ndim == 2:
        embeddings = [embeddings]
    if isinstance(embeddings, (str, bytes, dict)) or not isinstance(embeddings, (Iterable, np.ndarray, torch.Tensor)):
        raise InvalidArgumentError(f"{what} embeddings must be a list of (tokens, {dimension}) matrices")
    return [_as_matrix(e, f"{what} {i}", dimension) for i, e in enumerate(embeddings)]
