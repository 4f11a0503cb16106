"""``QdrantIndex``: pylate's index contract on Qdrant, embedded in a folder or on a server or cluster.

A document is one Qdrant point: a multivector ``"colbert"`` of its token vectors, compared with ``MAX_SIM`` over
cosine similarity (Qdrant normalises the vectors, so a score is the model card's MaxSim), one vector ``"mean"``
(the normalised mean of its token vectors, for an optional first stage), and a payload holding the document's id
(``"document_id"``) and the caller's payload (text, metadata, …). The point's id is ``uuid5`` of the document id
(:func:`point_id`), so any string id works and an upsert replaces the same point. The collection's metadata
records the format and the model signature; opening a collection checks them.

``qdrant-client`` is an optional extra (``pip install "colbert-az-pylate[qdrant]"``): it is imported only when an
index is opened, never by the rest of the package.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from pylate.indexes.base import Base

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    IndexLockedError,
    InvalidArgumentError,
    OutputExistsError,
    check_count,
    first_line,
)
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.vectors import as_matrices
from colbert_az_pylate.signature import ModelSignature

__all__ = ["MEAN_VECTOR", "METADATA_KEY", "MULTIVECTOR", "QdrantIndex", "point_id"]

FORMAT_VERSION = 1
METADATA_KEY = "colbert_az"  # the collection metadata entry this package writes and checks
MULTIVECTOR = "colbert"  # the token vectors of a document, MAX_SIM
MEAN_VECTOR = "mean"  # one normalised mean vector per document, for the first stage
DOCUMENT_ID = "document_id"  # the payload key holding the document's own id
_NAMESPACE = uuid.UUID("5b1f3c1e-0c2a-4d7e-9b8e-6a2f0c9d4e11")  # fixed forever: point ids depend on it
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_FETCH_BATCH = 256  # point ids per retrieve/delete request


def point_id(document_id: str) -> str:
    """The Qdrant point id of a document: ``uuid5`` of its id, the same in every process and on every server.

    Parameters
    ----------
    document_id
        The document's id (any non-empty string).

    Returns
    -------
    str
        A UUID, as text.

    Examples
    --------
    >>> point_id("baku")
    '0ec5619f-5646-5438-a898-0f848239191a'
    """
    return str(uuid.uuid5(_NAMESPACE, document_id))


def _qdrant():
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as exc:
        raise ColbertAzError(
            'the Qdrant backend needs qdrant-client; install it with: pip install "colbert-az-pylate[qdrant]"'
        ) from exc
    return qdrant_client, models


# ------------------------------------------------------------------------------------- guarded unpickling
# The embedded client stores every point in SQLite as a pickle (qdrant_client/local/persistence.py:
# ``pickle.loads`` on each row when a collection is loaded). The project's rule is that no code runs from a file we
# load, so while this module drives an embedded client, that module's ``pickle`` is a stand-in whose ``loads`` only
# rebuilds what qdrant-client itself writes there: a ``PointStruct`` (and a ``SparseVector``) of plain containers
# (payloads are stored as JSON types, vectors as lists of floats). Anything else is refused with one line before it
# is built. Threads that are not inside :func:`_guarded` (other code using qdrant-client) unpickle as before, and
# the module's own ``pickle`` is put back when the last guarded call of the process ends.
_ALLOWED_CLASSES = {
    ("qdrant_client.http.models.models", "PointStruct"),
    ("qdrant_client.http.models.models", "SparseVector"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}
_GUARD = threading.local()  # .folders: the embedded folders this thread is reading, innermost last
_GUARD_MUTEX = threading.Lock()
_GUARD_STATE = {"depth": 0, "original": None}


class _RefusedPickleError(Exception):
    pass


class _PointUnpickler(pickle.Unpickler):
    """An unpickler that builds only qdrant-client's stored point classes and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_CLASSES:
            raise _RefusedPickleError(f"{module}.{name}")
        return super().find_class(module, name)


