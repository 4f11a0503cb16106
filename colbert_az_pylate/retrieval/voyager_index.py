"""``VoyagerIndex``: a drop-in for ``pylate.indexes.Voyager`` that is fast, crash-safe and free of pickle.

Layout of an index folder (``index_folder/index_name``)::

    manifest.json          the committed state: format, model, settings, counts, the files of this generation
    vectors.<epoch>.f16    every document token vector, document after document (append-only, float16)
    payloads.<epoch>.jsonl one JSON object per document (text, metadata) for the searcher (append-only)
    hnsw.<gen>.voyager     the HNSW graph over the token vectors (labels = rows of the candidate set)
    docs.<gen>.npz         per document: first row, length, payload offset/length, alive; per label: document
    ids.<gen>.json         the document ids, in document order

A commit writes the new generation's files, then replaces ``manifest.json`` in one ``os.replace``; the
append-only files are only read up to the counts the manifest records (and truncated back to them by the next
writer; ``compact`` starts a new epoch of them). A process killed at any point therefore leaves the last
committed index. Nothing is unpickled: ``numpy.load(allow_pickle=False)``, JSON and voyager's own format.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pylate.indexes.base import Base
from tqdm.auto import tqdm

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, IndexLockedError
from colbert_az_pylate.scores import packed_maxsim_scores

try:  # POSIX advisory locks; on other systems writers are not serialised across processes.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
STORE_DTYPE = np.float16
GRAPH_CHUNK = 50_000  # vectors per add_items call (progress granularity; voyager threads within a call)
_GENERATION_FILE = re.compile(r"^(hnsw|docs|ids)\.(\d+)\.(voyager|npz|json)(\.tmp)?$")
_STORE_FILE = re.compile(r"^(vectors|payloads)\.(\d+)\.(f16|jsonl)$")
_STORAGE = {"float32": "Float32", "float8": "Float8", "e4m3": "E4M3"}


@dataclass(frozen=True)
class ModelSignature:
    """What produced the vectors of an index: a name, the dimension and a fingerprint of the weights.

    >>> ModelSignature("colbert-az", 128, "ab12").to_dict()
    {'name': 'colbert-az', 'embedding_size': 128, 'fingerprint': 'ab12'}
    """

    name: str
    embedding_size: int
    fingerprint: str

    def to_dict(self) -> dict:
        return {"name": self.name, "embedding_size": self.embedding_size, "fingerprint": self.fingerprint}

    @classmethod
    def of_model(cls, model, name: str | None = None) -> ModelSignature:
        """The signature of a pylate ColBERT: its output dimension and a hash of the projection, the embedding
        matrix and the tokenization settings (enough to tell fine-tuned checkpoints apart)."""
        digest = hashlib.sha256()
        for module in (model[0].auto_model.get_input_embeddings(), model[-1]):
            for tensor in module.state_dict().values():
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
        settings = (model.query_prefix, model.document_prefix, model.query_length, model.document_length)
        digest.update(repr(settings).encode())
        dimension = int(model[-1].get_sentence_embedding_dimension())
        name = name or str(model[0].auto_model.config.name_or_path or "unnamed model")
        return cls(name, dimension, digest.hexdigest()[:16])


def _as_matrix(embeddings, what: str, dimension: int) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().float().cpu().numpy()
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ColbertAzError(f"{what} must be a non-empty (tokens, {dimension}) matrix, got shape {array.shape}")
    if array.shape[1] != dimension:
        raise ColbertAzError(
            f"{what} has vectors of dimension {array.shape[1]} but the index holds dimension {dimension}; "
            "encode with the model the index was built with"
        )
    if not np.isfinite(array).all():
        raise ColbertAzError(f"{what} holds NaN or infinite values")
    return array


def _as_matrices(embeddings, what: str, dimension: int) -> list[np.ndarray]:
    if isinstance(embeddings, (np.ndarray, torch.Tensor)) and embeddings.ndim == 2:
        embeddings = [embeddings]
    return [_as_matrix(e, f"{what} {i}", dimension) for i, e in enumerate(embeddings)]


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _append(path: Path, committed_bytes: int, data: bytes) -> None:
    """Append after the committed part, dropping what a killed writer may have left past it."""
    with open(path, "r+b" if path.exists() else "w+b") as handle:
        handle.truncate(committed_bytes)
        handle.seek(committed_bytes)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class VoyagerIndex(Base):
    """HNSW (voyager) over document token vectors, with an exact MaxSim rerank from a memory-mapped store.

    Same constructor and methods as ``pylate.indexes.Voyager``, so ``pylate.retrieve.ColBERT(index=...)``
    works unchanged; ``search`` is the faster end-to-end path (candidates from the graph, exact MaxSim over the
    stored vectors). Extra keyword-only settings:

    - ``model``: a :class:`ModelSignature` recorded at creation and checked at every open;
    - ``storage``: precision of the vectors inside the graph (``"float8"``, ``"e4m3"`` or ``"float32"``); the
      rerank always reads the float16 store, so this only affects which candidates are found;
    - ``num_threads``: threads for building and querying the graph (-1: all cores);
    - ``read_only``: open without taking the writer lock (searching while another process writes);
    - ``show_progress``: progress bars for building the graph and searching (default: on long work only).

    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((5, 8)).astype("float32") for _ in range(3)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     index = VoyagerIndex(folder, "demo", embedding_size=8)
    ...     index = index.add_documents(["a", "b", "c"], docs)
    ...     [hit["id"] for hit in index.search([docs[1][:2]], k=1)[0]]
    ['b']
    """

    is_end_to_end_index = False

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
        if storage not in _STORAGE:
            raise ColbertAzError(f"storage must be one of {sorted(_STORAGE)}, got {storage!r}")
        self.path = Path(index_folder) / index_name
        self.ef_search, self.num_threads, self.read_only = ef_search, num_threads, read_only
        self.show_progress = show_progress
        self._lock_handle = None
        exists = (self.path / MANIFEST).exists()
        if override and exists:
            if read_only:
                raise ColbertAzError("override=True needs a writable index; drop read_only")
            self._take_lock()
            self._remove_all()
            exists = False
        if exists:
            self._open()
            self._check_settings(embedding_size, model)
        else:
            if read_only:
                raise IndexFormatError(f"no index at {self.path}; build one first (colbert-az index ...)")
            self.path.mkdir(parents=True, exist_ok=True)
            self.settings = {"M": M, "ef_construction": ef_construction, "storage": storage}
            self.embedding_size = int(embedding_size)
            self.model = model.to_dict() if model else None
            self._empty_state()
            self._take_lock()
            self._commit(new_graph=True)

    # ----------------------------------------------------------------------------------------------- state
    def _empty_state(self) -> None:
        self.generation = 0
        self.doc_ids: list[str] = []
        self.doc_start = np.zeros(0, np.int64)
        self.doc_length = np.zeros(0, np.int64)
        self.payload_start = np.zeros(0, np.int64)
        self.payload_length = np.zeros(0, np.int64)
        self.alive = np.zeros(0, bool)
        self.label_doc = np.zeros(0, np.int64)
        self.rows = 0
        self.payload_bytes = 0
        self.epoch = getattr(self, "epoch", -1) + 1
        self.graph = self._new_graph()
        self._positions: dict[str, int] = {}
        self._derive()

    def _derive(self) -> None:
        """Lookup tables rebuilt once per commit or load, so that a search does no per-index work."""
        self._vectors = None
        if getattr(self, "_payload_handle", None) is not None:
            self._payload_handle.close()
        self._payload_handle = None
        self._id_array = np.asarray(self.doc_ids, dtype=object)
        self.live_labels = int(self.alive[self.label_doc].sum()) if len(self.label_doc) else 0

    @property
    def vectors_file(self) -> Path:
        return self.path / f"vectors.{self.epoch}.f16"

    @property
    def payloads_file(self) -> Path:
        return self.path / f"payloads.{self.epoch}.jsonl"

    def _new_graph(self):
        from voyager import Index, Space, StorageDataType

        return Index(
            Space.Cosine,
            num_dimensions=self.embedding_size,
            M=self.settings["M"],
            ef_construction=self.settings["ef_construction"],
            storage_data_type=getattr(StorageDataType, _STORAGE[self.settings["storage"]]),
        )

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"cannot read {self.path / MANIFEST}: {exc}; the index folder is damaged") from exc
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexFormatError(
                f"index at {self.path} has format {version!r}, this colbert-az-pylate reads up to {FORMAT_VERSION}; "
                "upgrade colbert-az-pylate"
            )
        return manifest

    def _open(self) -> None:
        """Load the committed state; retried when a writer replaces the generation while we read it."""
        for attempt in range(20):
            manifest = self._read_manifest()
            try:
                self._load(manifest)
                return
            except FileNotFoundError:
                if attempt == 19:
                    raise
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def _read_checked(self, name: str, manifest: dict) -> bytes:
        """The bytes of a generation file, read once (a writer may delete it right after) and checksummed."""
        path = self.path / name
        data = path.read_bytes()  # FileNotFoundError: a writer moved on; _open retries with the new manifest
        if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
            raise IndexFormatError(f"{path} does not match its checksum: the index is corrupted; rebuild it")
        return data

    def _load(self, manifest: dict) -> None:
        from voyager import Index

        self.settings, self.embedding_size, self.model = (
            manifest["settings"],
            manifest["embedding_size"],
            manifest["model"],
        )
        self.generation, self.rows, self.payload_bytes = (
            manifest["generation"],
            manifest["rows"],
            manifest["payload_bytes"],
        )
        self.epoch = manifest["epoch"]
        names = {
            kind: f"{kind}.{self.generation}.{ext}"
            for kind, ext in (("hnsw", "voyager"), ("docs", "npz"), ("ids", "json"))
        }
        docs = self._read_checked(names["docs"], manifest)
        ids = self._read_checked(names["ids"], manifest)
        graph = self._read_checked(names["hnsw"], manifest)
        with np.load(io.BytesIO(docs), allow_pickle=False) as arrays:
            for key in ("doc_start", "doc_length", "payload_start", "payload_length", "alive", "label_doc"):
                setattr(self, key, arrays[key])
        self.doc_ids = json.loads(ids.decode("utf-8"))
        try:
            self.graph = Index.load(io.BytesIO(graph)) if len(self.label_doc) else self._new_graph()
        except Exception as exc:  # voyager raises RuntimeError/ValueError on damaged files
            raise IndexFormatError(f"cannot load {self.path / names['hnsw']}: {exc}; rebuild the index") from exc
        for path, needed in (
            (self.vectors_file, self.rows * self.embedding_size * 2),
            (self.payloads_file, self.payload_bytes),
        ):
            if needed and not path.exists():
                raise FileNotFoundError(path)  # compacted away by a writer: _open retries
            size = path.stat().st_size if path.exists() else 0
            if size < needed:
                raise IndexFormatError(f"{path} is truncated ({size} of {needed} bytes); rebuild the index")
        self._positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids) if self.alive[i]}
        self._derive()
        # Hold the store files open: a writer may compact them away, and this snapshot must stay readable.
        _ = self.vectors
        if self.payload_bytes:
            self._payload_handle = open(self.payloads_file, "rb")  # noqa: SIM115 - closed by _derive/close

    def _check_settings(self, embedding_size: int, model: ModelSignature | None) -> None:
        if int(embedding_size) != self.embedding_size and model is None:
            raise IndexFormatError(
                f"index at {self.path} holds dimension {self.embedding_size}, not {embedding_size}; "
                "pass the index's embedding_size or override=True"
            )
        if model is not None:
            wanted = model.to_dict()
            if self.model is not None and self.model != wanted:
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

    def refresh(self) -> VoyagerIndex:
        """Pick up what another process committed since this index was opened."""
        if self._read_manifest()["generation"] != self.generation:
            self._open()
        return self

    @property
    def vectors(self) -> np.ndarray:
        """All committed token vectors (rows × dim, float16), memory-mapped."""
        if self._vectors is None or self._vectors.shape[0] != self.rows:
            if self.rows == 0:
                return np.zeros((0, self.embedding_size), STORE_DTYPE)
            self._vectors = np.memmap(self.vectors_file, STORE_DTYPE, "r", shape=(self.rows, self.embedding_size))
        return self._vectors

    def __len__(self) -> int:
        """Number of live documents."""
        return len(self._positions)

    def __contains__(self, document_id: str) -> bool:
        return document_id in self._positions

    def _show(self, work: int) -> bool:
        return self.show_progress if self.show_progress is not None else work >= 4 * GRAPH_CHUNK

    # ----------------------------------------------------------------------------------------------- writing
    def _take_lock(self) -> None:
        if self._lock_handle is not None or fcntl is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK, "a+b")  # noqa: SIM115 - held for the life of the writer
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise IndexLockedError(
                f"another process is writing to {self.path}; wait for it, or open with read_only=True to search"
            ) from exc
        self._lock_handle = handle

    def _writable(self) -> None:
        if self.read_only:
            raise ColbertAzError(f"index at {self.path} was opened read_only; open it without read_only to change it")
        self._take_lock()
        if (self.path / MANIFEST).exists():
            self.refresh()

    def _remove_all(self) -> None:
        for child in self.path.iterdir():
            if child.name != LOCK and child.is_file():
                child.unlink()

    def _commit(self, new_graph: bool = False) -> None:
        generation = self.generation + 1
        files = {}

        def write(name: str, writer) -> None:
            temporary = self.path / f"{name}.tmp"
            writer(temporary)
            with open(temporary, "rb") as handle:
                files[name] = hashlib.sha256(handle.read()).hexdigest()
            os.replace(temporary, self.path / name)

        def write_docs(path: Path) -> None:
            with open(path, "wb") as handle:
                np.savez(
                    handle,
                    doc_start=self.doc_start,
                    doc_length=self.doc_length,
                    payload_start=self.payload_start,
                    payload_length=self.payload_length,
                    alive=self.alive,
                    label_doc=self.label_doc,
                )
                handle.flush()
                os.fsync(handle.fileno())

        def write_graph(path: Path) -> None:
            if len(self.label_doc):
                self.graph.save(str(path))
            else:  # voyager cannot load the file of an index without elements
                _fsync_write(path, b"")

        write(f"docs.{generation}.npz", write_docs)
        write(
            f"ids.{generation}.json", lambda p: _fsync_write(p, json.dumps(self.doc_ids, ensure_ascii=False).encode())
        )
        write(f"hnsw.{generation}.voyager", write_graph)
        manifest = {
            "format_version": FORMAT_VERSION,
            "generation": generation,
            "embedding_size": self.embedding_size,
            "model": self.model,
            "settings": self.settings,
            "rows": self.rows,
            "epoch": self.epoch,
            "payload_bytes": self.payload_bytes,
            "documents": len(self._positions),
            "files": files,
        }
        _fsync_write(self.path / f"{MANIFEST}.tmp", json.dumps(manifest, indent=1).encode())
        os.replace(self.path / f"{MANIFEST}.tmp", self.path / MANIFEST)
        _fsync_dir(self.path)
        self.generation = generation
        self._derive()
        self._remove_stale()

    def _remove_stale(self) -> None:
        """Delete files of older generations and leftovers of killed writers."""
        for child in self.path.iterdir():
            match = _GENERATION_FILE.match(child.name)
            stale = match and (match.group(4) or int(match.group(2)) != self.generation)
            store = _STORE_FILE.match(child.name)
            if stale or (store and int(store.group(2)) != self.epoch):
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()

    def add_documents(
        self,
        documents_ids: str | Sequence[str],
        documents_embeddings,
        batch_size: int = 2000,
        *,
        upsert: bool = False,
        payloads: Sequence[dict] | None = None,
    ) -> VoyagerIndex:
        """Add documents (one token matrix each) in one atomic commit; returns the index (as pylate's).

        An id already in the index is an error unless ``upsert=True``, which replaces that document.
        ``payloads`` (one JSON-serialisable dict per document) are stored with it and returned by ``payload``.
        ``batch_size`` is accepted for pylate compatibility; the graph is built in one multi-threaded call.
        """
        del batch_size
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        documents_ids = list(documents_ids)
        if not documents_ids:
            raise ColbertAzError("no documents to add: documents_ids is empty")
        bad = next((i for i in documents_ids if not isinstance(i, str) or not i), None)
        if bad is not None or any(not isinstance(i, str) for i in documents_ids):
            raise ColbertAzError(f"document ids must be non-empty strings, got {bad!r}; convert ids with str()")
        if len(set(documents_ids)) != len(documents_ids):
            seen, duplicates = set(), []
            for doc_id in documents_ids:
                (duplicates.append(doc_id) if doc_id in seen else seen.add(doc_id))
            raise ColbertAzError(
                f"duplicate document ids in one call: {duplicates[:5]}; give every document its own id"
            )
        matrices = _as_matrices(documents_embeddings, "document", self.embedding_size)
        if len(matrices) != len(documents_ids):
            raise ColbertAzError(f"{len(documents_ids)} ids but {len(matrices)} embedding matrices")
        if payloads is not None and len(payloads) != len(documents_ids):
            raise ColbertAzError(f"{len(documents_ids)} ids but {len(payloads)} payloads")
        encoded_payloads = [
            (json.dumps(p, ensure_ascii=False) + "\n").encode() for p in (payloads or [{}] * len(documents_ids))
        ]
        self._writable()
        present = [doc_id for doc_id in documents_ids if doc_id in self._positions]
        if present and not upsert:
            raise ColbertAzError(
                f"{len(present)} ids are already in the index (e.g. {present[:3]}); pass upsert=True to replace them"
            )
        try:
            self._add(documents_ids, matrices, encoded_payloads, present)
        except BaseException:
            self._open()  # forget the uncommitted change; the files still hold the last commit
            raise
        return self

    def _add(
        self, documents_ids: list[str], matrices: list[np.ndarray], encoded_payloads: list[bytes], present: list[str]
    ) -> None:
        if present:
            self._mark_removed(present)
        lengths = np.array([len(m) for m in matrices], np.int64)
        stacked = np.concatenate(matrices)
        stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        _append(self.vectors_file, self.rows * self.embedding_size * 2, stacked.astype(STORE_DTYPE).tobytes())
        payload_lengths = np.array([len(p) for p in encoded_payloads], np.int64)
        _append(self.payloads_file, self.payload_bytes, b"".join(encoded_payloads))

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
        first_doc = len(self.doc_ids)
        self.doc_ids.extend(documents_ids)
        self.doc_start = np.concatenate([self.doc_start, self.rows + np.cumsum(lengths) - lengths])
        self.doc_length = np.concatenate([self.doc_length, lengths])
        self.payload_start = np.concatenate(
            [self.payload_start, self.payload_bytes + np.cumsum(payload_lengths) - payload_lengths]
        )
        self.payload_length = np.concatenate([self.payload_length, payload_lengths])
        self.alive = np.concatenate([self.alive, np.ones(len(documents_ids), bool)])
        self.label_doc = np.concatenate(
            [self.label_doc, np.repeat(np.arange(first_doc, first_doc + len(lengths)), lengths)]
        )
        self.rows += len(stacked)
        self.payload_bytes += int(payload_lengths.sum())
        self._positions.update({doc_id: first_doc + i for i, doc_id in enumerate(documents_ids)})
        self._commit()

    def _mark_removed(self, documents_ids: Iterable[str]) -> None:
        for doc_id in documents_ids:
            position = self._positions.pop(doc_id)
            self.alive[position] = False
            start = int(self.doc_start[position])  # a document's labels are its store rows
            for label in range(start, start + int(self.doc_length[position])):
                self.graph.mark_deleted(label)

    def remove_documents(self, documents_ids: str | Sequence[str]) -> VoyagerIndex:
        """Remove documents from results and from the store (space is reclaimed by :meth:`compact`)."""
        if isinstance(documents_ids, str):
            documents_ids = [documents_ids]
        self._writable()
        missing = [doc_id for doc_id in documents_ids if doc_id not in self._positions]
        if missing:
            raise ColbertAzError(f"{len(missing)} ids are not in the index (e.g. {missing[:3]}); nothing was removed")
        self._mark_removed(documents_ids)
        self._commit()
        return self

    def compact(self) -> VoyagerIndex:
        """Rewrite the store and the graph without removed documents (one atomic commit)."""
        self._writable()
        live = [i for i in range(len(self.doc_ids)) if self.alive[i]]
        ids = [self.doc_ids[i] for i in live]
        matrices = [
            np.asarray(self.vectors[self.doc_start[i] : self.doc_start[i] + self.doc_length[i]], np.float32)
            for i in live
        ]
        payloads = [self.payload(doc_id) for doc_id in ids]
        generation = self.generation
        self._empty_state()  # a new epoch: fresh store files; the old ones stay until the manifest moves on
        self.generation = generation
        if ids:
            self.add_documents(ids, matrices, payloads=payloads)
        else:
            self._commit()
        return self

    # ----------------------------------------------------------------------------------------------- reading
    def payload(self, document_id: str) -> dict:
        """The payload stored with a document (``{}`` if none)."""
        position = self._positions[document_id]
        if self._payload_handle is None:
            self._payload_handle = open(self.payloads_file, "rb")  # noqa: SIM115 - closed by _derive/close
        self._payload_handle.seek(int(self.payload_start[position]))
        return json.loads(self._payload_handle.read(int(self.payload_length[position])))

    def document_embeddings(self, document_id: str) -> np.ndarray:
        """The stored token vectors of one document, as float32: L2-normalised on add (as pylate's Voyager returns
        them from its cosine graph; a no-op for model outputs, which are normalised) and kept as float16."""
        position = self._positions[document_id]
        start = int(self.doc_start[position])
        return np.asarray(self.vectors[start : start + int(self.doc_length[position])], np.float32)

    def get_documents_embeddings(self, document_ids: list[list[str]]) -> list[list[np.ndarray]]:
        """pylate's interface: token vectors for each group of ids, read from the store."""
        return [[self.document_embeddings(doc_id) for doc_id in group] for group in document_ids]

    def _query_graph(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        if not self._positions:
            raise ColbertAzError("the index is empty; add documents before searching")
        from voyager import RecallError

        k = min(k, self.live_labels)
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
                else:
                    raise
        return labels.astype(np.int64), distances, [len(q) for q in queries]

    def __call__(self, queries_embeddings, k: int = 10) -> dict:
        """pylate's interface: for every query token its ``k`` nearest document tokens (as document ids)."""
        queries = _as_matrices(queries_embeddings, "query", self.embedding_size)
        labels, distances, sizes = self._query_graph(queries, k)
        split = np.cumsum(sizes)[:-1]
        ids = self._id_array[self.label_doc[labels]]
        return {
            "documents_ids": [chunk.tolist() for chunk in np.split(ids, split)],
            "distances": [chunk.tolist() for chunk in np.split(distances, split)],
        }

    def rerank(self, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Exact MaxSim of one query (tokens × dim) against stored documents (by position)."""
        starts, lengths = self.doc_start[positions], self.doc_length[positions]
        rows = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        packed_starts = np.cumsum(lengths) - lengths
        return packed_maxsim_scores(query, np.asarray(self.vectors[rows], np.float32), packed_starts)

    def search(
        self,
        queries_embeddings,
        k: int = 10,
        k_token: int = 256,
        subset: Sequence[str] | None = None,
        candidates: int | None = None,
    ) -> list[list[dict]]:
        """Top ``k`` documents per query, in pylate's format ``[[{"id": ..., "score": ...}, ...], ...]``.

        The graph gives ``k_token`` neighbours per query token; documents are pre-scored from those neighbours
        alone (a query token whose neighbours miss a document counts the lowest similarity it retrieved) when
        ``candidates`` is set, and the best ``candidates`` (default: all) get the exact MaxSim over their stored
        vectors. Pruning trades recall for speed (see docs/benchmarks.md). ``subset`` keeps only those ids.
        """
        queries = _as_matrices(queries_embeddings, "query", self.embedding_size)
        if k < 1:
            raise ColbertAzError(f"k must be at least 1, got {k}")
        labels, distances, sizes = self._query_graph(queries, max(k_token, 1))
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
            if allowed is not None:
                keep = np.isin(documents, allowed)
                documents, similarity = np.where(keep, documents, -1), np.where(keep, similarity, -np.inf)
            unique, inverse = np.unique(documents, return_inverse=True)
            if unique[0] == -1:  # neighbours outside the subset
                unique, inverse = unique[1:], inverse.reshape(documents.shape) - 1
            if len(unique) == 0:
                results.append([])
                continue
            if candidates is not None and len(unique) > candidates:
                best = np.repeat(similarity.min(axis=1, keepdims=True), len(unique), axis=1)
                rows = np.repeat(np.arange(documents.shape[0]), documents.shape[1])
                flat = inverse.reshape(-1)
                valid = flat >= 0
                np.maximum.at(best, (rows[valid], flat[valid]), similarity.reshape(-1)[valid])
                unique = unique[np.argpartition(-best.sum(axis=0), candidates)[:candidates]]
            scores = self.rerank(query, unique)
            order = np.argsort(-scores, kind="stable")[:k]
            results.append([{"id": self.doc_ids[unique[i]], "score": float(scores[i])} for i in order])
        return results

    def exact_search(self, queries_embeddings, k: int = 10, chunk_documents: int = 4096) -> list[list[dict]]:
        """Brute-force MaxSim over every live document: the yardstick for :meth:`search`."""
        queries = _as_matrices(queries_embeddings, "query", self.embedding_size)
        if not self._positions:
            raise ColbertAzError("the index is empty; add documents before searching")
        live = np.flatnonzero(self.alive)
        results = []
        for query in queries:
            scores = np.concatenate(
                [self.rerank(query, live[i : i + chunk_documents]) for i in range(0, len(live), chunk_documents)]
            )
            order = np.argsort(-scores, kind="stable")[:k]
            results.append([{"id": self.doc_ids[live[i]], "score": float(scores[i])} for i in order])
        return results

    def close(self) -> None:
        """Release the writer lock and open files (also released when the process ends)."""
        self._derive()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None
