"""``Searcher``: index texts and search them with a colbert-az model, without assembling pylate pieces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.retrieval.plaid_index import MANIFEST as PLAID_MANIFEST
from colbert_az_pylate.retrieval.plaid_index import PlaidIndex
from colbert_az_pylate.retrieval.pooling import pool_document_tokens
from colbert_az_pylate.retrieval.voyager_index import ModelSignature, VoyagerIndex
from colbert_az_pylate.scores import packed_maxsim_scores

BACKENDS = ("voyager", "plaid")


@dataclass
class Hit:
    """One ranked result."""

    id: str
    score: float
    text: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


def check_documents(documents: Sequence[str]) -> list[str]:
    """The documents as a list, or a one-line error naming the first empty or non-text one."""
    if isinstance(documents, str):
        raise ColbertAzError("documents must be a list of texts, not one string; wrap it in a list")
    documents = list(documents)
    if not documents:
        raise ColbertAzError("the corpus is empty: there is nothing to index")
    for position, text in enumerate(documents):
        if not isinstance(text, str):
            raise ColbertAzError(f"document {position} is a {type(text).__name__}, not text")
        if not text.strip():
            raise ColbertAzError(f"document {position} is empty or whitespace only; drop it or give it text")
    return documents


def rerank(model, query: str, documents: Sequence[str], batch_size: int = 32) -> list[Hit]:
    """Rank ``documents`` for ``query`` by exact MaxSim, no index needed; hit ids are the documents' positions.

    >>> from colbert_az_pylate import load
    >>> rerank(load("./colbert-az-pylate"), "paytaxt", ["Bakı paytaxtdır.", "Şəki"])[0].id  # doctest: +SKIP
    '0'
    """
    documents = check_documents(documents)
    if not isinstance(query, str) or not query.strip():
        raise ColbertAzError("the query must be a non-empty text")
    model, _ = _resolve_model(model)
    query_vectors = model.encode([query], is_query=True, batch_size=batch_size, show_progress_bar=False)[0]
    vectors = model.encode(documents, is_query=False, batch_size=batch_size, show_progress_bar=len(documents) > 256)
    starts = np.cumsum([0] + [len(v) for v in vectors[:-1]])
    scores = packed_maxsim_scores(np.asarray(query_vectors), np.concatenate(vectors), starts)
    order = np.argsort(-scores, kind="stable")
    return [Hit(str(i), float(scores[i]), documents[i]) for i in order]


def _resolve_model(model):
    if isinstance(model, (str, Path)):
        from colbert_az_pylate.loading import load

        name = str(Path(model).resolve()) if Path(model).exists() else str(model)
        return load(model), name
    return model, None


class Searcher:
    """A colbert-az model plus a :class:`VoyagerIndex` folder: index texts, search them, rerank without an index.

    ``model`` is a pylate ColBERT or anything :func:`colbert_az_pylate.load` accepts (the folder's manifest
    records it, so ``Searcher.open(folder)`` finds it again). ``index_settings`` go to :class:`VoyagerIndex`.
    ``pool_factor > 1`` pools each document's token vectors about ``pool_factor``:1 when it is encoded (pylate's
    hierarchical pooling): a smaller, faster-to-build index at some recall (docs/benchmarks.md has the trade-off);
    queries are never pooled. Pass the same value whenever you add to the same index.

    >>> from colbert_az_pylate.retrieval import Searcher
    >>> searcher = Searcher("./colbert-az-pylate", "./my-index")  # doctest: +SKIP
    >>> searcher.index(["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı"], ids=["baku", "sheki"])  # doctest: +SKIP
    >>> searcher.search("Azərbaycanın paytaxtı haradır?", k=1)[0].id  # doctest: +SKIP
    'baku'
    """

    def __init__(
        self,
        model,
        folder: str | Path,
        *,
        backend: str = "voyager",
        override: bool = False,
        read_only: bool = False,
        batch_size: int = 32,
        pool_factor: int = 1,
        show_progress_bar: bool | None = None,
        **index_settings,
    ) -> None:
        if backend not in BACKENDS:
            raise ColbertAzError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(pool_factor, int) or isinstance(pool_factor, bool) or pool_factor < 1:
            raise ColbertAzError(f"pool_factor must be an integer >= 1 (1 = no pooling), got {pool_factor!r}")
        self.pool_factor = pool_factor
        self.model, name = _resolve_model(model)
        self.folder, self.backend, self.override = Path(folder), backend, override
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.signature = ModelSignature.of_model(self.model, name)
        self.embedding_size = self.signature.embedding_size
        self.index_settings = index_settings
        if backend == "plaid":
            exists = (self.folder / PLAID_MANIFEST).exists() and not override
            self.index_store = PlaidIndex(self.folder, model=self.signature, **index_settings) if exists else None
            return
        self.index_store = VoyagerIndex(
            str(self.folder.parent),
            self.folder.name,
            override=override,
            embedding_size=self.embedding_size,
            model=self.signature,
            read_only=read_only,
            show_progress=show_progress_bar,
            **index_settings,
        )

    @classmethod
    def open(cls, folder: str | Path, *, model=None, read_only: bool = True, **kwargs) -> Searcher:
        """Open an index folder with the model recorded in it (or ``model``)."""
        from colbert_az_pylate.retrieval.voyager_index import MANIFEST

        manifest = Path(folder) / MANIFEST
        if (Path(folder) / PLAID_MANIFEST).exists():
            manifest, kwargs["backend"] = Path(folder) / PLAID_MANIFEST, "plaid"
            read_only = False  # PLAID indexes are never written after their build
        if model is None:
            if not manifest.exists():
                raise ColbertAzError(
                    f"no index at {folder}; build one with `colbert-az index MODEL CORPUS --index DIR`"
                )
            import json

            recorded = json.loads(manifest.read_text(encoding="utf-8")).get("model") or {}
            model = recorded.get("name")
            if not model:
                raise ColbertAzError(f"the index at {folder} records no model; pass the model explicitly")
        if kwargs.get("backend") == "plaid":
            return cls(model, folder, **kwargs)
        return cls(model, folder, read_only=read_only, **kwargs)

    def _progress(self, count: int) -> bool:
        return self.show_progress_bar if self.show_progress_bar is not None else count > 256

    def encode_documents(self, documents: Sequence[str]) -> list[np.ndarray]:
        """Document token vectors; with ``pool_factor > 1`` pooled by pylate's hierarchical token pooling
        (:func:`~colbert_az_pylate.retrieval.pooling.pool_document_tokens`: about ``1 / pool_factor`` of the
        vectors, the first one kept as is)."""
        vectors = self.model.encode(
            list(documents),
            is_query=False,
            batch_size=self.batch_size,
            show_progress_bar=self._progress(len(documents)),
            convert_to_numpy=True,
        )
        vectors = [np.asarray(v, dtype=np.float32) for v in vectors]
        if self.pool_factor > 1:
            vectors = [pool_document_tokens(v, self.pool_factor) for v in vectors]
        return vectors

    def encode_queries(self, queries: Sequence[str]) -> list[np.ndarray]:
        return self.model.encode(
            list(queries),
            is_query=True,
            batch_size=self.batch_size,
            show_progress_bar=self._progress(len(queries)),
            convert_to_numpy=True,
        )

    def index(
        self,
        documents: Sequence[str],
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict] | None = None,
        *,
        upsert: bool = False,
        commit_every: int = 20_000,
    ) -> Searcher:
        """Encode and add documents; ids default to their running number. One commit per ``commit_every``."""
        documents = check_documents(documents)
        if ids is None:
            first = len(self.index_store.doc_ids)
            ids = [str(first + i) for i in range(len(documents))]
        ids = list(ids)
        if len(ids) != len(documents):
            raise ColbertAzError(f"{len(documents)} documents but {len(ids)} ids")
        if metadata is not None and len(metadata) != len(documents):
            raise ColbertAzError(f"{len(documents)} documents but {len(metadata)} metadata entries")
        if len(set(ids)) != len(ids):
            raise ColbertAzError("duplicate ids in the corpus; give every document its own id")
        if self.backend == "plaid":
            return self._build_plaid(documents, ids, metadata)
        steps = range(0, len(documents), commit_every)
        for start in tqdm(steps, desc="Indexing", disable=len(steps) < 2):
            chunk = slice(start, start + commit_every)
            payloads = [
                {"text": text, "metadata": meta}
                for text, meta in zip(documents[chunk], (metadata or [{}] * len(documents))[chunk], strict=True)
            ]
            self.index_store.add_documents(
                ids[chunk], self.encode_documents(documents[chunk]), upsert=upsert, payloads=payloads
            )
        return self

    def _build_plaid(self, documents: list[str], ids: list[str], metadata: Sequence[dict] | None) -> Searcher:
        if self.index_store is not None:
            raise ColbertAzError(
                f"the PLAID index at {self.folder} is built once; rebuild it with override=True (--override)"
            )
        payloads = [
            {"text": t, "metadata": m} for t, m in zip(documents, metadata or [{}] * len(documents), strict=True)
        ]
        self.index_store = PlaidIndex.build(
            self.folder,
            ids,
            self.encode_documents(documents),
            payloads=payloads,
            model=self.signature,
            override=self.override,
            show_progress=bool(self._progress(len(documents))),
            **self.index_settings,
        )
        return self

    def add(self, documents: Sequence[str], ids: Sequence[str] | None = None, metadata=None, **kwargs) -> Searcher:
        """Add documents to a Voyager index (PLAID indexes are rebuilt instead)."""
        if self.backend == "plaid" and self.index_store is not None:
            raise ColbertAzError("PLAID indexes cannot be changed in place; rebuild with override=True")
        return self.index(documents, ids, metadata, **kwargs)

    def delete(self, ids: str | Sequence[str]) -> Searcher:
        """Remove documents by id (an unknown id is an error and nothing is removed)."""
        if self.backend == "plaid":
            raise ColbertAzError("PLAID indexes cannot be changed in place; rebuild without those documents")
        self.index_store.remove_documents(ids)
        return self

    def _hits(self, ranked: list[dict]) -> list[Hit]:
        hits = []
        for entry in ranked:
            payload = self.index_store.payload(entry["id"])
            hits.append(Hit(entry["id"], entry["score"], payload.get("text"), payload.get("metadata") or {}))
        return hits

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        exact: bool = False,
        k_token: int = 256,
        subset: Sequence[str] | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Ranked hits for one query (a list of :class:`Hit`) or for several (a list of lists).

        ``exact=True`` scores every document by brute-force MaxSim (small corpora; the yardstick of the graph).
        """
        single = isinstance(queries, str)
        batch = [queries] if single else list(queries)
        if not batch or any(not isinstance(q, str) or not q.strip() for q in batch):
            raise ColbertAzError("queries must be non-empty texts")
        if k < 1:
            raise ColbertAzError(f"k must be at least 1, got {k}")
        if self.index_store is None or len(self.index_store) == 0:
            raise ColbertAzError(f"the index at {self.folder} is empty; index documents before searching")
        embeddings = self.encode_queries(batch)
        if self.backend == "plaid":
            if exact:
                raise ColbertAzError("exact search needs the Voyager backend (PLAID keeps compressed vectors only)")
            ranked = self.index_store.search(embeddings, k=k, subset=subset)
        elif exact:
            if subset is not None:
                raise ColbertAzError("subset is for the graph search; exact search scores every document")
            ranked = self.index_store.exact_search(embeddings, k=k)
        else:
            ranked = self.index_store.search(embeddings, k=k, k_token=k_token, subset=subset)
        results = [self._hits(r) for r in ranked]
        return results[0] if single else results

    def rerank(self, query: str, documents: Sequence[str]) -> list[Hit]:
        """Rank ``documents`` for ``query`` by exact MaxSim (see :func:`rerank`)."""
        return rerank(self.model, query, documents, batch_size=self.batch_size)

    def __len__(self) -> int:
        return len(self.index_store) if self.index_store is not None else 0
