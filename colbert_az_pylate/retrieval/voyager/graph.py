"""The HNSW graph of a Voyager index and the searches: candidates from the graph reranked by exact MaxSim over the
stored vectors (:meth:`GraphSearch.search`), or exact MaxSim over every stored vector
(:meth:`GraphSearch.exact_search`).

The graph (``voyager.Index``, cosine) holds every token vector ever added under its label, which is its row in the
store (both count the vectors in the order they were added); a removed document's labels are marked deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, check_count
from colbert_az_pylate.retrieval.vectors import as_matrices
from colbert_az_pylate.scores import maxsim_top_k, packed_maxsim_scores

# storage= of VoyagerIndex: voyager's StorageDataType of the vectors inside the graph
STORAGE = {"float32": "Float32", "float8": "Float8", "e4m3": "E4M3"}
GRAPH_CHUNK = 50_000  # vectors per add_items call (progress granularity; voyager threads within a call)
# Up to this size the committed vectors are held once per commit as float32 for exact scoring and reranking
# (a float16 memory map costs a conversion on every search); beyond it they are read block by block.
FLOAT32_CACHE_BYTES = 256 << 20


def _check_subset(subset) -> None:
    if subset is not None and (isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable)):
        raise InvalidArgumentError("subset must be a list of document ids, not one id; wrap it in a list")


class GraphSearch:
    """The graph and the searches of :class:`~colbert_az_pylate.retrieval.voyager_index.VoyagerIndex` (a mixin).

    Reads the index's ``graph``, ``settings``, ``embedding_size``, ``ef_search``, ``num_threads``,
    ``show_progress``, the document tables (``doc_start``, ``doc_length``, ``alive``, ``label_doc``),
    ``doc_ids``/``_positions``, ``live_labels`` and the store (``vectors``, ``_verify_vector_rows``); caches the
    float32 vectors in ``_float32``.
    """

    def _new_graph(self):
        from voyager import Index, Space, StorageDataType

        return Index(
            Space.Cosine,
            num_dimensions=self.embedding_size,
            M=self.settings["M"],
            ef_construction=self.settings["ef_construction"],
            storage_data_type=getattr(StorageDataType, STORAGE[self.settings["storage"]]),
        )

    def _show(self, work: int) -> bool:
        return self.show_progress if self.show_progress is not None else work >= 4 * GRAPH_CHUNK

    def _add_to_graph(self, stacked: np.ndarray) -> None:
        """Add token vectors to the graph under the next labels (their rows in the store)."""
        first_label = len(self.label_doc)
        labels = list(range(first_label, first_label + len(stacked)))
        step = GRAPH_CHUNK
        with tqdm(
            total=len(stacked), desc="Building the graph", unit="vectors", disable=not self._show(len(stacked))
        ) as progress:
            for start in range(0, len(stacked), step):
                chunk = stacked[start : start + step]
                self.graph.add_items(chunk, ids=labels[start : start + step], num_threads=self.num_threads)
                progress.update(len(chunk))

    def _query_graph(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        if not self._positions:
            raise ColbertAzError("the index is empty; add documents before searching")
        from voyager import RecallError

        k = k_asked = min(k, self.live_labels)
        stacked = np.concatenate(queries)
        query_ef = max(self.ef_search, k)
        while True:
            try:
                labels, distances = self.graph.query(stacked, k=k, num_threads=self.num_threads, query_ef=query_ef)
                break
            except RecallError:
                # HNSW can find fewer than k neighbours (many deleted or identical vectors): widen the search,
                # then ask for fewer neighbours; the exact rerank keeps the scores right either way.
                if query_ef < 8 * max(self.ef_search, k):
                    query_ef *= 2
                elif k > 1:
                    k //= 2
                else:  # a graph of mostly deleted vectors can find nothing: the exact neighbours instead
                    labels, distances = self._exact_neighbours(stacked, min(k_asked, self.live_labels))
                    break
        return labels.astype(np.int64), distances, [len(q) for q in queries]

    def _exact_neighbours(self, stacked: np.ndarray, k: int, chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live vectors of every query token by brute force, as the graph would give them.

        A vector's label is its row in the store (both count the vectors in the order they were added), so the
        result reads exactly like the graph's.
        """
        stacked = stacked / np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        live = np.flatnonzero(self.alive)
        starts, lengths = self.doc_start[live], self.doc_length[live]
        self._verify_vector_rows(starts, lengths)
        rows = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        best_rows = np.zeros((len(stacked), 0), np.int64)
        best_similarity = np.zeros((len(stacked), 0), np.float32)
        for begin in range(0, len(rows), chunk_rows):
            chunk = rows[begin : begin + chunk_rows]
            similarity = stacked @ np.asarray(self.vectors[chunk], np.float32).T
            best_rows = np.concatenate([best_rows, np.broadcast_to(chunk, similarity.shape)], axis=1)
            best_similarity = np.concatenate([best_similarity, similarity], axis=1)
            if best_rows.shape[1] > k:
                keep = np.argpartition(-best_similarity, k - 1, axis=1)[:, :k]
                best_rows = np.take_along_axis(best_rows, keep, axis=1)
                best_similarity = np.take_along_axis(best_similarity, keep, axis=1)
        order = np.argsort(-best_similarity, axis=1, kind="stable")
        best_rows = np.take_along_axis(best_rows, order, axis=1)
        best_similarity = np.take_along_axis(best_similarity, order, axis=1)
        return best_rows, (1.0 - best_similarity).astype(np.float32)

    @property
    def _float32_fits(self) -> bool:
        """Whether the committed vectors are held as float32 in memory (up to :data:`FLOAT32_CACHE_BYTES`)."""
        return self.rows * self.embedding_size * 4 <= FLOAT32_CACHE_BYTES

    def float32_vectors(self) -> np.ndarray:
        """All committed token vectors as float32 (rows × dim), checked against their checksums: held in memory
        once per commit when they fit :data:`FLOAT32_CACHE_BYTES`, else the float16 memory map (read by blocks)."""
        cached, state = self._float32, (self.epoch, self.rows)
        if cached is not None and cached[0] == state:
            return cached[1]
        self._verify_vector_rows(self.doc_start, self.doc_length)
        if not self._float32_fits:
            return self.vectors
        vectors = np.asarray(self.vectors, np.float32)  # a search racing this one builds the same array
        self._float32 = (state, vectors)
        return vectors

    def rerank(self, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Exact MaxSim of one query against stored documents.

        Parameters
        ----------
        query
            (tokens, dim) query matrix.
        positions
            The documents' positions in :attr:`doc_ids`.

        Returns
        -------
        numpy.ndarray
            One score per position.
        """
        starts, lengths = self.doc_start[positions], self.doc_length[positions]
        rows = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        packed_starts = np.cumsum(lengths) - lengths
        if self._float32_fits:  # the in-memory copy, checked once per commit
            return packed_maxsim_scores(query, self.float32_vectors()[rows], packed_starts)
        self._verify_vector_rows(starts, lengths)
        return packed_maxsim_scores(query, np.asarray(self.vectors[rows], np.float32), packed_starts)

    def search(
        self,
        queries_embeddings,
        k: int = 10,
        k_token: int = 256,
        subset: Sequence[str] | None = None,
        candidates: int | None = None,
    ) -> list[list[dict]]:
        """Top ``k`` documents per query by exact MaxSim over the candidates the graph finds.

        The graph gives ``k_token`` neighbours per query token; documents are pre-scored from those neighbours
        alone (a query token whose neighbours miss a document counts the lowest similarity it retrieved) when
        ``candidates`` is set, and the best ``candidates`` (default: all) get the exact MaxSim over their stored
        vectors. Pruning trades recall for speed (see docs/benchmarks.md).

        Parameters
        ----------
        queries_embeddings
            One (tokens, dim) matrix per query.
        k
            Documents per query (default 10).
        k_token
            Graph neighbours per query token (default 256).
        subset
            Only these ids may be returned (unknown ids are ignored).
        candidates
            Rerank only this many documents, chosen by the neighbours' similarities (default: all found).

        Returns
        -------
        list[list[dict]]
            pylate's format: per query, ``[{"id": ..., "score": ...}, ...]``, best first.
        """
        k, k_token = check_count(k, "k"), check_count(k_token, "k_token")
        if candidates is not None:
            candidates = check_count(candidates, "candidates")
        _check_subset(subset)
        queries = as_matrices(queries_embeddings, "query", self.embedding_size)
        labels, distances, sizes = self._query_graph(queries, k_token)
        allowed = None
        if subset is not None:
            allowed = np.array([self._positions[i] for i in subset if i in self._positions], np.int64)
        results, offset = [], 0
        for query, size in tqdm(
            list(zip(queries, sizes, strict=True)), desc="Searching", disable=not self._show(len(queries) * 1000)
        ):
            documents = self.label_doc[labels[offset : offset + size]]
            similarity = 1.0 - distances[offset : offset + size]
            offset += size
            results.append(self._rank_neighbours(query, documents, similarity, allowed, k, candidates))
        return results

    def _rank_neighbours(
        self,
        query: np.ndarray,
        documents: np.ndarray,
        similarity: np.ndarray,
        allowed: np.ndarray | None,
        k: int,
        candidates: int | None,
    ) -> list[dict]:
        """One query's top ``k`` among the documents of its tokens' neighbours (``documents`` and ``similarity``:
        per token, per neighbour), by exact MaxSim over the best ``candidates`` of them (all when ``None``)."""
        if allowed is not None:
            keep = np.isin(documents, allowed)
            documents, similarity = np.where(keep, documents, -1), np.where(keep, similarity, -np.inf)
        unique, inverse = np.unique(documents, return_inverse=True)
        if unique[0] == -1:  # neighbours outside the subset
            unique, inverse = unique[1:], inverse.reshape(documents.shape) - 1
        if len(unique) == 0:
            return []
        if candidates is not None and len(unique) > candidates:
            best = np.repeat(similarity.min(axis=1, keepdims=True), len(unique), axis=1)
            rows = np.repeat(np.arange(documents.shape[0]), documents.shape[1])
            flat = inverse.reshape(-1)
            valid = flat >= 0
            np.maximum.at(best, (rows[valid], flat[valid]), similarity.reshape(-1)[valid])
            unique = unique[np.argpartition(-best.sum(axis=0), candidates)[:candidates]]
        scores = self.rerank(query, unique)
        order = np.argsort(-scores, kind="stable")[:k]
        return [{"id": self.doc_ids[unique[i]], "score": float(scores[i])} for i in order]

    def exact_search(
        self, queries_embeddings, k: int = 10, subset: Sequence[str] | None = None, chunk_documents: int | None = None
    ) -> list[list[dict]]:
        """Brute-force MaxSim over every live document: the yardstick for :meth:`search`, and the faster path for
        small indexes (:attr:`exact_is_faster`).

        One blocked matrix product over the contiguous store (:func:`~colbert_az_pylate.scores.maxsim_top_k`),
        all queries at once, memory bounded whatever the number of queries or documents.

        Parameters
        ----------
        queries_embeddings
            One (tokens, dim) matrix per query.
        k
            Documents per query (default 10).
        subset
            Only these ids may be returned (unknown ids are ignored).
        chunk_documents
            Ignored (kept for callers of earlier versions; the block size is set by memory).

        Returns
        -------
        list[list[dict]]
            As :meth:`search`.
        """
        k = check_count(k, "k")
        _check_subset(subset)
        queries = as_matrices(queries_embeddings, "query", self.embedding_size)
        if not self._positions:
            raise ColbertAzError("the index is empty; add documents before searching")
        allowed = self.alive
        if subset is not None:
            allowed = np.zeros(len(self.alive), bool)
            allowed[[self._positions[i] for i in subset if i in self._positions]] = True
        if not allowed.any():
            return [[] for _ in queries]
        documents, scores = maxsim_top_k(queries, self.float32_vectors(), self.doc_start, k, allowed=allowed)
        return [
            [{"id": self.doc_ids[d], "score": float(s)} for d, s in zip(row_documents, row_scores, strict=True)]
            for row_documents, row_scores in zip(documents.tolist(), scores.tolist(), strict=True)
        ]
