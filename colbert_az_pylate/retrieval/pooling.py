"""Document-token pooling: pylate's hierarchical pooling, made safe for duplicate token vectors.

pylate's ``ColBERT.pool_embeddings_hierarchical`` clusters a document's token vectors (Ward linkage on cosine
distance) into ``len // pool_factor`` groups and keeps each group's mean. With duplicate or near-duplicate tokens
its ``1 - cos`` distances come out slightly negative in float32 and scipy refuses the linkage ("Linkage 'Z' contains
negative distances"), which fails the whole encoding. This is the same algorithm with the distances clamped at 0:
where pylate succeeds the result is the same.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy


def pool_document_tokens(vectors: np.ndarray, pool_factor: int, protected_tokens: int = 1) -> np.ndarray:
    """Pool one document's token vectors (tokens × dim) to about ``1 / pool_factor`` of them.

    The first ``protected_tokens`` vectors are kept as they are (pylate's default: 1).

    >>> rng = np.random.default_rng(0)
    >>> pooled = pool_document_tokens(rng.standard_normal((9, 4)).astype("float32"), pool_factor=2)
    >>> pooled.shape
    (5, 4)
    >>> token = rng.standard_normal((1, 4)).astype("float32")
    >>> repeated = np.repeat(token / np.linalg.norm(token), 6, axis=0)  # a token that recurs in a document
    >>> pool_document_tokens(repeated, pool_factor=2).shape  # one cluster of duplicates, plus the protected token
    (2, 4)
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    protected, to_pool = vectors[:protected_tokens], vectors[protected_tokens:]
    count = len(to_pool)
    clusters = max(count // pool_factor, 1)
    if pool_factor <= 1 or clusters >= count:
        return vectors
    distances = np.clip(1.0 - to_pool @ to_pool.T, 0.0, None)[np.triu_indices(count, k=1)]
    labels = hierarchy.fcluster(hierarchy.linkage(distances, method="ward"), t=clusters, criterion="maxclust") - 1
    sums = np.zeros((labels.max() + 1, vectors.shape[1]), np.float32)
    np.add.at(sums, labels, to_pool)
    counts = np.bincount(labels)
    keep = counts > 0
    return np.concatenate([protected, sums[keep] / counts[keep, None]])
