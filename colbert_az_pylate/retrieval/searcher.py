"""``Searcher``: index texts and search them with a colbert-az model, without assembling pylate pieces."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    InvalidArgumentError,
    OutputExistsError,
    check_count,
    first_line,
)
from colbert_az_pylate.files import looks_like_local_path
from colbert_az_pylate.loading import resolve_model
from colbert_az_pylate.retrieval.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    REMOTE_BACKEND,
    WORDS_ONLY_BACKEND,
    WORDS_ONLY_MODES,
    backend_class,
)
from colbert_az_pylate.retrieval.encoding import encode_document_vectors
from colbert_az_pylate.retrieval.folders import check_backend, detect_backend
from colbert_az_pylate.retrieval.hits import Hit, rerank
from colbert_az_pylate.retrieval.hybrid import DEFAULT_CANDIDATES, HybridSearch, check_mode, documents_ranked
from colbert_az_pylate.retrieval.passages import (
    PassageReport,
)
from colbert_az_pylate.retrieval.writing import IndexWriting
from colbert_az_pylate.signature import ModelSignature


def _check_index_folder(name: str | Path, writable: bool) -> None:
    """Refuse, before anything is loaded or created, an index folder that is a file or cannot be created."""
    if not str(name).strip():
        raise InvalidArgumentError("the index folder name is empty; name a folder for the index")
    folder = Path(name)
    if folder.exists():
        if not folder.is_dir():
            raise InvalidArgumentError(f"the index folder {folder} is a file; name a folder (new, or an index)")
        return
    parent = next((p for p in folder.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InvalidArgumentError(f"cannot create the index folder {folder}: {parent} is a file")
    if writable and parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"cannot create the index folder {folder}: {parent} is not writable")


class Searcher(IndexWriting, HybridSearch):
    """A colbert-az model plus an index folder: index texts, search them, rerank without an index.

    Parameters
    ----------
    model
        A pylate ColBERT or anything :func:`colbert_az_pylate.load` accepts (a converted folder, a raw colbert-az
        folder, a hub id); the index records it, so :meth:`Searcher.open` finds it again.
    folder
        The index folder (created when missing; must not be a file).
    backend
        ``"voyager"`` (:class:`VoyagerIndex`: HNSW + exact rerank, updatable), ``"plaid"`` (:class:`PlaidIndex`:
        built once, for large corpora), ``"qdrant"`` (:class:`QdrantIndex`: exact MaxSim in Qdrant, embedded in
        ``folder`` or on a server with ``url``; updatable) or ``"bm25"`` (:class:`LexicalIndex`: words only, no
        token vectors; what ``mode="bm25"``/``"bm25+rerank"`` build); ``None`` (default): the folder's own backend,
        Voyager for a new folder. A backend other than the folder's is refused (``--backend`` on the command line).
    mode
        How :meth:`search` ranks by default, and so what the index keeps (``--mode``): ``"late"`` (token vectors,
        MaxSim: the model card's retrieval), ``"bm25"`` (words only, Azerbaijani-aware BM25), ``"bm25+rerank"``
        (BM25's top candidates reranked by MaxSim: no vector index at all) or ``"fusion"`` (reciprocal rank fusion
        of late and BM25: vectors plus a BM25 index in ``folder/bm25``). ``None`` (default): the mode the folder
        was built for, ``"late"`` for a new one. See :mod:`~colbert_az_pylate.retrieval.hybrid`.
    override
        Start the index afresh (``--override`` on the command line). The old index stays intact until the new one
        is complete (the end of :meth:`index`), and is kept if indexing fails.
    read_only
        Open without taking the writer lock, to search while another process writes.
    batch_size
        Encoding batch size, a whole number >= 1 (default 32).
    pool_factor
        With ``pool_factor > 1`` each document's token vectors are pooled about ``pool_factor``:1 when it is
        encoded (pylate's hierarchical pooling): a smaller, faster-to-build index at some recall (docs/benchmarks.md
        has the trade-off); queries are never pooled. Pass the same value whenever you add to the same index.
    show_progress_bar
        Progress bars while encoding (default: on long work only).
    url
        A Qdrant server or cluster (``backend="qdrant"``, implied): ``folder`` is then the collection's name and
        nothing is written locally (``--url``).
    api_key
        The Qdrant server's API key (default: ``$QDRANT_API_KEY``; ``--api-key-env VAR`` on the command line).
    encoder
        What runs the model's backbone: ``"torch"`` (default), ``"onnx"`` or ``"openvino"`` (``--encoder``; see
        :func:`colbert_az_pylate.load`). Any encoder searches an index built by any other: same weights, same
        index signature.
    quantize
        ``"int8"`` with ``encoder="onnx"``/``"openvino"`` (``--quantize``).
    **index_settings
        Passed to the index class (``M``, ``ef_construction``, ``ef_search`` …; ``batch_size``/``shard_number``
        … of :class:`QdrantIndex` go as ``qdrant_batch_size``/``shard_number`` …).

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
    >>> searcher = Searcher(f"{folder}/model", f"{folder}/index", show_progress_bar=False)
    >>> _ = searcher.index(["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı"], ids=["baku", "sheki"])
    >>> [hit.id for hit in searcher.search("Şəki xan sarayı", k=2)]
    ['sheki', 'baku']
    >>> _ = searcher.delete(["sheki"])
    >>> len(searcher), Searcher.open(f"{folder}/index").search("Şəki", k=1)[0].id
    (1, 'baku')
    >>> import shutil; shutil.rmtree(folder)
    """

    def __init__(
        self,
        model,
        folder: str | Path,
        *,
        backend: str | None = None,
        override: bool = False,
        read_only: bool = False,
        batch_size: int = 32,
        pool_factor: int = 1,
        show_progress_bar: bool | None = None,
        url: str | None = None,
        api_key: str | None = None,
        encoder: str = "torch",
        quantize: str | None = None,
        mode: str | None = None,
        **index_settings,
    ) -> None:
        if mode is not None:
            check_mode(mode)
        if not isinstance(pool_factor, int) or isinstance(pool_factor, bool) or pool_factor < 1:
            raise InvalidArgumentError(f"pool_factor must be an integer >= 1 (1 = no pooling), got {pool_factor!r}")
        batch_size = check_count(batch_size, "batch_size")
        if url is not None:
            if backend not in (None, REMOTE_BACKEND):
                raise InvalidArgumentError(
                    f"url= (--url) is a {BACKENDS[REMOTE_BACKEND].title} server: backend must be "
                    f"{REMOTE_BACKEND!r}, not {backend!r}"
                )
            if not str(folder).strip():
                raise InvalidArgumentError("the collection name is empty; name the index")
            backend = REMOTE_BACKEND
        else:
            _check_index_folder(folder, writable=not read_only)
            if backend is None and mode in WORDS_ONLY_MODES and detect_backend(folder) is None:
                backend = WORDS_ONLY_BACKEND  # words only: nothing to encode at indexing time
            backend = check_backend(folder, backend)  # before any work: a folder of someone else's, a lost manifest
        self.pool_factor = pool_factor
        self.model, name = resolve_model(model, encoder, quantize)
        self.folder, self.backend, self.override = Path(folder), backend, override
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.signature = ModelSignature.of_model(self.model, name)
        self.embedding_size = self.signature.embedding_size
        self.index_settings = index_settings
        self.passage_report: PassageReport | None = None  # what the last index()/add() split
        self.passage_tokenizer = None  # what splits long documents; None: the model's (a server's takes its lock)
        self.url = url
        self.backend_type = backend_class(backend)  # what the index can do: see retrieval.backends
        self.backend_title = BACKENDS[backend].title
        self.index_store = self.backend_type.open_for_searcher(
            self.folder,
            signature=self.signature,
            embedding_size=self.embedding_size,
            override=override,
            read_only=read_only,
            show_progress=show_progress_bar,
            url=url,
            api_key=api_key,
            settings=index_settings,
        )
        self.lexical = self._open_lexical(mode, read_only, override)
        self.mode = self._default_mode(mode)

    @classmethod
    def open(
        cls, folder: str | Path, *, model=None, read_only: bool = True, url: str | None = None, **kwargs
    ) -> Searcher:
        """Open an index folder with the model recorded in it (or ``model``).

        Parameters
        ----------
        folder
            An index folder written by :meth:`index` (either backend).
        model
            The model to encode queries with (``--model`` on the command line); default: the one the index records.
        read_only
            Open a Voyager index without the writer lock (default), so another process may write meanwhile.
        url
            A Qdrant server: ``folder`` is the collection's name (``api_key=`` in ``kwargs``).
        **kwargs
            Other :class:`Searcher` arguments (``batch_size``, ``show_progress_bar`` …).

        Returns
        -------
        Searcher
            A searcher over the existing index (see the class example).
        """
        if url is not None:
            return cls._open_qdrant(folder, model, url, kwargs)
        if Path(folder).exists() and not Path(folder).is_dir():
            raise InvalidArgumentError(f"{folder} is a file, not an index folder")
        try:
            backend = detect_backend(folder)
        except OutputExistsError:  # its advice is for writing; a reader needs to hear what the folder is not
            raise InvalidArgumentError(
                f"{folder} is not an index folder; pass the folder given to `colbert-az index --index`"
            ) from None
        entry = BACKENDS[backend or DEFAULT_BACKEND]
        if entry.manifest is None:  # the index records its model itself (a Qdrant collection)
            return cls._open_qdrant(folder, model, url, kwargs)
        manifest = Path(folder) / entry.manifest
        if backend is not None:
            kwargs.setdefault("backend", backend)
        if not entry.updatable:
            read_only = False  # an index built once is never written after its build: no writer lock to spare
        if model is None:
            if not manifest.exists():
                raise InvalidArgumentError(
                    f"no index at {folder}; build one with `colbert-az index MODEL CORPUS --index DIR`"
                )
            try:
                recorded = json.loads(manifest.read_text(encoding="utf-8")).get("model") or {}
                model = recorded.get("name")
            except (OSError, ValueError, AttributeError) as exc:
                raise IndexFormatError(
                    f"the index at {folder} has an unreadable {manifest.name}: {first_line(exc)}"
                ) from exc
            if not model:
                raise IndexFormatError(
                    f"the index at {folder} records no model; pass model= (--model on the command line)"
                )
            if looks_like_local_path(model) and not Path(model).exists():
                raise IndexFormatError(
                    f"the index at {folder} was built with {model}, which is no longer there; pass the model's "
                    "new place (or a copy) as model= (--model on the command line)"
                )
        return cls(model, folder, read_only=read_only, **kwargs)

    @classmethod
    def _open_qdrant(cls, folder, model, url, kwargs) -> Searcher:
        """A Qdrant index (embedded folder or server collection) with the model its collection records."""
        kwargs["backend"] = REMOTE_BACKEND
        if model is None:
            from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex

            folder_path = Path(folder)
            probe = QdrantIndex(
                str(folder_path.parent) if url is None else "indexes",
                folder_path.name if url is None else str(folder),
                url=url,
                api_key=kwargs.get("api_key"),
                open_existing=True,
            )
            try:
                model = (probe.model or {}).get("name")
            finally:
                probe.close()
            if not model:
                raise IndexFormatError(
                    f"the Qdrant index at {folder} records no model; pass model= (--model on the command line)"
                )
        return cls(model, folder, url=url, **kwargs)

    def _progress(self, count: int) -> bool:
        return self.show_progress_bar if self.show_progress_bar is not None else count > 256

    def encode_documents(self, documents: Sequence[str]) -> list[np.ndarray]:
        """Document token vectors; with ``pool_factor > 1`` pooled by pylate's hierarchical token pooling
        (:func:`~colbert_az_pylate.retrieval.pooling.pool_document_tokens`: about ``1 / pool_factor`` of the
        vectors, the first one kept as is)."""
        return encode_document_vectors(
            self.model, documents, self.batch_size, self.pool_factor, self._progress(len(documents))
        )

    def encode_queries(self, queries: Sequence[str]) -> list[np.ndarray]:
        """Query token vectors (never pooled)."""
        return self.model.encode(
            list(queries),
            is_query=True,
            batch_size=self.batch_size,
            show_progress_bar=self._progress(len(queries)),
            convert_to_numpy=True,
        )

    def _hit(self, entry: dict) -> Hit:
        payload = self.index_store.payload(entry["id"])
        text = payload.get("text")
        if "document" in payload:  # a passage of a split document
            document, number, span = payload["document"], payload.get("passage"), tuple(payload.get("span", ()))
        else:
            document, number, span = entry["id"], 0, ((0, len(text)) if isinstance(text, str) else None)
        return Hit(document, entry["score"], text, payload.get("metadata") or {}, number, span or None)

    def _has_passages(self) -> bool:
        """Whether any entry of the index is a passage (cached per commit of the index)."""
        store = self.index_store
        if store.updatable and not store.commits:  # another process may write at any moment: ask each time
            return store.passage_count() > 0
        state = (id(store), getattr(store, "generation", None), len(store))
        if getattr(self, "_passages_at", None) != state:
            self._any_passage = store.passage_count() > 0
            self._passages_at = state
        return self._any_passage

    def _ranked(self, embeddings, k: int, exact: bool | None, k_token: int, subset) -> list[list[dict]]:
        return self.index_store.rank(embeddings, k, exact=exact, k_token=k_token, subset=subset)

    def _documents_ranked(self, embeddings, k: int, exact: bool | None, k_token: int, subset) -> list[list[dict]]:
        """Top ``k`` documents per query, each at its best passage: passages are fetched until ``k`` documents."""

        def rank(queries: list[int], fetch: int) -> list[list[dict]]:
            return self._ranked([embeddings[i] for i in queries], fetch, exact, k_token, subset)

        return documents_ranked(rank, len(embeddings), k, total=len(self.index_store))

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        mode: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        exact: bool | None = None,
        k_token: int = 256,
        subset: Sequence[str] | None = None,
        group_by: str = "document",
    ) -> list[Hit] | list[list[Hit]]:
        """Ranked hits for one query or for several.

        Parameters
        ----------
        queries
            One query text, or a list of them.
        k
            Hits per query, a whole number >= 1 (default 10).
        mode
            ``"late"``, ``"bm25"``, ``"bm25+rerank"`` or ``"fusion"`` (see the class; default: the searcher's
            ``mode``). A hit's score is MaxSim in ``late`` and ``bm25+rerank``, BM25's in ``bm25`` (texts sharing no
            word with the query are left out) and the fused reciprocal rank in ``fusion``.
        candidates
            How deep BM25 (``bm25+rerank``) or each of the two rankings (``fusion``) goes, a whole number >= 1
            (default 100; at least ``k``).
        exact
            ``None`` (default): score every document by exact MaxSim when that is faster than the graph (a small
            Voyager index: recall 1.0 at a lower cost, see :attr:`VoyagerIndex.exact_is_faster`), else search the
            graph; ``True``: always exact (``--exact``; the yardstick of the graph); ``False``: always the graph
            (``--no-exact``).
        k_token
            Graph neighbours per query token (Voyager; default 256).
        subset
            Only these document ids may be returned (a list of ids).
        group_by
            ``"document"`` (default): one hit per document, scored by its best passage and carrying that passage's
            text, number and span; ``"passage"``: every passage on its own (``--passages`` on the command line),
            so a document may appear several times.

        Returns
        -------
        list[Hit] | list[list[Hit]]
            For one query, its hits best first; for a list of queries, one such list per query (see the class
            example).
        """
        single = isinstance(queries, str)
        if not single and (isinstance(queries, bytes) or not isinstance(queries, Iterable)):
            raise InvalidArgumentError(f"queries must be a text or a list of texts, got {type(queries).__name__}")
        batch = [queries] if single else list(queries)
        if not batch or any(not isinstance(q, str) or not q.strip() for q in batch):
            raise InvalidArgumentError("queries must be non-empty texts")
        mode = self._search_mode(mode)
        check_count(candidates, "candidates")
        self._check_search(k, exact, k_token, subset, group_by)  # before the encoding: a bad argument costs nothing
        if mode == "late":
            results = self.search_encoded(
                self.encode_queries(batch), k, exact=exact, k_token=k_token, subset=subset, group_by=group_by
            )
        else:
            ranked = self._search_hybrid(
                batch, mode, k, candidates, exact, k_token, self._subset_entries(subset), group_by
            )
            results = [[self._hit(entry) for entry in entries] for entries in ranked]
        return results[0] if single else results

    def _check_search(self, k, exact, k_token, subset, group_by) -> None:
        check_count(k, "k")
        check_count(k_token, "k_token")
        if exact is not None and not isinstance(exact, bool):
            raise InvalidArgumentError(f"exact must be True, False or None (the faster of the two), got {exact!r}")
        if subset is not None and (isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable)):
            raise InvalidArgumentError("subset must be a list of document ids, not one id; wrap it in a list")
        if group_by not in ("document", "passage"):
            raise InvalidArgumentError(f"group_by must be 'document' or 'passage', got {group_by!r}")
        if self.index_store is None or len(self.index_store) == 0:
            raise ColbertAzError(f"the index at {self.folder} is empty; index documents before searching")

    def search_encoded(
        self,
        query_embeddings: Sequence[np.ndarray],
        k: int = 10,
        *,
        exact: bool | None = None,
        k_token: int = 256,
        subset: Sequence[str] | None = None,
        group_by: str = "document",
    ) -> list[list[Hit]]:
        """Ranked hits for queries already encoded (by :meth:`encode_queries`): the index half of :meth:`search`.

        Parameters
        ----------
        query_embeddings
            One (tokens, dim) matrix per query.
        k, exact, k_token, subset, group_by
            As in :meth:`search`.

        Returns
        -------
        list[list[Hit]]
            One list of hits per query, best first.
        """
        self._check_search(k, exact, k_token, subset, group_by)
        subset = self._subset_entries(subset)
        if group_by == "passage" or not self._has_passages():
            ranked = self._ranked(query_embeddings, k, exact, k_token, subset)
        else:
            ranked = self._documents_ranked(query_embeddings, k, exact, k_token, subset)
        return [[self._hit(entry) for entry in entries] for entries in ranked]

    def _subset_entries(self, subset: Sequence[str] | None) -> list[str] | None:
        """The index entries of the documents in ``subset`` (each passage of a split one)."""
        if subset is None:
            return None
        return [entry for doc_id in subset if isinstance(doc_id, str) for entry in self._stored_entries(doc_id)]

    def rerank(self, query: str, documents: Sequence[str]) -> list[Hit]:
        """Rank ``documents`` for ``query`` by exact MaxSim with this searcher's model, as :func:`rerank` does."""
        return rerank(self.model, query, documents)  # rerank's batch size, measured for it

    def __len__(self) -> int:
        """Number of documents in the index (a document split into passages counts once)."""
        if self.index_store is None:
            return 0
        if not self._has_passages():
            return len(self.index_store)
        return self.index_store.document_count()  # a split document counts once
