"""Search modes: late interaction, BM25, BM25 reranked by MaxSim, and their reciprocal rank fusion.

- ``late``: the vector index's MaxSim ranking (the model card's retrieval);
- ``bm25``: the lexical index alone (:mod:`~colbert_az_pylate.retrieval.lexical`);
- ``bm25+rerank``: BM25's top ``candidates`` reranked by exact MaxSim: no vector index needed at all;
- ``fusion``: reciprocal rank fusion of the late and BM25 rankings (each to ``candidates`` deep).

>>> fused = reciprocal_rank_fusion([[{"id": "a"}, {"id": "b"}], [{"id": "b"}, {"id": "c"}]], k=3)
>>> [entry["id"] for entry in fused]
['b', 'a', 'c']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from colbert_az_pylate.errors import IndexFormatError, InvalidArgumentError
from colbert_az_pylate.retrieval.backends import BACKENDS, SEARCH_MODES
from colbert_az_pylate.retrieval.folders import LEXICAL_MANIFEST
from colbert_az_pylate.retrieval.hits import rerank_batch_size
from colbert_az_pylate.retrieval.lexical import COMPANION_FOLDER, LexicalIndex
from colbert_az_pylate.retrieval.passages import parse_passage_id
from colbert_az_pylate.scores import rerank_scores

__all__ = ["DEFAULT_CANDIDATES", "MODES", "RRF_CONSTANT", "HybridSearch", "check_mode", "reciprocal_rank_fusion"]

MODES = SEARCH_MODES
LEXICAL_MODES = ("bm25", "bm25+rerank", "fusion")  # need a BM25 index
VECTOR_MODES = ("late", "fusion")  # need a vector index
DEFAULT_CANDIDATES = 100
RRF_CONSTANT = 60  # Cormack et al. 2009; the constant every RRF implementation defaults to


def check_mode(mode) -> str:
    """``mode`` if it is one of :data:`MODES`, else a one-line error naming them.

    >>> check_mode("fusion")
    'fusion'
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def reciprocal_rank_fusion(rankings: Sequence[list[dict]], k: int, constant: int = RRF_CONSTANT) -> list[dict]:
    """Fuse rankings of entries (``{"id", ...}``, best first): each scores ``sum(1 / (constant + rank))`` over the
    rankings it appears in (rank from 1); the top ``k``, best first, ties in order of first appearance.

    Returns
    -------
    list[dict]
        ``{"id", "score"}`` with the fused score.
    """
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, entry in enumerate(ranking, start=1):
            fused[entry["id"]] = fused.get(entry["id"], 0.0) + 1.0 / (constant + rank)
    order = sorted(fused, key=lambda entry_id: -fused[entry_id])  # stable: first appearance breaks ties
    return [{"id": entry_id, "score": fused[entry_id]} for entry_id in order[:k]]


def best_per_document(entries: list[dict]) -> list[dict]:
    """Entries best first, each document kept once, at its best passage.

    >>> best_per_document([{"id": "a"}, {"id": "a\\x1f1"}, {"id": "b"}])
    [{'id': 'a'}, {'id': 'b'}]
    """
    best: dict[str, dict] = {}
    for entry in entries:
        parsed = parse_passage_id(entry["id"])
        best.setdefault(parsed[0] if parsed else entry["id"], entry)
    return list(best.values())


def documents_ranked(rank: Callable[[list[int], int], list[list[dict]]], queries: int, k: int, total: int):
    """Top ``k`` documents per query, each at its best passage: ``rank(query_numbers, fetch)`` ranks entries
    (passages), and is asked for deeper lists until ``k`` documents are found or every entry was ranked."""
    fetch = min(total, k * 4)
    results: list[list[dict] | None] = [None] * queries
    pending = list(range(queries))
    while pending:
        still = []
        for query, entries in zip(pending, rank(pending, fetch), strict=True):
            documents = best_per_document(entries)
            if len(documents) >= k or len(entries) < fetch or fetch >= total:
                results[query] = documents[:k]
            else:
                still.append(query)
        pending, fetch = still, min(total, fetch * 4)
    return results