def _restricted_loads(data: bytes, folder: str):
    try:
        return _PointUnpickler(io.BytesIO(data)).load()
    except _RefusedPickleError as exc:
        raise IndexFormatError(
            f"the embedded Qdrant index at {folder} holds a stored point that would build {exc} (only "
            "qdrant-client's point classes are allowed; it was not written by qdrant-client), so nothing was "
            "loaded; rebuild the index from its corpus"
        ) from None
    except Exception as exc:  # truncated or damaged bytes
        raise IndexFormatError(
            f"the embedded Qdrant index at {folder} holds a damaged stored point ({type(exc).__name__}: "
            f"{first_line(exc)}); rebuild the index from its corpus"
        ) from None


class _GuardedPickle:
    """Stands in for the ``pickle`` module inside ``qdrant_client.local.persistence`` (``dumps`` is unchanged)."""

    def __getattr__(self, name: str):
        return getattr(pickle, name)

    @staticmethod
    def loads(data, /, *args, **kwargs):
        folders = getattr(_GUARD, "folders", None)
        if not folders:
            return pickle.loads(data, *args, **kwargs)
        return _restricted_loads(data, folders[-1])


_GUARDED_PICKLE = _GuardedPickle()


@contextlib.contextmanager
def _guarded(folder):
    """While inside, this thread's loads of embedded Qdrant points from ``folder`` go through the restricted
    unpickler; the stand-in is installed on the first entry in the process and removed on the last exit."""
    from qdrant_client.local import persistence

    with _GUARD_MUTEX:
        if _GUARD_STATE["depth"] == 0 and getattr(persistence, "pickle", None) is not None:
            _GUARD_STATE["original"] = persistence.pickle  # (a qdrant-client without it unpickles nothing there)
            persistence.pickle = _GUARDED_PICKLE
        _GUARD_STATE["depth"] += 1
    folders = _GUARD.__dict__.setdefault("folders", [])
    folders.append(str(folder))
    try:
        yield
    finally:
        folders.pop()
        with _GUARD_MUTEX:
            _GUARD_STATE["depth"] -= 1
            if _GUARD_STATE["depth"] == 0:
                if getattr(persistence, "pickle", None) is _GUARDED_PICKLE:
                    persistence.pickle = _GUARD_STATE["original"]
                _GUARD_STATE["original"] = None


# One embedded client per folder and process: qdrant-client locks the folder per client, and pylate's own usage
# opens a new index over the old object before dropping it.
_LOCAL: dict[str, list] = {}
_LOCAL_MUTEX = threading.Lock()


def _open_local(path: Path):
    qdrant_client, _ = _qdrant()
    key = os.path.realpath(path)
    with _LOCAL_MUTEX:
        entry = _LOCAL.get(key)
        if entry is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with _guarded(path):
                        client = qdrant_client.QdrantClient(path=str(path))
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise IndexLockedError(
                        f"another process has the Qdrant index at {path} open (embedded Qdrant allows one process "
                        "per folder); close it, or run a Qdrant server for concurrent access"
                    ) from exc
                raise
            except (ValueError, OSError) as exc:
                raise IndexFormatError(f"cannot open the embedded Qdrant index at {path}: {first_line(exc)}") from exc
            entry = _LOCAL[key] = [client, 0]
        entry[1] += 1
        return entry[0], key


def _release_local(key: str) -> None:
    with _LOCAL_MUTEX:
        entry = _LOCAL.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _LOCAL[key]
            with contextlib.suppress(Exception):
                entry[0].close()


def _check_folder(path: Path) -> None:
    """Refuse a file, another backend's index, or a non-empty folder that is not an embedded Qdrant storage."""
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputExistsError(f"{ancestor} is a file, not a folder; name a folder for the index")
            break
    if not path.exists():
        return
    names = {p.name for p in path.iterdir()} - {".lock"}
    if not names or {"meta.json", "collection"} & names:
        return
    if {"manifest.json", "plaid-manifest.json"} & names:
        raise OutputExistsError(
            f"{path} holds a Voyager or PLAID index, not a Qdrant one; choose another folder for a Qdrant index"
        )
    raise OutputExistsError(
        f"{path} is not empty and is not a Qdrant index: it holds {sorted(names)[:3]}; choose a new or empty folder"
    )


