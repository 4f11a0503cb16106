"""``QdrantIndex``: pylate's index contract on Qdrant, embedded in a folder or on a server or cluster.

A document is one Qdrant point: a multivector ``"colbert"`` of its token vectors, compared with ``MAX_SIM`` over
cosine similarity (Qdrant normalises the vectors, so a score is the model card's MaxSim), one vector ``"mean"``
(the normalised mean of its token vectors, for an optional first stage), and a payload holding the document's id
(``"document_id"``) and the caller's payload (text, metadata, …). The point's id is ``uuid5`` of the document id
(:func:`point_id`), so any string id works and an upsert replaces the same point. The collection's metadata
records the format and the model signature; opening a collection checks them.

Parts: ``qdrant_collection`` (points, payloads, the collection and its record), ``qdrant_connection`` (clients,
retried requests), ``qdrant_guard`` (guarded unpickling of embedded storage); this module is the public import path.

``qdrant-client`` is an optional extra (``pip install "colbert-az-pylate[qdrant]"``): it is imported only when an
index is opened, never by the rest of the package.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from pylate.indexes.base import Base

from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, check_count
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.qdrant_collection import (
    DOCUMENT_ID,
    MEAN_VECTOR,
    METADATA_KEY,
    MULTIVECTOR,
    as_subsets,
    check_payloads,
    document_points,
    open_collection,
    payload_filter,
    point_id,
    search_requests,
)
from colbert_az_pylate.retrieval.qdrant_connection import (
    call_with_retries,
    check_folder,
    connect_server,
    import_qdrant,
    open_local,
    release_local,
)
from colbert_az_pylate.retrieval.vectors import as_matrices
from colbert_az_pylate.signature import ModelSignature

__all__ = ["MEAN_VECTOR", "METADATA_KEY", "MULTIVECTOR", "QdrantIndex", "point_id"]

FETCH_BATCH = 256  # point ids per retrieve/delete request


class QdrantIndex(Base):
    """ColBERT documents in Qdrant: exact MaxSim by Qdrant's multivector ``MAX_SIM``, optionally after a first stage.

    Same constructor as ``pylate.indexes.Voyager``; an end-to-end index (like pylate's PLAID): ``__call__`` returns
    ranked documents, so ``pylate.retrieve.ColBERT(index=...)`` works unchanged
    (``tests/test_pylate_qdrant_port.py``). Embedded by default (``qdrant-client``'s local mode, in
    ``index_folder/index_name``: exact, pure Python, one process per folder, fine up to ~20k documents); with
    ``url`` the same code runs against a Qdrant server or cluster (docs/qdrant.md).

    Parameters
    ----------
    index_folder
        The folder that holds the embedded index folder (created when missing; unused with ``url``).
    index_name
        The embedded index folder's name inside ``index_folder``; with ``url``, the default collection name.
    override
        Delete the collection and start an empty one (not atomic: the old documents are gone at once).
    embedding_size
        The dimension of the token vectors (default 128).
    model
        A :class:`ModelSignature` recorded at creation and checked at every open (keyword-only, as every parameter
        below).
    url
        A Qdrant server (``http://localhost:6333``, ``https://….cloud.qdrant.io``); ``None`` (default): embedded.
    api_key
        The server's API key (default: ``$QDRANT_API_KEY`` when ``url`` is set).
    collection
        The collection's name (default: ``"colbert"`` embedded, ``index_name`` on a server).
    batch_size
        Documents per upload request (default 32: 32 documents of 256 × 128 floats stay far below the server's
        32 MB request limit).
    retries
        Tries of a request that fails with a server error (5xx, 429) or a lost connection (default 3; waits 0.2 s,
        then doubles).
    timeout
        Seconds a server request may take (default 60).
    shard_number, replication_factor
        For a new collection on a cluster (Qdrant's own parameters; default: the server's).
    prefer_grpc
        Talk gRPC to the server (port 6334) instead of REST (default False).
    open_existing
        Only open a collection that exists (a missing one is an error, nothing is created), and, without
        ``model``, take its dimension from it (``embedding_size`` is then ignored); ``Searcher.open`` uses it.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((5, 8)).astype("float32") for _ in range(3)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     index = QdrantIndex(folder, "demo", embedding_size=8)
    ...     index = index.add_documents(["a", "b", "c"], docs, payloads=[{"text": t} for t in "xyz"])
    ...     hits = index([docs[1][:2]], k=2)
    ...     index.close()
    >>> hits[0][0]["id"], round(hits[0][0]["score"], 4)
    ('b', 2.0)
    """

    is_end_to_end_index = True
    # the IndexBackend contract (colbert_az_pylate.retrieval.backends): Qdrant's MAX_SIM scores every document
    backend_name = "qdrant"
    updatable, commits, exact_search_available, always_exact = True, False, True, True

    def __init__(
        self,
        index_folder: str = "indexes",
        index_name: str = "colbert",
        override: bool = False,
        embedding_size: int = 128,
        *,
        model: ModelSignature | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str | None = None,
        batch_size: int = 32,
        retries: int = 3,
        timeout: int = 60,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        prefer_grpc: bool = False,
        open_existing: bool = False,
    ) -> None:
        self.embedding_size = check_count(embedding_size, "embedding_size")
        self.batch_size = check_count(batch_size, "batch_size")
        self.retries = check_count(retries, "retries")
        timeout = check_count(timeout, "timeout")
        for name, value in (("shard_number", shard_number), ("replication_factor", replication_factor)):
            if value is not None:
                check_count(value, name)
        if model is not None and not isinstance(model, ModelSignature):
            raise InvalidArgumentError(f"model must be a ModelSignature, got {type(model).__name__}")
        if url is not None and (not isinstance(url, str) or not url.strip()):
            raise InvalidArgumentError(f"url must be a server address such as http://localhost:6333, got {url!r}")
        self.url = url
        self.collection = collection or (str(index_name) if url else "colbert")
        self._release = None
        self._closed = False
        self._open_existing = bool(open_existing)
        self._added: list[str] | None = None  # point ids new in the current write scope (see _roll_back_on_interrupt)
        if url is None:
            if not str(index_name).strip():
                raise InvalidArgumentError("index_name is empty; name a folder for the index")
            self.path: Path | None = Path(index_folder) / str(index_name)
            self.where = f"the embedded Qdrant index at {self.path}"
            check_folder(self.path)
            self.client, key = open_local(self.path)
            self._release = weakref.finalize(self, release_local, key)
        else:
            self.path = None
            self.where = f"collection {self.collection!r} on the Qdrant server at {url}"
            api_key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY")
            self.client = connect_server(url, api_key, timeout, prefer_grpc)
        try:
            self._open(override, model, shard_number, replication_factor)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------------- requests
    def _call(self, what: str, request: Callable, *args, **kwargs):
        """One request to Qdrant, retried on server errors and lost connections; every failure is one line."""
        if self._closed:
            raise InvalidArgumentError(f"{self.where} was closed; open the index again")
        return call_with_retries(
            what, partial(request, *args, **kwargs), retries=self.retries, url=self.url, folder=self.path,
            where=self.where,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------------- opening
    def _open(self, override: bool, model: ModelSignature | None, shards, replicas) -> None:
        self.embedding_size, self.model = open_collection(
            self._call, self.client, self.collection, self.where, model, self.embedding_size,
            override=override, open_existing=self._open_existing, shards=shards, replicas=replicas,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ the IndexBackend contract
    @classmethod
    def open_for_searcher(
        cls, folder: Path, *, signature, embedding_size: int, override: bool, read_only: bool, show_progress,
        url: str | None, api_key: str | None, settings: dict,
    ) -> QdrantIndex:  # fmt: skip
        """Embedded at ``folder``, or the collection named ``folder`` on the server ``url``; a searcher's
        ``qdrant_batch_size`` setting is this class's ``batch_size``."""
        settings = dict(settings)
        if "qdrant_batch_size" in settings:
            settings["batch_size"] = settings.pop("qdrant_batch_size")
        folder = Path(folder)
        if url is None:
            return cls(str(folder.parent), folder.name, override=override, model=signature, api_key=api_key, **settings)
        return cls(index_name=str(folder), override=override, model=signature, url=url, api_key=api_key, **settings)

    @classmethod
    def build_for_searcher(cls, folder, ids, vectors, payloads, **kwargs) -> QdrantIndex:
        raise ColbertAzError("a Qdrant index is written with write_entries, not built once")

    def write_entries(self, ids: list[str], vectors, payloads: list[dict], *, upsert: bool, stale: list[str]) -> None:
        """Add (or replace) entries, then remove the ``stale`` ones: never a moment without the document."""
        self.add_documents(ids, vectors, upsert=upsert, payloads=payloads)
        if stale:
            self.remove_documents(stale)

    def batch(self) -> contextlib.AbstractContextManager:
        """No commits to group: each write is visible when it returns (see docs/qdrant.md); a Ctrl-C inside
        removes every document added inside that was not in the index before (see :meth:`add_documents`)."""
        return self._roll_back_on_interrupt()

    @contextlib.contextmanager
    def _roll_back_on_interrupt(self) -> Iterator[QdrantIndex]:
        """On ``KeyboardInterrupt`` inside, delete the points that writes inside added (new ids only: a replaced
        document keeps its new version), so that an interrupted build leaves the index as it found it."""
        if self._added is not None:  # an enclosing scope rolls back
            yield self
            return
        self._added = []
        try:
            yield self
        except KeyboardInterrupt:
            added, self._added = self._added, None
            self._delete_points(added, "removing the documents of the interrupted write")
            raise
        finally:
            self._added = None

    def rank(self, queries_embeddings, k: int, *, exact: bool | None = None, k_token: int = 256, subset=None):
        """Exact MaxSim over every document, whatever ``exact`` says (Qdrant's multivector ``MAX_SIM``)."""
        return self.search(queries_embeddings, k=k, subset=subset)

    def passage_count(self) -> int:
        return self.count("document")  # a passage's payload names its document

    def document_count(self) -> int:
        passages = self.count("document")
        if not passages:
            return len(self)
        return self.count() - passages + self.count("passage", 0)

    def commit_state(self) -> None:
        return None

    def refresh(self) -> QdrantIndex:
        return self

    def close(self) -> None:
        """Release the embedded folder (or the server connection); also done when the object is collected."""
        if self._release is not None:
            self._release()
            self._release = None
        elif self.url is not None and not self._closed and hasattr(self, "client"):
            with contextlib.suppress(Exception):
                self.client.close()
        self._closed = True

    # ----------------------------------------------------------------------------------------------- writing
    def add_documents(
        self,
        documents_ids: str | Sequence[str],
        documents_embeddings,
        batch_size: int | None = None,
        *,
        upsert: bool = False,
        payloads: Sequence[dict] | None = None,
    ) -> QdrantIndex:
        """Add documents (one token matrix each), uploaded in batches.

        Parameters
        ----------
        documents_ids
            One unique non-empty string per document (a single string for one document).
        documents_embeddings
            One (tokens, ``embedding_size``) matrix per document: arrays, tensors, or what ``model.encode`` returns.
        batch_size
            Documents per upload request (default: the index's ``batch_size``).
        upsert
            Replace documents whose id is already in the index (without it such an id is an error and nothing is
            added).
        payloads
            One JSON-serialisable dict per document, stored in its point (``"document_id"`` is reserved).

        Returns
        -------
        QdrantIndex
            ``self``. A failure part-way (a server that goes away) leaves the batches already sent; adding the same
            documents again with ``upsert=True`` completes it. A Ctrl-C part-way (``KeyboardInterrupt``) removes
            the documents this call (or the enclosing :meth:`batch`) added that were not in the index before, so
            the same call can simply be run again; documents it replaced (``upsert=True``) keep their new version.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = QdrantIndex(folder, "demo", embedding_size=4)
        ...     index = index.add_documents(["a"], [np.ones((2, 4), "float32")], payloads=[{"text": "bir"}])
        ...     index = index.add_documents(["a"], [np.eye(4, dtype="float32")], upsert=True)
        ...     result = index.payload("a"), len(index), index.document_embeddings("a").shape
        ...     index.close()
        >>> result
        ({}, 1, (4, 4))
        """
        _, models = import_qdrant()
        batch_size = self.batch_size if batch_size is None else check_count(batch_size, "batch_size")
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        documents_ids = check_document_ids(documents_ids)
        matrices = as_matrices(documents_embeddings, "document", self.embedding_size)
        if len(matrices) != len(documents_ids):
            raise InvalidArgumentError(f"{len(documents_ids)} ids but {len(matrices)} embedding matrices")
        payloads = check_payloads(payloads, len(documents_ids))
        for position, matrix in enumerate(matrices):
            if not (np.linalg.norm(matrix, axis=1) > 0).all():
                raise InvalidArgumentError(
                    f"document {position} (id {documents_ids[position]!r}) has an all-zero token vector, which "
                    "has no direction for cosine similarity; encode it with the model"
                )
        present = set(self._present(documents_ids))
        if present and not upsert:
            present = [doc_id for doc_id in documents_ids if doc_id in present]
            raise InvalidArgumentError(
                f"{len(present)} ids are already in the index (e.g. {present[:3]}); pass upsert=True "
                "(--upsert) to replace them"
            )
        with self._roll_back_on_interrupt():
            for start in range(0, len(documents_ids), batch_size):
                batch = slice(start, start + batch_size)
                points = document_points(models, documents_ids[batch], matrices[batch], payloads[batch])
                self._added.extend(point_id(i) for i in documents_ids[batch] if i not in present)  # before it is sent
                self._call(
                    f"uploading documents {start}-{start + len(points) - 1}",
                    self.client.upsert,
                    self.collection,
                    points=points,
                    wait=True,
                )
        return self

    def remove_documents(self, documents_ids: str | Sequence[str]) -> QdrantIndex:
        """Remove documents.

        Parameters
        ----------
        documents_ids
            One id or a list of ids; an id not in the index is an error and nothing is removed.

        Returns
        -------
        QdrantIndex
            ``self``.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = QdrantIndex(folder, "demo", embedding_size=4)
        ...     index = index.add_documents(["a", "b"], [np.ones((2, 4), "f4"), np.ones((3, 4), "f4")])
        ...     result = "a" in index.remove_documents(["a"]), len(index)
        ...     index.close()
        >>> result
        (False, 1)
        """
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        if not isinstance(documents_ids, Iterable):
            raise InvalidArgumentError(f"documents_ids must be an id or a list of ids, got {documents_ids!r}")
        documents_ids = list(dict.fromkeys(documents_ids))
        if any(not isinstance(doc_id, str) for doc_id in documents_ids):
            raise InvalidArgumentError("document ids must be strings; convert them with str()")
        present = set(self._present(documents_ids))
        missing = [doc_id for doc_id in documents_ids if doc_id not in present]
        if missing:
            raise InvalidArgumentError(
                f"{len(missing)} ids are not in the index (e.g. {missing[:3]}); nothing was removed"
            )
        self._delete_points([point_id(i) for i in documents_ids], "deleting documents")
        return self

    def _delete_points(self, point_ids: list[str], what: str) -> None:
        _, models = import_qdrant()
        for start in range(0, len(point_ids), FETCH_BATCH):
            selector = models.PointIdsList(points=point_ids[start : start + FETCH_BATCH])
            self._call(what, self.client.delete, self.collection, points_selector=selector, wait=True)

    # ----------------------------------------------------------------------------------------------- reading
    def _retrieve(self, documents_ids: list[str], vectors: bool) -> dict[str, object]:
        found = {}
        for start in range(0, len(documents_ids), FETCH_BATCH):
            points = self._call(
                "reading documents",
                self.client.retrieve,
                self.collection,
                ids=[point_id(i) for i in documents_ids[start : start + FETCH_BATCH]],
                with_payload=True,
                with_vectors=[MULTIVECTOR] if vectors else False,
            )
            for point in points:
                found[(point.payload or {}).get(DOCUMENT_ID)] = point
        return found

    def _present(self, documents_ids: list[str]) -> list[str]:
        found = self._retrieve(documents_ids, vectors=False)
        return [doc_id for doc_id in documents_ids if doc_id in found]

    def _point(self, document_id: str, vectors: bool):
        point = self._retrieve([document_id], vectors).get(document_id) if isinstance(document_id, str) else None
        if point is None:
            raise InvalidArgumentError(f"document {document_id!r} is not in {self.where}")
        return point

    def payload(self, document_id: str) -> dict:
        """The payload stored with a document (without the reserved ``"document_id"``).

        Parameters
        ----------
        document_id
            The document's id (an error if it is not in the index).

        Returns
        -------
        dict
            Its payload (``{}`` if none was given).
        """
        payload = dict(self._point(document_id, vectors=False).payload or {})
        payload.pop(DOCUMENT_ID, None)
        return payload

    def document_embeddings(self, document_id: str) -> np.ndarray:
        """The stored token vectors of one document.

        Parameters
        ----------
        document_id
            The document's id (an error if it is not in the index).

        Returns
        -------
        numpy.ndarray
            (tokens, dim) float32, L2-normalised (as stored).
        """
        return np.asarray(self._point(document_id, vectors=True).vector[MULTIVECTOR], np.float32)

    def get_documents_embeddings(self, document_ids: list[list[str]]) -> list[list[np.ndarray]]:
        """pylate's interface: the stored token vectors for each group of ids.

        Parameters
        ----------
        document_ids
            Groups of ids (one group per query, as pylate's retriever passes them).

        Returns
        -------
        list[list[numpy.ndarray]]
            One (tokens, dim) matrix per id, grouped the same way; an unknown id is an error.
        """
        wanted = list(dict.fromkeys(i for group in document_ids for i in group))
        found = self._retrieve(wanted, vectors=True)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise InvalidArgumentError(f"{len(missing)} ids are not in {self.where} (e.g. {missing[:3]})")
        matrices = {i: np.asarray(found[i].vector[MULTIVECTOR], np.float32) for i in wanted}
        return [[matrices[i] for i in group] for group in document_ids]

    def count(self, key: str | None = None, value=None) -> int:
        """Number of documents, or of those whose payload has ``key`` (equal to ``value`` when one is given).

        Parameters
        ----------
        key
            A top-level payload key; default: count every document.
        value
            With ``key``: only payloads where it equals this (a string, integer or boolean).

        Returns
        -------
        int
            The exact count.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = QdrantIndex(folder, "demo", embedding_size=4)
        ...     payloads = [{"passage": 0}, {"passage": 1}, {}]
        ...     index = index.add_documents(list("abc"), [np.ones((2, 4), "f4")] * 3, payloads=payloads)
        ...     result = index.count(), index.count("passage"), index.count("passage", 0)
        ...     index.close()
        >>> result
        (3, 2, 1)
        """
        _, models = import_qdrant()
        where = None if key is None else payload_filter(models, key, value)
        return int(
            self._call("counting documents", self.client.count, self.collection, count_filter=where, exact=True).count
        )

    def __len__(self) -> int:
        """Number of documents."""
        return int(self._call("counting documents", self.client.count, self.collection, exact=True).count)

    def __contains__(self, document_id: str) -> bool:
        return isinstance(document_id, str) and bool(self._present([document_id]))

    def __call__(self, queries_embeddings, k: int = 10, subset=None) -> list[list[dict]]:
        """pylate's end-to-end interface: the top ``k`` documents per query (see :meth:`search`).

        Parameters
        ----------
        queries_embeddings
            One (tokens, dim) matrix per query (or one matrix for one query).
        k
            Documents per query (default 10).
        subset
            Only these ids may be returned: one list for every query, or one list per query.

        Returns
        -------
        list[list[dict]]
            pylate's format: per query, ``[{"id": ..., "score": ...}, ...]``, best first.
        """
        return self.search(queries_embeddings, k=k, subset=subset)

    def search(self, queries_embeddings, k: int = 10, subset=None, first_stage: int | None = None) -> list[list[dict]]:
        """Top ``k`` documents per query by MaxSim (Qdrant's multivector ``MAX_SIM`` over normalised vectors).

        Without ``first_stage`` every document is scored (exact). With it, Qdrant first takes the
        ``first_stage`` documents whose mean vector is nearest the query's mean vector (a graph search on a
        server), and MaxSim ranks only those: faster on large collections, at some recall (docs/qdrant.md).

        Parameters
        ----------
        queries_embeddings
            One (tokens, dim) matrix per query (or one matrix for one query).
        k
            Documents per query (default 10).
        subset
            Only these ids may be returned: one list for every query, or one list per query.
        first_stage
            Candidates from the mean-vector first stage (default ``None``: no first stage).

        Returns
        -------
        list[list[dict]]
            Per query, ``[{"id": ..., "score": ...}, ...]``, best first.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> rng = np.random.default_rng(1)
        >>> docs = [rng.standard_normal((4, 8)).astype("float32") for _ in range(5)]
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = QdrantIndex(folder, "demo", embedding_size=8).add_documents(list("abcde"), docs)
        ...     full = index.search([docs[3]], k=1)[0][0]["id"]
        ...     staged = index.search([docs[3]], k=1, first_stage=2)[0][0]["id"]
        ...     only = index.search([docs[3]], k=5, subset=["a", "b"])[0]
        ...     index.close()
        >>> full, staged, sorted(hit["id"] for hit in only)
        ('d', 'd', ['a', 'b'])
        """
        _, models = import_qdrant()
        k = check_count(k, "k")
        if first_stage is not None:
            first_stage = max(check_count(first_stage, "first_stage"), k)
        queries = as_matrices(queries_embeddings, "query", self.embedding_size)
        requests = search_requests(models, queries, as_subsets(subset, len(queries)), k, first_stage)
        results = []
        for start in range(0, len(requests), 16):
            responses = self._call(
                "searching", self.client.query_batch_points, self.collection, requests=requests[start : start + 16]
            )
            for response in responses:
                results.append(
                    [{"id": point.payload[DOCUMENT_ID], "score": float(point.score)} for point in response.points]
                )
        if subset is None and not any(results) and len(self) == 0:
            raise ColbertAzError("the index is empty; add documents before searching")
        return results
