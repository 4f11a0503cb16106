"""``VoyagerIndex``: a drop-in for ``pylate.indexes.Voyager`` that is fast, crash-safe and free of pickle.

Layout of an index folder (``index_folder/index_name``)::

    manifest.json          the committed state: format, model, settings, counts, the files of this generation
    vectors.<epoch>.f16    every document token vector, document after document (append-only, float16)
    payloads.<epoch>.jsonl one JSON object per document (text, metadata) for the searcher (append-only)
    hnsw.<gen>.voyager     the HNSW graph over the token vectors (labels = rows of the candidate set)
    docs.<gen>.npz         per document: first row, length, payload offset/length, alive; per label: document;
                           per 64 KiB chunk of each store file: its SHA-256
    ids.<gen>.json         the document ids, in document order

A commit writes the new generation's files, then replaces ``manifest.json`` in one ``os.replace``; the
append-only files are only read up to the counts the manifest records (and truncated back to them by the next
writer; ``compact`` and ``override`` start a new epoch of them). A process killed at any point therefore leaves the
last committed index. Nothing is unpickled: ``numpy.load(allow_pickle=False)``, JSON and voyager's own format.

Checksums: the manifest records the SHA-256 of each generation file, checked when the index is opened; the
generation's ``docs`` file records the SHA-256 of every 64 KiB chunk of the two store files, checked the first
time a chunk is read (a search reads only its candidates' chunks) or all at once by :meth:`VoyagerIndex.verify`.

The class is composed of one mixin per concern, in :mod:`colbert_az_pylate.retrieval.voyager`: the store files
and their checksums (``store``), the manifest and its generation files (``manifest``), the graph and the searches
(``graph``), the writer lock and the writes (``writer``). This module keeps the constructor, the state they share,
pylate's ``Base`` interface and the :class:`~colbert_az_pylate.retrieval.backends.IndexBackend` contract.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pylate.indexes.base import Base

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, InvalidArgumentError, check_count
from colbert_az_pylate.retrieval.folders import LOCK, index_backend
from colbert_az_pylate.retrieval.folders import VOYAGER_MANIFEST as MANIFEST
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.passages import count_entries
from colbert_az_pylate.retrieval.vectors import as_matrices
from colbert_az_pylate.retrieval.voyager.graph import STORAGE, GraphSearch
from colbert_az_pylate.retrieval.voyager.manifest import DOC_ARRAYS, CommittedState
from colbert_az_pylate.retrieval.voyager.store import NO_SUMS, StoreFiles, encode_payloads
from colbert_az_pylate.retrieval.voyager.writer import Writer
from colbert_az_pylate.signature import ModelSignature

__all__ = ["LOCK", "MANIFEST", "ModelSignature", "VoyagerIndex"]

# Up to this many stored token vectors, exact MaxSim over all of them is faster than the graph search (and exact):
# the crossover measured by benchmarks/exact_crossover.py (benchmarks/results/exact-crossover.json).
# Read at every call of VoyagerIndex.exact_is_faster, from this module (tests patch it here).
EXACT_SEARCH_MAX_VECTORS = 150_000


class VoyagerIndex(Writer, GraphSearch, CommittedState, StoreFiles, Base):
    """HNSW (voyager) over document token vectors, with an exact MaxSim rerank from a memory-mapped store.

    Same constructor and methods as ``pylate.indexes.Voyager``, so ``pylate.retrieve.ColBERT(index=...)`` works
    unchanged (pylate's own ``test_voyager_index`` passes, see ``tests/test_pylate_voyager_port.py``); ``search`` is
    the faster end-to-end path (candidates from the graph, exact MaxSim over the stored vectors).

    Parameters
    ----------
    index_folder
        The folder that holds the index folder (created when missing).
    index_name
        The index folder's name inside ``index_folder``. It must be missing, empty, or an index of ours: a folder
        holding anything else, or index files without their manifest, is refused.
    override
        Replace the index in the folder. The old index stays intact, and readable, until the new one's first
        commit (the end of the first :meth:`add_documents`, :meth:`remove_documents` or :meth:`compact`, or of a
        :meth:`batch` block), which replaces it atomically; files in the folder that are not ours are kept.
    embedding_size
        The dimension of the token vectors (default 128).
    M
        HNSW graph degree (default 16).
    ef_construction
        HNSW build breadth (default 64).
    ef_search
        HNSW search breadth (default 256).
    model
        A :class:`ModelSignature` recorded at creation and checked at every open (keyword-only).
    storage
        Precision of the vectors inside the graph: ``"float8"`` (default), ``"e4m3"`` or ``"float32"``. The rerank
        always reads the float16 store, so this only affects which candidates are found.
    num_threads
        Threads for building and querying the graph (-1, default: all cores).
    read_only
        Open without taking the writer lock, to search while another process writes (:meth:`refresh` picks up
        its commits).
    show_progress
        Progress bars for building the graph and searching (default: on long work only).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((5, 8)).astype("float32") for _ in range(3)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     index = VoyagerIndex(folder, "demo", embedding_size=8)
    ...     index = index.add_documents(["a", "b", "c"], docs)
    ...     best = [hit["id"] for hit in index.search([docs[1][:2]], k=1)[0]]
    ...     again = VoyagerIndex(folder, "demo", override=True, embedding_size=8)  # the old index is still there
    ...     before = len(VoyagerIndex(folder, "demo", read_only=True, embedding_size=8))
    ...     again = again.add_documents(["d"], docs[:1])                          # now it is replaced
    ...     after = len(VoyagerIndex(folder, "demo", read_only=True, embedding_size=8))
    >>> best, before, after
    (['b'], 3, 1)
    """

    is_end_to_end_index = False
    # the IndexBackend contract (colbert_az_pylate.retrieval.backends): what this index can do
    backend_name = "voyager"
    updatable, commits, exact_search_available, always_exact = True, True, True, False

    def __init__(
        self,
        index_folder: str = "indexes",
        index_name: str = "colbert",
        override: bool = False,
        embedding_size: int = 128,
        M: int = 16,  # noqa: N803 - pylate's name
        ef_construction: int = 64,
        ef_search: int = 256,
        *,
        model: ModelSignature | None = None,
        storage: str = "float8",
        num_threads: int = -1,
        read_only: bool = False,
        show_progress: bool | None = None,
    ) -> None:
        if storage not in STORAGE:
            raise InvalidArgumentError(f"storage must be one of {sorted(STORAGE)}, got {storage!r}")
        for name, value in (("embedding_size", embedding_size), ("M", M), ("ef_construction", ef_construction)):
            check_count(value, name)
        self.ef_search = check_count(ef_search, "ef_search")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads == 0 or num_threads < -1:
            raise InvalidArgumentError(
                f"num_threads must be -1 (all cores) or a whole number >= 1, got {num_threads!r}"
            )
        self.path = Path(index_folder) / index_name
        self.num_threads, self.read_only, self.show_progress = num_threads, read_only, show_progress
        self._lock = None
        self._release = None
        self._payload_handle = None
        self._pending = False  # an override staged in memory and in a new epoch's store files, not yet committed
        self._batch_depth = 0
        backend = index_backend(self.path)
        if backend not in (None, "voyager"):
            raise IndexFormatError(
                f"{self.path} holds a {backend} index, not a Voyager one; open it with Searcher.open (it finds the "
                "backend itself), or choose another folder"
            )
        if read_only:
            if override:
                raise InvalidArgumentError("override=True needs a writable index; drop read_only")
            if backend is None:
                raise IndexFormatError(f"no index at {self.path}; build one first (colbert-az index ...)")
            self._open()
            self._check_settings(embedding_size, model)
            return
        self._acquire()
        try:
            if backend is not None and not override:
                self._open()
                self._check_settings(embedding_size, model)
                return
            self.settings = {"M": M, "ef_construction": ef_construction, "storage": storage}
            self.embedding_size = int(embedding_size)
            self.model = model.to_dict() if model else None
            self._empty_state(self._next_epoch())
            if backend is None:
                self._commit()  # a new index exists (empty) from here on
            else:
                self._pending = True  # the old index stays the committed one until the first commit
                self._lock.replacer = weakref.ref(self)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------------- state
    def _empty_state(self, epoch: int) -> None:
        self.generation = getattr(self, "generation", 0)
        self.doc_ids: list[str] = []
        for key in DOC_ARRAYS:
            setattr(self, key, np.zeros(0, bool if key == "alive" else np.int64))
        self.rows = 0
        self.payload_bytes = 0
        self.epoch = epoch
        self.vector_sums, self.payload_sums = NO_SUMS, NO_SUMS
        self._vector_ok, self._payload_ok = np.zeros(0, bool), np.zeros(0, bool)
        self.graph = self._new_graph()
        self._positions: dict[str, int] = {}
        self._derive()

    def _derive(self) -> None:
        """Lookup tables rebuilt once per commit or load, so that a search does no per-index work."""
        self._vectors = None
        self._float32 = None
        if self._payload_handle is not None:
            self._payload_handle.close()
        self._payload_handle = None
        self._id_array = np.asarray(self.doc_ids, dtype=object)
        self.live_labels = int(self.alive[self.label_doc].sum()) if len(self.label_doc) else 0

    def _check_settings(self, embedding_size: int, model: ModelSignature | None) -> None:
        if int(embedding_size) != self.embedding_size and model is None:
            raise IndexFormatError(
                f"index at {self.path} holds dimension {self.embedding_size}, not {embedding_size}; "
                "pass the index's embedding_size or override=True"
            )
        if model is not None:
            wanted = model.to_dict()
            if not model.made(self.model):
                raise IndexFormatError(
                    f"index at {self.path} was built with {self.model['name']} "
                    f"(dim {self.model['embedding_size']}, fingerprint {self.model['fingerprint']}), not "
                    f"{wanted['name']} (fingerprint {wanted['fingerprint']}); use that model or a new index"
                )
            if self.model is None and wanted["embedding_size"] != self.embedding_size:
                raise IndexFormatError(
                    f"index at {self.path} holds dimension {self.embedding_size}, "
                    f"the model makes {wanted['embedding_size']}; use a new index"
                )

    def __len__(self) -> int:
        """Number of live documents."""
        return len(self._positions)

    def __contains__(self, document_id: str) -> bool:
        return document_id in self._positions

    # --------------------------------------------------------------------------------------------- reading
    def _position(self, document_id: str) -> int:
        try:
            return self._positions[document_id]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"document {document_id!r} is not in the index at {self.path}") from None

    def payload(self, document_id: str) -> dict:
        """The payload stored with a document.

        Parameters
        ----------
        document_id
            The document's id (an error if it is not in the index).

        Returns
        -------
        dict
            Its payload (``{}`` if none was given).
        """
        position = self._position(document_id)
        data = self._read_payload(int(self.payload_start[position]), int(self.payload_length[position]))
        return json.loads(data)

    def _document_vectors(self, position: int) -> np.ndarray:
        start, length = self.doc_start[position : position + 1], self.doc_length[position : position + 1]
        self._verify_vector_rows(start, length)
        return np.asarray(self.vectors[int(start[0]) : int(start[0] + length[0])], np.float32)

    def document_embeddings(self, document_id: str) -> np.ndarray:
        """The stored token vectors of one document.

        Parameters
        ----------
        document_id
            The document's id (an error if it is not in the index).

        Returns
        -------
        numpy.ndarray
            (tokens, dim) float32: L2-normalised on add (as pylate's Voyager returns them from its cosine graph; a
            no-op for model outputs, which are normalised) and kept as float16.
        """
        return self._document_vectors(self._position(document_id))

    def get_documents_embeddings(self, document_ids: list[list[str]]) -> list[list[np.ndarray]]:
        """pylate's interface: the stored token vectors for each group of ids.

        Parameters
        ----------
        document_ids
            Groups of ids (one group per query, as pylate's retriever passes them).

        Returns
        -------
        list[list[numpy.ndarray]]
            One (tokens, dim) matrix per id, grouped the same way.
        """
        return [[self.document_embeddings(doc_id) for doc_id in group] for group in document_ids]

    def __call__(self, queries_embeddings, k: int = 10) -> dict:
        """pylate's interface: for every query token its ``k`` nearest document tokens, as document ids.

        Parameters
        ----------
        queries_embeddings
            One (tokens, dim) matrix per query (or one matrix for one query).
        k
            Neighbours per query token (default 10; at most the number of stored vectors).

        Returns
        -------
        dict
            ``{"documents_ids": [...], "distances": [...]}``: per query, per token, ``k`` ids and cosine distances.
        """
        k = check_count(k, "k")
        queries = as_matrices(queries_embeddings, "query", self.embedding_size)
        labels, distances, sizes = self._query_graph(queries, k)
        split = np.cumsum(sizes)[:-1]
        ids = self._id_array[self.label_doc[labels]]
        return {
            "documents_ids": [chunk.tolist() for chunk in np.split(ids, split)],
            "distances": [chunk.tolist() for chunk in np.split(distances, split)],
        }

    # --------------------------------------------------------------------------------------------- writing
    def add_documents(
        self,
        documents_ids: str | Sequence[str],
        documents_embeddings,
        batch_size: int = 2000,
        *,
        upsert: bool = False,
        payloads: Sequence[dict] | None = None,
        remove: Sequence[str] = (),
    ) -> VoyagerIndex:
        """Add documents (one token matrix each) in one atomic commit.

        Parameters
        ----------
        documents_ids
            One unique non-empty string per document (a single string for one document).
        documents_embeddings
            One (tokens, ``embedding_size``) matrix per document: arrays, tensors, or what ``model.encode`` returns.
        batch_size
            Accepted for pylate compatibility; the graph is built in one multi-threaded call.
        upsert
            Replace documents whose id is already in the index (without it such an id is an error and nothing
            is added).
        payloads
            One JSON-serialisable dict per document, stored with it and returned by :meth:`payload`.
        remove
            Ids to remove in the same commit (each must be in the index): an upsert whose document now has fewer
            passages drops the others atomically.

        Returns
        -------
        VoyagerIndex
            ``self`` (as pylate's).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = VoyagerIndex(folder, "demo", embedding_size=4)
        ...     index = index.add_documents(["a"], [np.ones((2, 4), "float32")], payloads=[{"text": "bir"}])
        ...     index.payload("a"), len(index)
        ({'text': 'bir'}, 1)
        """
        del batch_size
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        documents_ids = check_document_ids(documents_ids)
        matrices = as_matrices(documents_embeddings, "document", self.embedding_size)
        if len(matrices) != len(documents_ids):
            raise InvalidArgumentError(f"{len(documents_ids)} ids but {len(matrices)} embedding matrices")
        if payloads is not None and (isinstance(payloads, (dict, str)) or len(payloads) != len(documents_ids)):
            raise InvalidArgumentError(f"payloads must be a list of {len(documents_ids)} dicts, one per document")
        encoded_payloads = encode_payloads(payloads or [{}] * len(documents_ids))
        self._writable()
        with self._lock.mutex:
            present = [doc_id for doc_id in documents_ids if doc_id in self._positions]
            if present and not upsert:
                raise InvalidArgumentError(
                    f"{len(present)} ids are already in the index (e.g. {present[:3]}); pass upsert=True "
                    "(--upsert) to replace them"
                )
            adding = set(documents_ids)
            extra = [doc_id for doc_id in dict.fromkeys(remove) if doc_id not in adding]
            missing = [doc_id for doc_id in extra if doc_id not in self._positions]
            if missing:
                raise InvalidArgumentError(f"{len(missing)} ids to remove are not in the index (e.g. {missing[:3]})")
            try:
                self._add(documents_ids, matrices, encoded_payloads, present + extra)
            except BaseException:
                self._forget_uncommitted()
                raise
        return self

    def remove_documents(self, documents_ids: str | Sequence[str]) -> VoyagerIndex:
        """Remove documents from results and from the store (space is reclaimed by :meth:`compact`).

        Parameters
        ----------
        documents_ids
            One id or a list of ids; an id not in the index is an error and nothing is removed.

        Returns
        -------
        VoyagerIndex
            ``self``.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = VoyagerIndex(folder, "demo", embedding_size=4)
        ...     index = index.add_documents(["a", "b"], [np.ones((2, 4), "f4"), np.ones((3, 4), "f4")])
        ...     "a" in index.remove_documents(["a"]), len(index)
        (False, 1)
        """
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        if not isinstance(documents_ids, Iterable):
            raise InvalidArgumentError(f"documents_ids must be an id or a list of ids, got {documents_ids!r}")
        documents_ids = list(documents_ids)
        self._writable()
        with self._lock.mutex:
            missing = [doc_id for doc_id in documents_ids if doc_id not in self._positions]
            if missing:
                raise InvalidArgumentError(
                    f"{len(missing)} ids are not in the index (e.g. {missing[:3]}); nothing was removed"
                )
            try:
                self._mark_removed(dict.fromkeys(documents_ids))
                self._commit()
            except BaseException:
                self._forget_uncommitted()
                raise
        return self

    # ------------------------------------------------------------------------------ the IndexBackend contract
    @classmethod
    def open_for_searcher(
        cls, folder: Path, *, signature, embedding_size: int, override: bool, read_only: bool, show_progress,
        url: str | None, api_key: str | None, settings: dict,
    ) -> VoyagerIndex:  # fmt: skip
        """The index of a :class:`~colbert_az_pylate.retrieval.searcher.Searcher` (see :class:`IndexBackend`)."""
        folder = Path(folder)
        return cls(
            str(folder.parent),
            folder.name,
            override=override,
            embedding_size=embedding_size,
            model=signature,
            read_only=read_only,
            show_progress=show_progress,
            **settings,
        )

    @classmethod
    def build_for_searcher(cls, folder, ids, vectors, payloads, **kwargs) -> VoyagerIndex:
        raise ColbertAzError("a Voyager index is written with write_entries, not built once")

    def write_entries(self, ids: list[str], vectors, payloads: list[dict], *, upsert: bool, stale: list[str]) -> None:
        """Add (or replace) entries and remove the ``stale`` ones in one commit."""
        self.add_documents(ids, vectors, payloads=payloads, upsert=upsert, remove=stale)

    @property
    def exact_is_faster(self) -> bool:
        """Whether exact MaxSim over every stored vector beats the graph search here (a measured crossover,
        :data:`EXACT_SEARCH_MAX_VECTORS`)."""
        return self.rows <= EXACT_SEARCH_MAX_VECTORS

    def rank(self, queries_embeddings, k: int, *, exact: bool | None = None, k_token: int = 256, subset=None):
        """Top ``k`` entries per query: exact MaxSim over every stored vector (``exact``, or ``None`` on a store
        small enough for it to be faster, :attr:`exact_is_faster`), else the graph and an exact rerank."""
        if exact is None:
            exact = self.exact_is_faster
        if exact:
            return self.exact_search(queries_embeddings, k=k, subset=subset)
        return self.search(queries_embeddings, k=k, k_token=k_token, subset=subset)

    def passage_count(self) -> int:
        return count_entries(self._positions)[0]

    def document_count(self) -> int:
        return count_entries(self._positions)[1]

    def commit_state(self) -> tuple | None:
        """The manifest's inode, mtime and size: it changes with every commit of any process (one ``stat``)."""
        try:
            stat = os.stat(self.path / MANIFEST)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size