def _as_subsets(subset, queries: int) -> list[list[str] | None]:
    """pylate's ``subset``: one list of ids for every query, or one list per query."""
    if subset is None:
        return [None] * queries
    if isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable):
        raise InvalidArgumentError("subset must be a list of document ids (or one list per query), not one id")
    subset = list(subset)
    if subset and all(isinstance(group, (list, tuple)) for group in subset):
        if len(subset) != queries:
            raise InvalidArgumentError(f"{queries} queries but {len(subset)} subsets; give one list per query")
        return [[str(i) for i in group] for group in subset]
    return [[str(i) for i in subset]] * queries


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
        if url is None:
            if not str(index_name).strip():
                raise InvalidArgumentError("index_name is empty; name a folder for the index")
            self.path: Path | None = Path(index_folder) / str(index_name)
            self.where = f"the embedded Qdrant index at {self.path}"
            _check_folder(self.path)
            self.client, key = _open_local(self.path)
            self._release = weakref.finalize(self, _release_local, key)
        else:
            qdrant_client, _ = _qdrant()
            self.path = None
            self.where = f"collection {self.collection!r} on the Qdrant server at {url}"
            api_key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Api key is used with an insecure connection" on http://
                    self.client = qdrant_client.QdrantClient(
                        url=url, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc, check_compatibility=False
                    )
            except ValueError as exc:
                raise InvalidArgumentError(f"cannot use the Qdrant url {url!r}: {first_line(exc)}") from exc
        try:
            self._open(override, model, shard_number, replication_factor)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------------- requests
    def _call(self, what: str, request: Callable, *args, **kwargs):
        """One request to Qdrant, retried on server errors and lost connections; every failure is one line."""
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if self._closed:
            raise InvalidArgumentError(f"{self.where} was closed; open the index again")
        server = f"the Qdrant server at {self.url}"
        for attempt in range(self.retries):
            last = attempt == self.retries - 1
            try:
                if self.path is None:
                    return request(*args, **kwargs)
                with _guarded(self.path):  # creating a collection loads any storage already in its folder
                    return request(*args, **kwargs)
            except UnexpectedResponse as exc:
                status = exc.status_code
                if status in (401, 403):
                    raise ColbertAzError(
                        f"{server} refused the API key ({status} {exc.reason_phrase}) while {what}: pass the right "
                        "key (api_key=..., --api-key or $QDRANT_API_KEY)"
                    ) from exc
                detail = _server_detail(exc)
                if status not in _RETRY_STATUSES or last:
                    tries = f" after {self.retries} tries" if status in _RETRY_STATUSES else ""
                    raise ColbertAzError(f"{server} failed {what}{tries}: {status} {detail}") from exc
            except ResponseHandlingException as exc:
                if last:
                    raise ColbertAzError(
                        f"cannot reach {server} ({first_line(exc)}) while {what}, after {self.retries} tries; "
                        "start the server or check the url"
                    ) from exc
            except ValueError as exc:  # the embedded client validates like the server
                raise InvalidArgumentError(f"{self.where} refused {what}: {first_line(exc)}") from exc
            except Exception as exc:
                grpc_error = _grpc_failure(exc, server, what)
                if grpc_error is None:
                    raise
                retry, message = grpc_error
                if not retry or last:
                    raise ColbertAzError(message) from exc
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------------------------------------- opening
    def _open(self, override: bool, model: ModelSignature | None, shards, replicas) -> None:
        _, models = _qdrant()
        exists = self._call("checking the collection", self.client.collection_exists, self.collection)
        if exists and override:
            self._call("deleting the collection (override)", self.client.delete_collection, self.collection)
            exists = False
        wanted = model.to_dict() if model is not None else None
        if not exists and self._open_existing:
            raise InvalidArgumentError(
                f"no collection {self.collection!r} in {self.where}; build it first (colbert-az index --backend qdrant)"
            )
        if not exists:
            self.model = wanted
            if wanted is not None and wanted["embedding_size"] != self.embedding_size:
                self.embedding_size = wanted["embedding_size"]
            record = {"format_version": FORMAT_VERSION, "embedding_size": self.embedding_size, "model": wanted}
            vectors = {
                # The multivector is the exact rerank: no graph (m=0), as Qdrant advises for rerank vectors.
                MULTIVECTOR: models.VectorParams(
                    size=self.embedding_size,
                    distance=models.Distance.COSINE,
                    multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                    hnsw_config=models.HnswConfigDiff(m=0),
                ),
                MEAN_VECTOR: models.VectorParams(size=self.embedding_size, distance=models.Distance.COSINE),
            }
            self._call(
                "creating the collection",
                self.client.create_collection,
                self.collection,
                vectors_config=vectors,
                shard_number=shards,
                replication_factor=replicas,
                metadata={METADATA_KEY: record},
            )
            if self._record() is None:
                raise ColbertAzError(
                    f"{self.where} does not keep collection metadata (Qdrant server older than 1.16?); "
                    "upgrade the server, the index records its model there"
                )
            return
        record = self._record()
        if record is None:
            raise OutputExistsError(
                f"{self.where} was not created by colbert-az-pylate (no {METADATA_KEY!r} metadata); choose "
                "another collection, or pass override=True to replace it"
            )
        version = record.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{self.where} has format {version!r}, this colbert-az-pylate reads up to {FORMAT_VERSION}; upgrade"
            )
        stored_size, self.model = int(record["embedding_size"]), record.get("model")
        if model is None and stored_size != self.embedding_size and not self._open_existing:
            raise IndexFormatError(
                f"{self.where} holds dimension {stored_size}, not {self.embedding_size}; pass the index's "
                "embedding_size or override=True"
            )
        if model is not None and not model.made(self.model):
            raise IndexFormatError(
                f"{self.where} was built with {self.model['name']} (dim {self.model['embedding_size']}, fingerprint "
                f"{self.model['fingerprint']}), not {wanted['name']} (dim {wanted['embedding_size']}, fingerprint "
                f"{wanted['fingerprint']}); use that model or a new collection"
            )
        if wanted is not None and wanted["embedding_size"] != stored_size:
            raise IndexFormatError(
                f"{self.where} holds dimension {stored_size}, the model makes {wanted['embedding_size']}; "
                "use a new collection"
            )
        self.embedding_size = stored_size

    def _record(self) -> dict | None:
        info = self._call("reading the collection", self.client.get_collection, self.collection)
        metadata = getattr(info.config, "metadata", None) or {}
        record = metadata.get(METADATA_KEY)
        return record if isinstance(record, dict) else None

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
        """No commits to group: each write is visible when it returns (see docs/qdrant.md)."""
        return contextlib.nullcontext(self)

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
            documents again with ``upsert=True`` completes it.

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
        _, models = _qdrant()
        batch_size = self.batch_size if batch_size is None else check_count(batch_size, "batch_size")
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        documents_ids = check_document_ids(documents_ids)
        matrices = as_matrices(documents_embeddings, "document", self.embedding_size)
        if len(matrices) != len(documents_ids):
            raise InvalidArgumentError(f"{len(documents_ids)} ids but {len(matrices)} embedding matrices")
        payloads = _check_payloads(payloads, len(documents_ids))
        for position, matrix in enumerate(matrices):
            if not (np.linalg.norm(matrix, axis=1) > 0).all():
                raise InvalidArgumentError(
                    f"document {position} (id {documents_ids[position]!r}) has an all-zero token vector, which "
                    "has no direction for cosine similarity; encode it with the model"
                )
        if not upsert:
            present = self._present(documents_ids)
            if present:
                raise InvalidArgumentError(
                    f"{len(present)} ids are already in the index (e.g. {present[:3]}); pass upsert=True "
                    "(--upsert) to replace them"
                )
        for start in range(0, len(documents_ids), batch_size):
            points = []
            for doc_id, matrix, payload in zip(
                documents_ids[start : start + batch_size],
                matrices[start : start + batch_size],
                payloads[start : start + batch_size],
                strict=True,
            ):
                unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
                mean = unit.mean(axis=0)
                mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
                points.append(
                    models.PointStruct(
                        id=point_id(doc_id),
                        vector={MULTIVECTOR: unit.tolist(), MEAN_VECTOR: mean.tolist()},
                        payload={**payload, DOCUMENT_ID: doc_id},
                    )
                )
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
        _, models = _qdrant()
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
        for start in range(0, len(documents_ids), _FETCH_BATCH):
            selector = models.PointIdsList(points=[point_id(i) for i in documents_ids[start : start + _FETCH_BATCH]])
            self._call("deleting documents", self.client.delete, self.collection, points_selector=selector, wait=True)
        return self

    # ----------------------------------------------------------------------------------------------- reading
    def _retrieve(self, documents_ids: list[str], vectors: bool) -> dict[str, object]:
        found = {}
        for start in range(0, len(documents_ids), _FETCH_BATCH):
            points = self._call(
                "reading documents",
                self.client.retrieve,
                self.collection,
                ids=[point_id(i) for i in documents_ids[start : start + _FETCH_BATCH]],
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
        _, models = _qdrant()
        where = None
        if key is not None:
            if value is None:
                condition = models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
                where = models.Filter(must_not=[condition])
            else:
                where = models.Filter(must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))])
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
        _, models = _qdrant()
        k = check_count(k, "k")
        if first_stage is not None:
            first_stage = max(check_count(first_stage, "first_stage"), k)
        queries = as_matrices(queries_embeddings, "query", self.embedding_size)
        subsets = _as_subsets(subset, len(queries))
        requests = []
        for query, allowed in zip(queries, subsets, strict=True):
            unit = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
            where = None
            if allowed is not None:
                where = models.Filter(must=[models.HasIdCondition(has_id=[point_id(i) for i in allowed])])
            prefetch = None
            if first_stage is not None:
                mean = unit.mean(axis=0)
                mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
                prefetch = models.Prefetch(query=mean.tolist(), using=MEAN_VECTOR, limit=first_stage, filter=where)
            requests.append(
                models.QueryRequest(
                    query=unit.tolist(),
                    using=MULTIVECTOR,
                    prefetch=prefetch,
                    filter=where,
                    limit=k,
                    with_payload=models.PayloadSelectorInclude(include=[DOCUMENT_ID]),
                )
            )
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


