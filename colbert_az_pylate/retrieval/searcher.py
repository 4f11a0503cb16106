"""``Searcher``: index texts and search them with a colbert-az model, without assembling pylate pieces."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

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
from colbert_az_pylate.retrieval.backends import BACKENDS, backend_class
from colbert_az_pylate.retrieval.corpus import check_documents, check_metadata
from colbert_az_pylate.retrieval.encoding import encode_document_vectors
from colbert_az_pylate.retrieval.folders import check_backend, detect_backend
from colbert_az_pylate.retrieval.hits import Hit, rerank
from colbert_az_pylate.retrieval.hybrid import DEFAULT_CANDIDATES, HybridSearch, check_mode, documents_ranked
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.lexical import LEXICAL_MANIFEST
from colbert_az_pylate.retrieval.passages import (
    DEFAULT_OVERLAP,
    PASSAGE_SEPARATOR,
    PassageReport,
    index_entries,
    passage_id,
)
from colbert_az_pylate.retrieval.plaid_index import MANIFEST as PLAID_MANIFEST
from colbert_az_pylate.signature import ModelSignature


def _no_vectors(chunk) -> None:
    """What a BM25 index is given for token vectors: nothing (its entries are never encoded)."""
    return None


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


class Searcher(HybridSearch):
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
            if backend not in (None, "qdrant"):
                raise InvalidArgumentError(
                    f"url= (--url) is a Qdrant server: backend must be 'qdrant', not {backend!r}"
                )
            if not str(folder).strip():
                raise InvalidArgumentError("the collection name is empty; name the index")
            backend = "qdrant"
        else:
            _check_index_folder(folder, writable=not read_only)
            if backend is None and mode in ("bm25", "bm25+rerank") and detect_backend(folder) is None:
                backend = "bm25"  # words only: nothing to encode at indexing time
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
        from colbert_az_pylate.retrieval.voyager_index import MANIFEST

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
        if backend == "qdrant":
            return cls._open_qdrant(folder, model, url, kwargs)

        manifest = Path(folder) / (LEXICAL_MANIFEST if backend == "bm25" else MANIFEST)
        if backend == "plaid":
            manifest, kwargs["backend"] = Path(folder) / PLAID_MANIFEST, "plaid"
            read_only = False  # PLAID indexes are never written after their build
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
        if kwargs.get("backend") == "plaid":
            return cls(model, folder, **kwargs)
        return cls(model, folder, read_only=read_only, **kwargs)

    @classmethod
    def _open_qdrant(cls, folder, model, url, kwargs) -> Searcher:
        """A Qdrant index (embedded folder or server collection) with the model its collection records."""
        kwargs["backend"] = "qdrant"
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

    def index(
        self,
        documents: Sequence[str],
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict] | None = None,
        *,
        upsert: bool = False,
        commit_every: int = 20_000,
        passages: bool = True,
        overlap: int = DEFAULT_OVERLAP,
    ) -> Searcher:
        """Encode documents and add them to the index, after checking every argument (nothing is encoded before).

        A document longer than the model's document length is split into passages that the model encodes whole
        (:func:`~colbert_az_pylate.retrieval.passages.split_document`); :attr:`passage_report` says how many
        documents were split into how many passages.

        Parameters
        ----------
        documents
            The texts, non-empty.
        ids
            One unique non-empty string per document (without the character ``"\\x1f"``); default: their
            running number in the index.
        metadata
            One JSON-serialisable dict per document, returned with its hits; default: none.
        upsert
            Replace documents whose id is already indexed, every passage of them (``--upsert`` on the command
            line); without it such an id is an error and nothing is added.
        commit_every
            Documents per atomic commit (default 20,000); an interrupted run keeps the commits made.
        passages
            Split long documents into passages (default); ``False`` indexes each document as one text, truncated
            at the model's document length as before passages existed (``--no-passages``).
        overlap
            Tokens a passage shares with the previous one of its document (default 32; ``--overlap``).

        Returns
        -------
        Searcher
            ``self`` (see the class example).
        """
        documents = check_documents(documents)
        commit_every = check_count(commit_every, "commit_every")
        if ids is None:
            ids = self._next_ids(len(documents))
        ids = check_document_ids(ids, len(documents))
        marked = next((doc_id for doc_id in ids if PASSAGE_SEPARATOR in doc_id), None)
        if marked is not None:
            raise InvalidArgumentError(
                f"document id {marked!r} contains the character \\x1f, which marks passages in the index; "
                "remove it from the id"
            )
        metadata = check_metadata(metadata, ids)
        self._check_addable(ids, upsert)
        entries, self.passage_report = index_entries(
            documents,
            ids,
            metadata or [{}] * len(documents),
            self.model.tokenizer,
            int(self.model.document_length),
            passages,
            overlap,
        )
        return self._store(
            entries, ids, upsert, commit_every, lambda chunk: self.encode_documents([text for _, text, _ in chunk])
        )

    def index_encoded(self, folder: str | Path, *, upsert: bool = False, commit_every: int = 20_000) -> Searcher:
        """Add a corpus encoded by ``colbert-az encode`` (:func:`~colbert_az_pylate.retrieval.encoding.encode_corpus`)
        without encoding it again: the same entries, passages and payloads as :meth:`index` on that corpus.

        Parameters
        ----------
        folder
            The encoded folder (``--out`` of ``colbert-az encode``); refused, with nothing added, when it was
            encoded by another model, is unfinished, or has a missing, changed or extra shard.
        upsert
            Replace documents whose id is already indexed (as in :meth:`index`).
        commit_every
            Documents per atomic commit (default 20,000).

        Returns
        -------
        Searcher
            ``self``.

        Examples
        --------
        >>> import tempfile
        >>> from colbert_az_pylate import convert, load
        >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
        >>> from colbert_az_pylate.retrieval.corpus import Corpus
        >>> from colbert_az_pylate.retrieval.encoding import encode_corpus
        >>> folder = tempfile.mkdtemp()
        >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
        >>> corpus = Corpus(["baku", "sheki"], ["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı"], [{}, {}])
        >>> _ = encode_corpus(f"{folder}/model", corpus, f"{folder}/encoded", show_progress_bar=False)
        >>> searcher = Searcher(f"{folder}/model", f"{folder}/index", show_progress_bar=False)
        >>> [hit.id for hit in searcher.index_encoded(f"{folder}/encoded").search("Şəki xan sarayı", k=2)]
        ['sheki', 'baku']
        >>> import shutil; shutil.rmtree(folder)
        """
        from colbert_az_pylate.retrieval.encoding import EncodedCorpus

        commit_every = check_count(commit_every, "commit_every")
        encoded = EncodedCorpus.open(folder)
        if not self.signature.made(encoded.model):
            raise IndexFormatError(
                f"{folder} was encoded by {encoded.model.get('name')} (fingerprint {encoded.model.get('fingerprint')}, "
                f"dimension {encoded.model.get('embedding_size')}), not by {self.signature.name} "
                f"({self.signature.fingerprint}, dimension {self.embedding_size}); index it with that model"
            )
        entries, vectors = encoded.entries_and_vectors()
        ids = [document[0][2].get("document", document[0][0]) for document in entries]
        self._check_addable(ids, upsert)
        self.passage_report = PassageReport()
        for document in entries:
            self.passage_report.add(len(document))
        return self._store(
            entries, ids, upsert, commit_every, lambda chunk: [np.asarray(vectors[e], np.float32) for e, _, _ in chunk]
        )

    def _check_addable(self, ids: list[str], upsert: bool) -> None:
        """Refuse, before any work, ids already indexed (without upsert) and additions to a built PLAID index."""
        if self.backend_type.updatable and not upsert:
            present = [doc_id for doc_id in ids if self._has_document(doc_id)]
            if present:
                raise InvalidArgumentError(
                    f"{len(present)} ids are already in the index at {self.folder} (e.g. {present[:3]}); pass "
                    "upsert=True (--upsert on the command line) to replace them, or override=True (--override) to "
                    "start afresh"
                )
        if not self.backend_type.updatable and self.index_store is not None:
            raise ColbertAzError(
                f"the {self.backend_title} index at {self.folder} is built once; rebuild it with override=True "
                "(--override)"
            )

    def _store(self, entries, ids, upsert: bool, commit_every: int, vectors_of) -> Searcher:
        """Write per-document ``entries`` to the index in commits of ``commit_every`` documents; ``vectors_of``
        gives the token vectors of a list of entries (encoded now, or read from shards)."""
        if not self.backend_type.updatable:
            return self._build_once([entry for document in entries for entry in document], vectors_of)
        if not BACKENDS[self.backend].stores_vectors:
            vectors_of = _no_vectors  # a BM25 index: the texts are all it keeps
        steps = range(0, len(entries), commit_every)
        companion = self._companion()
        # with override=True, an index with commits replaces the old one only when all is added (Qdrant: see docs);
        # a BM25 companion commits after each commit of the vectors (with override: once, after theirs)
        words_batch = companion.batch() if companion is not None and self.override else nullcontext()
        with words_batch, self.index_store.batch():
            for start in tqdm(steps, desc="Indexing", disable=len(steps) < 2):
                chunk = [entry for document in entries[start : start + commit_every] for entry in document]
                stale = []
                if upsert:
                    fresh = {entry_id for entry_id, _, _ in chunk}
                    for doc_id in ids[start : start + commit_every]:
                        stale.extend(e for e in self._stored_entries(doc_id) if e not in fresh)
                chunk_ids, payloads = [entry_id for entry_id, _, _ in chunk], [payload for _, _, payload in chunk]
                self.index_store.write_entries(
                    chunk_ids,
                    vectors_of(chunk),
                    payloads,
                    upsert=upsert,
                    stale=stale,  # removed in the same commit, or after the new passages are in
                )
                if companion is not None:
                    companion.write_entries(chunk_ids, None, payloads, upsert=upsert, stale=stale)
        return self

    def _stored_entries(self, doc_id: str) -> list[str]:
        """The index ids a document is stored under: its own, or those of its passages (empty when absent)."""
        store = self.index_store
        if store is None:
            return []
        if doc_id in store:
            return [doc_id]
        found, number = [], 0
        while passage_id(doc_id, number) in store:
            found.append(passage_id(doc_id, number))
            number += 1
        return found

    def _has_document(self, doc_id: str) -> bool:
        store = self.index_store
        return store is not None and (doc_id in store or passage_id(doc_id, 0) in store)

    def _next_ids(self, count: int) -> list[str]:
        """Running numbers from the number of documents indexed, skipping ids in use (after deletes)."""
        number, ids = len(self), []
        while len(ids) < count:
            if not self._has_document(str(number)):
                ids.append(str(number))
            number += 1
        return ids

    def _build_once(self, entries: list[tuple[str, str, dict]], vectors_of) -> Searcher:
        """Build an index that is written once (PLAID) from all its entries."""
        self.index_store = self.backend_type.build_for_searcher(
            self.folder,
            [entry_id for entry_id, _, _ in entries],
            vectors_of(entries),
            [payload for _, _, payload in entries],
            signature=self.signature,
            override=self.override,
            show_progress=bool(self._progress(len(entries))),
            settings=self.index_settings,
        )
        if self._companion() is not None:
            self._companion().replace_all(
                [entry_id for entry_id, _, _ in entries], [payload for _, _, payload in entries]
            )
        return self

    def add(self, documents: Sequence[str], ids: Sequence[str] | None = None, metadata=None, **kwargs) -> Searcher:
        """Add documents to a Voyager index (PLAID indexes are rebuilt instead); the arguments of :meth:`index`."""
        if not self.backend_type.updatable and self.index_store is not None:
            raise ColbertAzError(
                f"{self.backend_title} indexes cannot be changed in place; rebuild with override=True "
                "(--override on the command line)"
            )
        return self.index(documents, ids, metadata, **kwargs)

    def delete(self, ids: str | Sequence[str]) -> Searcher:
        """Remove documents by id, every passage of them, in one commit (an unknown id is an error and nothing is
        removed).

        Parameters
        ----------
        ids
            One id or a list of ids.

        Returns
        -------
        Searcher
            ``self`` (see the class example).
        """
        if not self.backend_type.updatable:
            raise ColbertAzError(
                f"{self.backend_title} indexes cannot be changed in place; rebuild without those documents"
            )
        if isinstance(ids, str):
            ids = [ids]
        if isinstance(ids, bytes) or not isinstance(ids, Iterable):
            raise InvalidArgumentError(f"ids must be an id or a list of ids, got {type(ids).__name__}")
        entries, missing = [], []
        for doc_id in dict.fromkeys(ids):
            stored = self._stored_entries(doc_id) if isinstance(doc_id, str) else []
            entries.extend(stored)
            if not stored:
                missing.append(doc_id)
        if missing:
            raise InvalidArgumentError(
                f"{len(missing)} ids are not in the index (e.g. {missing[:3]}); nothing was removed"
            )
        self.index_store.remove_documents(entries)
        if self._companion() is not None:
            self._companion().remove_documents(entries)
        return self

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
        """Rank ``documents`` for ``query`` by exact MaxSim, with this searcher's model (see :func:`rerank`)."""
        return rerank(self.model, query, documents, batch_size=self.batch_size)

    def __len__(self) -> int:
        """Number of documents in the index (a document split into passages counts once)."""
        if self.index_store is None:
            return 0
        if not self._has_passages():
            return len(self.index_store)
        return self.index_store.document_count()  # a split document counts once