class HybridSearch:
    """The BM25 side of :class:`~colbert_az_pylate.retrieval.searcher.Searcher`: its companion BM25 index, kept
    with the vector index's entries, and the search modes other than ``late``.

    A mixin: it uses the searcher's ``model``, ``folder``, ``index_store``, ``signature``, ``backend`` and ranking
    methods; everything BM25 lives here so the searcher itself stays one mode.
    """

    lexical: LexicalIndex | None
    mode: str

    def _open_lexical(self, mode: str | None, read_only: bool, override: bool) -> LexicalIndex | None:
        """The BM25 index: the index itself (backend ``bm25``), the ``bm25/`` companion of a vector index (kept
        when present, created for a mode that needs it), or ``None``."""
        entry = BACKENDS[self.backend]
        if not entry.stores_vectors:
            return self.index_store
        companion = self.folder / COMPANION_FOLDER
        exists = not override and (companion / LEXICAL_MANIFEST).is_file()
        wanted = mode in LEXICAL_MODES
        if not wanted and not exists:
            return None
        if not entry.bm25_beside or self.url is not None:
            raise InvalidArgumentError(
                f"mode {mode} needs a BM25 index beside the vectors, which a {entry.title} index does not keep: "
                "use the Voyager or PLAID backend, or mode bm25/bm25+rerank in a folder of its own"
            )
        has_vectors = self.index_store is not None and len(self.index_store) > 0
        if wanted and not exists and has_vectors and not override:
            raise InvalidArgumentError(
                f"the index at {self.folder} was built without BM25; build it again with mode {mode} "
                f"(--mode {mode} --override), or search it with mode late"
            )
        lexical = LexicalIndex(
            companion, model=self.signature, read_only=read_only, override=override, default_mode=mode
        )
        if exists:
            self._check_companion(lexical)
        return lexical

    def _check_companion(self, lexical: LexicalIndex) -> None:
        """Refuse a BM25 companion whose entries are not the vector index's (a write interrupted between them)."""
        store = self.index_store
        count = len(store) if store is not None else 0
        if len(lexical) != count or any(entry not in store for entry in lexical.entries):
            raise IndexFormatError(
                f"the BM25 index in {self.folder / COMPANION_FOLDER} does not match the vector index beside it "
                f"({len(lexical)} entries against {count}; a write was interrupted between the two): build the index "
                "again with override=True (--override)"
            )

    def _companion(self) -> LexicalIndex | None:
        """The BM25 index kept beside the vectors (``None`` without one, or when the index *is* the BM25 index)."""
        return self.lexical if self.lexical is not self.index_store else None

    def _default_mode(self, mode: str | None) -> str:
        if mode is not None:
            return mode
        if self.lexical is not None and self.lexical.default_mode:
            return self.lexical.default_mode
        return "late" if BACKENDS[self.backend].stores_vectors else "bm25+rerank"

    def _search_mode(self, mode: str | None) -> str:
        """``mode`` (default: the searcher's) if this index can be searched that way, else a one-line error."""
        mode = self.mode if mode is None else check_mode(mode)
        if mode in LEXICAL_MODES and self.lexical is None:
            raise InvalidArgumentError(
                f"mode {mode} needs a BM25 index and the index at {self.folder} has none; build it with "
                f"--mode {mode} (mode={mode!r}), or search with mode late"
            )
        if mode in VECTOR_MODES and not BACKENDS[self.backend].stores_vectors:
            raise InvalidArgumentError(
                f"mode {mode} needs token vectors and the index at {self.folder} is BM25 only; search it with mode "
                "bm25 or bm25+rerank"
            )
        return mode

    def _search_hybrid(self, texts: list[str], mode: str, k: int, candidates: int, exact, k_token, subset, group_by):
        """Entries per query (``{"id", "score"}``, best first) for the modes other than ``late``."""
        lexical, depth = self.lexical, max(candidates, k)
        if mode == "bm25":
            ranked = None
        elif mode == "bm25+rerank":
            ranked = self._maxsim_reranked(texts, lexical.search(texts, depth, subset=subset))
        else:
            late = self._ranked(self.encode_queries(texts), depth, exact, k_token, subset)
            words_ranked = lexical.search(texts, depth, subset=subset)
            ranked = [reciprocal_rank_fusion(pair, depth) for pair in zip(late, words_ranked, strict=True)]

        def rank(queries: list[int], fetch: int) -> list[list[dict]]:
            if ranked is None:
                return lexical.search([texts[i] for i in queries], fetch, subset=subset)
            return [ranked[i][:fetch] for i in queries]

        if group_by == "passage" or not self._has_passages():
            return rank(list(range(len(texts))), k)
        return documents_ranked(rank, len(texts), k, total=len(lexical))

    def encode_candidates(self, texts: list[str]) -> list:
        """Document token vectors of BM25's candidates, for the MaxSim rerank (never pooled; a server encodes them
        in chunks behind its queries); at :func:`~colbert_az_pylate.retrieval.rerank`'s batch size."""
        return self.model.encode(
            texts,
            is_query=False,
            batch_size=rerank_batch_size(self.model),
            show_progress_bar=self._progress(len(texts)),
        )

    def _maxsim_reranked(self, texts: list[str], found: list[list[dict]]) -> list[list[dict]]:
        """``found`` entries per query reranked by exact MaxSim (each distinct entry encoded once, not pooled)."""
        unique = list(dict.fromkeys(entry["id"] for entries in found for entry in entries))
        if not unique:
            return [[] for _ in texts]
        vectors = self.encode_candidates([self.lexical.payload(entry_id)["text"] for entry_id in unique])
        by_id = dict(zip(unique, vectors, strict=True))
        reranked = []
        for query, entries in zip(self.encode_queries(texts), found, strict=True):
            if not entries:
                reranked.append([])
                continue
            order, scores = rerank_scores(query, [by_id[entry["id"]] for entry in entries])
            reranked.append([{"id": entries[i]["id"], "score": float(scores[i])} for i in order])
        return reranked