def _check_payloads(payloads, count: int) -> list[dict]:
    if payloads is None:
        return [{}] * count
    if isinstance(payloads, (dict, str, bytes)) or not isinstance(payloads, Iterable):
        raise InvalidArgumentError(f"payloads must be a list of {count} dicts, one per document")
    payloads = list(payloads)
    if len(payloads) != count or not all(isinstance(p, dict) for p in payloads):
        raise InvalidArgumentError(f"payloads must be a list of {count} dicts, one per document")
    for position, payload in enumerate(payloads):
        if DOCUMENT_ID in payload:
            raise InvalidArgumentError(f"payload {position} uses the reserved key {DOCUMENT_ID!r}; rename it")
        try:
            json.dumps(payload, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"payload {position} cannot be stored as JSON: {first_line(exc)}") from exc
    return payloads


def _server_detail(exc) -> str:
    """The server's own error text from a Qdrant HTTP error (``{"status": {"error": ...}}``), else its reason."""
    with contextlib.suppress(Exception):
        status = exc.structured().get("status")
        if isinstance(status, dict) and status.get("error"):
            return first_line(Exception(status["error"]))
    return exc.reason_phrase or "error"


def _grpc_failure(exc: BaseException, server: str, what: str) -> tuple[bool, str] | None:
    """(retry?, message) for a gRPC error, or ``None`` for anything else."""
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        name = getattr(code(), "name", "")
    except Exception:
        return None
    if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return False, f"{server} refused the API key ({name}) while {what}: pass the right key"
    if name == "UNAVAILABLE":
        return True, f"cannot reach {server} (gRPC {name}) while {what}; start the server or check the url"
    if name in ("RESOURCE_EXHAUSTED", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"):
        return True, f"{server} failed {what}: gRPC {name}"
    details = getattr(exc, "details", None)
    return False, f"{server} failed {what}: gRPC {name} {details() if callable(details) else ''}".strip()

