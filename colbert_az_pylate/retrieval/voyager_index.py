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
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from pylate.indexes.base import Base
from tqdm.auto import tqdm

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    IndexLockedError,
    InvalidArgumentError,
    check_count,
    first_line,
)
from colbert_az_pylate.files import atomic_path, atomic_write, read_at
from colbert_az_pylate.retrieval.folders import (
    LOCK,
    acquire_writer_lock,
    index_backend,
    release_writer_lock,
)
from colbert_az_pylate.retrieval.folders import VOYAGER_MANIFEST as MANIFEST
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.passages import count_entries
from colbert_az_pylate.retrieval.vectors import as_matrices
from colbert_az_pylate.scores import maxsim_top_k, packed_maxsim_scores
from colbert_az_pylate.signature import ModelSignature

__all__ = ["LOCK", "MANIFEST", "ModelSignature", "VoyagerIndex"]

FORMAT_VERSION = 1
STORE_DTYPE = np.float16
CHUNK_BYTES = 1 << 16  # store checksum granularity: a search hashes only the chunks its candidates live in
GRAPH_CHUNK = 50_000  # vectors per add_items call (progress granularity; voyager threads within a call)
_GENERATION_FILE = re.compile(r"^(hnsw|docs|ids)\.(\d+)\.(voyager|npz|json)(\.tmp)?$")
_STORE_FILE = re.compile(r"^(vectors|payloads)\.(\d+)\.(f16|jsonl)$")
_STORAGE = {"float32": "Float32", "float8": "Float8", "e4m3": "E4M3"}
_DOC_ARRAYS = ("doc_start", "doc_length", "payload_start", "payload_length", "alive", "label_doc")
_NO_SUMS = np.zeros((0, 32), np.uint8)
# Up to this size the committed vectors are held once per commit as float32 for exact scoring and reranking
# (a float16 memory map costs a conversion on every search); beyond it they are read block by block.
FLOAT32_CACHE_BYTES = 256 << 20
# Up to this many stored token vectors, exact MaxSim over all of them is faster than the graph search (and exact):
# the crossover measured by benchmarks/exact_crossover.py (benchmarks/results/exact-crossover.json).
EXACT_SEARCH_MAX_VECTORS = 150_000


def _append(path: Path, committed_bytes: int, data: bytes) -> None:
    """Append after the committed part, dropping what a killed writer may have left past it."""
    with open(path, "r+b" if path.exists() else "w+b") as handle:
        handle.truncate(committed_bytes)
        handle.seek(committed_bytes)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _extend_sums(path: Path, old_bytes: int, new_bytes: int, sums: np.ndarray) -> np.ndarray:
    """Chunk checksums of a store file grown from ``old_bytes`` to ``new_bytes``: the chunks before the old last
    (partial) one keep theirs; that one is checked against its old checksum, then it and the new ones are hashed."""
    first = min(len(sums), old_bytes // CHUNK_BYTES)
    digests = []
    with open(path, "rb") as handle:
        handle.seek(first * CHUNK_BYTES)
        for start in range(first * CHUNK_BYTES, new_bytes, CHUNK_BYTES):
            data = handle.read(min(CHUNK_BYTES, new_bytes - start))
            checked = start < old_bytes and start // CHUNK_BYTES < len(sums)
            if checked and hashlib.sha256(data[: old_bytes - start]).digest() != sums[start // CHUNK_BYTES].tobytes():
                raise IndexFormatError(_mismatch(path, start, old_bytes))
            digests.append(hashlib.sha256(data).digest())
    fresh = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32)
    return np.concatenate([sums[:first], fresh])


def _mismatch(path: Path, start: int, end: int) -> str:
    return (
        f"{path} does not match its checksum at bytes {start}-{end} (changed since it was written): the index "
        "cannot be trusted; rebuild it (colbert-az index ... --override)"
    )


def _chunks_of(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The chunk numbers that the byte ranges ``[starts, ends)`` touch (empty ranges touch none)."""
    keep = ends > starts
    first, last = starts[keep] // CHUNK_BYTES, (ends[keep] - 1) // CHUNK_BYTES
    counts = last - first + 1
    if not len(counts):
        return np.zeros(0, np.int64)
    offsets = np.repeat(first - (np.cumsum(counts) - counts), counts)
    return np.unique(offsets + np.arange(int(counts.sum())))


class VoyagerIndex(Base):
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
        if storage not in _STORAGE:
            raise InvalidArgumentError(f"storage must be one of {sorted(_STORAGE)}, got {storage!r}")
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
        if backend == "plaid":
            raise IndexFormatError(
                f"{self.path} holds a PLAID index, not a Voyager one; open it with PlaidIndex (Searcher finds the "
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
        for key in _DOC_ARRAYS:
            setattr(self, key, np.zeros(0, bool if key == "alive" else np.int64))
        self.rows = 0
        self.payload_bytes = 0
        self.epoch = epoch
        self.vector_sums, self.payload_sums = _NO_SUMS, _NO_SUMS
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

    def _numbers_on_disk(self) -> tuple[int, int]:
        """The highest generation and epoch any file in the folder carries (-1 when none)."""
        generation = epoch = -1
        with contextlib.suppress(FileNotFoundError):
            for child in self.path.iterdir():
                if match := _GENERATION_FILE.match(child.name):
                    generation = max(generation, int(match.group(2)))
                elif match := _STORE_FILE.match(child.name):
                    epoch = max(epoch, int(match.group(2)))
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            generation = max(generation, int(manifest["generation"]))
            epoch = max(epoch, int(manifest["epoch"]))
        return generation, epoch

    def _next_epoch(self) -> int:
        """A store epoch no file in the folder uses: an override or a compaction never appends to live stores."""
        return max(self._numbers_on_disk()[1], getattr(self, "epoch", -1)) + 1

    @property
    def vectors_file(self) -> Path:
        """The store of token vectors of the current epoch."""
        return self.path / f"vectors.{self.epoch}.f16"

    @property
    def payloads_file(self) -> Path:
        """The store of payloads of the current epoch."""
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
        except FileNotFoundError as exc:
            raise IndexFormatError(
                f"{self.path / MANIFEST} has disappeared: the index is gone or damaged; rebuild it"
            ) from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(
                f"cannot read {self.path / MANIFEST}: {first_line(exc)}; the index folder is damaged, rebuild it "
                "(colbert-az index ... --override)"
            ) from exc
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexFormatError(
                f"index at {self.path} has format {version!r}, this colbert-az-pylate reads up to {FORMAT_VERSION}; "
                "upgrade colbert-az-pylate"
            )
        return manifest

    def _open(self) -> None:
        """Load the committed state; retried when a writer replaces the generation while we read it."""
        tried = None
        for attempt in range(20):
            manifest = self._read_manifest()
            try:
                self._load(manifest)
                return
            except FileNotFoundError as exc:
                if manifest.get("generation") == tried:  # the manifest did not move on: the file is really gone
                    raise IndexFormatError(
                        f"{exc.filename or 'a file'} is missing: the index at {self.path} is damaged; rebuild it "
                        "(colbert-az index ... --override)"
                    ) from exc
                tried = manifest.get("generation")
                time.sleep(0.01 * attempt)
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, ColbertAzError):
                    raise
                raise IndexFormatError(
                    f"the index at {self.path} is damaged ({type(exc).__name__}: {first_line(exc)}); rebuild it "
                    "(colbert-az index ... --override)"
                ) from exc
        raise IndexFormatError(f"the index at {self.path} kept changing while it was opened; try again")

    def _read_checked(self, name: str, manifest: dict) -> bytes:
        """The bytes of a generation file, read once (a writer may delete it right after) and checksummed."""
        path = self.path / name
        data = path.read_bytes()  # FileNotFoundError: a writer moved on; _open retries with the new manifest
        if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
            raise IndexFormatError(f"{path} does not match its checksum: the index is corrupted; rebuild it")
        return data

    def _load(self, manifest: dict) -> None:
        from voyager import Index

        previous = (getattr(self, "epoch", None), getattr(self, "vector_sums", _NO_SUMS))
        previous_payload = getattr(self, "payload_sums", _NO_SUMS)
        previous_ok = (getattr(self, "_vector_ok", None), getattr(self, "_payload_ok", None))
        settings, embedding_size, model = manifest["settings"], int(manifest["embedding_size"]), manifest["model"]
        generation, rows, payload_bytes = manifest["generation"], int(manifest["rows"]), int(manifest["payload_bytes"])
        epoch, chunk_bytes = int(manifest["epoch"]), manifest.get("chunk_bytes", CHUNK_BYTES)
        if chunk_bytes != CHUNK_BYTES:
            raise IndexFormatError(f"index at {self.path} has store chunks of {chunk_bytes} bytes; upgrade")
        names = {
            kind: f"{kind}.{generation}.{ext}" for kind, ext in (("hnsw", "voyager"), ("docs", "npz"), ("ids", "json"))
        }
        docs = self._read_checked(names["docs"], manifest)
        ids = self._read_checked(names["ids"], manifest)
        graph = self._read_checked(names["hnsw"], manifest)
        try:
            with np.load(io.BytesIO(docs), allow_pickle=False) as arrays:
                tables = {key: arrays[key] for key in _DOC_ARRAYS}
                sums = {key: arrays[key] if key in arrays.files else None for key in ("vector_sums", "payload_sums")}
        except (OSError, ValueError, KeyError) as exc:
            raise IndexFormatError(f"cannot read {self.path / names['docs']}: {first_line(exc)}; rebuild it") from exc
        doc_ids = json.loads(ids.decode("utf-8"))
        self.settings, self.embedding_size, self.model = settings, embedding_size, model
        try:
            loaded = Index.load(io.BytesIO(graph)) if len(tables["label_doc"]) else None
        except Exception as exc:  # voyager raises RuntimeError/ValueError on damaged files
            raise IndexFormatError(f"cannot load {self.path / names['hnsw']}: {exc}; rebuild the index") from exc
        self.generation, self.rows, self.payload_bytes, self.epoch = generation, rows, payload_bytes, epoch
        for path, needed in (
            (self.vectors_file, self.rows * self.embedding_size * 2),
            (self.payloads_file, self.payload_bytes),
        ):
            if needed and not path.exists():
                raise FileNotFoundError(2, "No such file", str(path))  # compacted away by a writer: _open retries
            size = path.stat().st_size if path.exists() else 0
            if size < needed:
                raise IndexFormatError(f"{path} is truncated ({size} of {needed} bytes); rebuild the index")
        lengths = tables["doc_length"]
        if not np.array_equal(tables["doc_start"], np.cumsum(lengths) - lengths):
            raise IndexFormatError(f"the document table of {self.path} is damaged; rebuild the index")
        for key, value in tables.items():
            setattr(self, key, value)
        self.doc_ids = doc_ids
        self.graph = loaded if loaded is not None else self._new_graph()
        self.vector_sums = self._sums(sums["vector_sums"], self.rows * self.embedding_size * 2, self.vectors_file)
        self.payload_sums = self._sums(sums["payload_sums"], self.payload_bytes, self.payloads_file)
        # Chunks already verified stay verified when the same store only grew.
        self._vector_ok = self._carry_ok(previous[0], previous[1], previous_ok[0], self.vector_sums)
        self._payload_ok = self._carry_ok(previous[0], previous_payload, previous_ok[1], self.payload_sums)
        self._positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids) if self.alive[i]}
        self._derive()
        self._hold_store()

    def _hold_store(self) -> None:
        """Hold the store files open: a writer (another process, or another object of this one) may compact or
        replace them away, and this snapshot must stay readable."""
        _ = self.vectors
        if self.payload_bytes:
            self._payload_handle = open(self.payloads_file, "rb")  # noqa: SIM115 - closed by _derive/close

    def _sums(self, sums: np.ndarray | None, size: int, path: Path) -> np.ndarray:
        if sums is None:  # written before store checksums existed: computed at the next commit
            return _NO_SUMS
        chunks = -(-size // CHUNK_BYTES)
        if sums.dtype != np.uint8 or sums.shape != (chunks, 32):
            raise IndexFormatError(f"the checksums of {path} do not fit its size; the index is damaged, rebuild it")
        return sums

    def _carry_ok(self, epoch, old_sums: np.ndarray, old_ok, new_sums: np.ndarray) -> np.ndarray:
        ok = np.zeros(len(new_sums), bool)
        if epoch == self.epoch and old_ok is not None and len(old_ok) == len(old_sums):
            same = min(len(old_sums), len(new_sums))
            ok[:same] = old_ok[:same] & (old_sums[:same] == new_sums[:same]).all(axis=1)
        return ok

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

    def refresh(self) -> VoyagerIndex:
        """Pick up what another process (or object) committed since this index was opened.

        Returns
        -------
        VoyagerIndex
            ``self``. An object with a staged override keeps its staged state.
        """
        if not self._pending and self._read_manifest()["generation"] != self.generation:
            self._open()
        return self

    @property
    def vectors(self) -> np.ndarray:
        """All committed token vectors (rows × dim, float16), memory-mapped; not checksummed (see :meth:`verify`)."""
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

    # ----------------------------------------------------------------------------------------------- checksums
    def _verify_vector_rows(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Check the chunks of the store that hold these rows, once per chunk per snapshot."""
        if not len(self.vector_sums) or self._vector_ok.all():
            return
        row_bytes = self.embedding_size * 2
        chunks = _chunks_of(starts.astype(np.int64) * row_bytes, (starts + lengths).astype(np.int64) * row_bytes)
        todo = chunks[~self._vector_ok[chunks]]
        if len(todo):
            raw = self.vectors.reshape(-1).view(np.uint8)
            total = self.rows * row_bytes
            for chunk in todo.tolist():
                start, end = chunk * CHUNK_BYTES, min((chunk + 1) * CHUNK_BYTES, total)
                if hashlib.sha256(raw[start:end]).digest() != self.vector_sums[chunk].tobytes():
                    raise IndexFormatError(_mismatch(self.vectors_file, start, end))
                self._vector_ok[chunk] = True

    def _read_payload(self, start: int, length: int) -> bytes:
        """Bytes of the payload store, after checking the chunks that hold them (once per chunk per snapshot).

        Positional reads: concurrent searches share the open file without a lock."""
        handle = self._payload_handle
        if handle is None:
            handle = self._payload_handle = open(self.payloads_file, "rb")  # noqa: SIM115 - closed by _derive/close
        if len(self.payload_sums):
            for chunk in _chunks_of(np.array([start]), np.array([start + length])).tolist():
                if self._payload_ok[chunk]:
                    continue
                begin, end = chunk * CHUNK_BYTES, min((chunk + 1) * CHUNK_BYTES, self.payload_bytes)
                if hashlib.sha256(read_at(handle, begin, end - begin)).digest() != self.payload_sums[chunk].tobytes():
                    raise IndexFormatError(_mismatch(self.payloads_file, begin, end))
                self._payload_ok[chunk] = True
        return read_at(handle, start, length)

    def verify(self) -> int:
        """Check every byte of the committed index against its recorded SHA-256 now (opening checks the graph and
        the tables; searches check only the store chunks they read).

        Returns
        -------
        int
            The number of store bytes checked (0 for an index written before store checksums, or an empty one).

        Raises
        ------
        IndexFormatError
            A file does not match its checksum.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index = VoyagerIndex(folder, "demo", embedding_size=4)
        ...     index.add_documents(["a"], [np.ones((3, 4), "float32")]).verify()
        27
        """
        if self._pending:
            return 0
        self.refresh()
        manifest = self._read_manifest()
        for name in manifest["files"]:
            self._read_checked(name, manifest)
        checked = 0
        if len(self.vector_sums):
            self._vector_ok[:] = False
            self._verify_vector_rows(np.array([0]), np.array([self.rows]))
            checked += self.rows * self.embedding_size * 2
        if len(self.payload_sums):
            self._payload_ok[:] = False
            self._read_payload(0, self.payload_bytes)
            checked += self.payload_bytes
        return checked

    # ----------------------------------------------------------------------------------------------- writing
    def _acquire(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ColbertAzError(f"cannot create the index folder {self.path}: {first_line(exc)}") from exc
        self._lock = acquire_writer_lock(self.path)
        self._release = weakref.finalize(self, release_writer_lock, self._lock)

    def _writable(self) -> None:
        if self.read_only:
            raise InvalidArgumentError(
                f"index at {self.path} was opened read_only; open it without read_only to change it"
            )
        if self._lock is None:  # closed: take the lock again
            if self._pending:
                raise IndexLockedError(f"this override of {self.path} was closed before its first commit")
            self._acquire()
        if self._lock.replacing(self):
            raise IndexLockedError(
                f"another VoyagerIndex of this process is replacing {self.path} (override=True) and has not "
                "committed yet; write through that object, or let it commit first"
            )
        if self._pending:
            if self._lock.replacer is None or self._lock.replacer() is not self:
                raise IndexLockedError(f"this override of {self.path} was abandoned; open the index again")
            return
        if (self.path / MANIFEST).exists():
            self.refresh()

    def _commit(self) -> None:
        if self._pending and self._batch_depth:
            return  # an override inside batch(): committed once, when the block ends
        # An override comes after whatever the replaced index reached, so no file name is reused.
        generation = max(self._numbers_on_disk()[0], self.generation) + 1 if self._pending else self.generation + 1
        files = {}

        def write(name: str, writer) -> None:
            # the folder is synced once, after the manifest that names these files
            with atomic_path(self.path / name, temporary=self.path / f"{name}.tmp", sync_folder=False) as temporary:
                writer(temporary)
                with open(temporary, "rb") as handle:
                    files[name] = hashlib.sha256(handle.read()).hexdigest()

        def write_docs(path: Path) -> None:
            with open(path, "wb") as handle:
                np.savez(
                    handle,
                    **{key: getattr(self, key) for key in _DOC_ARRAYS},
                    vector_sums=self.vector_sums,
                    payload_sums=self.payload_sums,
                )

        def write_graph(path: Path) -> None:
            if len(self.label_doc):
                self.graph.save(str(path))
            else:  # voyager cannot load the file of an index without elements
                path.write_bytes(b"")

        write(f"docs.{generation}.npz", write_docs)
        write(f"ids.{generation}.json", lambda p: p.write_bytes(json.dumps(self.doc_ids, ensure_ascii=False).encode()))
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
            "chunk_bytes": CHUNK_BYTES,
            "documents": len(self._positions),
            "files": files,
        }
        atomic_write(self.path / MANIFEST, json.dumps(manifest, indent=1), temporary=self.path / f"{MANIFEST}.tmp")
        self.generation = generation
        if self._pending:
            self._pending = False
            self._lock.replacer = None
        self._derive()
        self._hold_store()
        self._remove_stale()

    def _remove_stale(self) -> None:
        """Delete files of older generations and epochs and leftovers of killed writers (only files of ours)."""
        for child in self.path.iterdir():
            match = _GENERATION_FILE.match(child.name)
            stale = match and (match.group(4) or int(match.group(2)) != self.generation)
            store = _STORE_FILE.match(child.name)
            if stale or (store and int(store.group(2)) != self.epoch):
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()

    def _forget_uncommitted(self) -> None:
        """After a failed write: back to the last commit, or, for a staged override, to an empty staged index."""
        if self._pending:
            self._empty_state(self.epoch)  # its store files are truncated by the next append
        else:
            self._open()

    @contextlib.contextmanager
    def batch(self) -> Iterator[VoyagerIndex]:
        """Group writes: with ``override=True``, the old index is replaced once, when the block ends.

        Inside the block, writes of an index opened with ``override=True`` are staged; the old index stays
        committed until the block ends without an exception, and stays in place (the staged documents are
        dropped) when it raises. Outside an override every write commits on its own, as without the block.

        Returns
        -------
        contextlib.AbstractContextManager[VoyagerIndex]
            A context manager that yields ``self``.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = VoyagerIndex(folder, "demo", embedding_size=4).add_documents(["old"], [np.ones((2, 4), "f4")])
        ...     fresh = VoyagerIndex(folder, "demo", override=True, embedding_size=4)
        ...     try:
        ...         with fresh.batch():
        ...             _ = fresh.add_documents(["new"], [np.ones((2, 4), "f4")])
        ...             raise KeyboardInterrupt  # interrupted before the end: nothing is replaced
        ...     except KeyboardInterrupt:
        ...         pass
        ...     VoyagerIndex(folder, "demo", read_only=True, embedding_size=4).doc_ids
        ['old']
        """
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._batch_depth -= 1
            if self._pending and not self._batch_depth:
                self._forget_uncommitted()
            raise
        self._batch_depth -= 1
        if self._pending and not self._batch_depth:
            self._writable()
            with self._lock.mutex:
                try:
                    self._commit()
                except BaseException:
                    self._forget_uncommitted()
                    raise

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
        try:
            encoded_payloads = [
                (json.dumps(p, ensure_ascii=False) + "\n").encode() for p in (payloads or [{}] * len(documents_ids))
            ]
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"a payload cannot be stored as JSON: {first_line(exc)}") from exc
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

    def _add(
        self, documents_ids: list[str], matrices: list[np.ndarray], encoded_payloads: list[bytes], present: list[str]
    ) -> None:
        if present:
            self._mark_removed(present)
        lengths = np.array([len(m) for m in matrices], np.int64)
        stacked = np.concatenate(matrices)
        stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        vector_bytes = self.rows * self.embedding_size * 2
        new_vectors = stacked.astype(STORE_DTYPE).tobytes()
        _append(self.vectors_file, vector_bytes, new_vectors)
        self.vector_sums = _extend_sums(
            self.vectors_file, vector_bytes, vector_bytes + len(new_vectors), self.vector_sums
        )
        payload_lengths = np.array([len(p) for p in encoded_payloads], np.int64)
        new_payloads = b"".join(encoded_payloads)
        _append(self.payloads_file, self.payload_bytes, new_payloads)
        self.payload_sums = _extend_sums(
            self.payloads_file, self.payload_bytes, self.payload_bytes + len(new_payloads), self.payload_sums
        )
        # Chunks hashed from the file just written are verified; the older ones keep their state.
        self._vector_ok = np.concatenate(
            [self._vector_ok[: vector_bytes // CHUNK_BYTES], np.ones(len(self.vector_sums), bool)]
        )[: len(self.vector_sums)]
        self._payload_ok = np.concatenate(
            [self._payload_ok[: self.payload_bytes // CHUNK_BYTES], np.ones(len(self.payload_sums), bool)]
        )[: len(self.payload_sums)]

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

    def compact(self) -> VoyagerIndex:
        """Rewrite the store and the graph without removed documents (one atomic commit).

        Returns
        -------
        VoyagerIndex
            ``self``.
        """
        self._writable()
        with self._lock.mutex:
            live = [i for i in range(len(self.doc_ids)) if self.alive[i]]
            ids = [self.doc_ids[i] for i in live]
            matrices = [self._document_vectors(i) for i in live]
            payloads = [self.payload(doc_id) for doc_id in ids]
            self._empty_state(self._next_epoch())  # fresh store files; the old ones stay until the manifest moves
            try:
                if ids:
                    encoded = [(json.dumps(p, ensure_ascii=False) + "\n").encode() for p in payloads]
                    self._add(ids, matrices, encoded, [])
                else:
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

    def close(self) -> None:
        """Release the writer lock and open files (also released when the object is collected or the process ends).

        A staged override that has not committed is dropped; the old index stays.
        """
        self._vectors = None
        if self._payload_handle is not None:
            self._payload_handle.close()
            self._payload_handle = None
        replacer = self._lock.replacer if self._lock is not None else None
        if replacer is not None and replacer() is self:
            self._lock.replacer = None
        if self._release is not None:
            self._release()
            self._release = None
        self._lock = None

    # ----------------------------------------------------------------------------------------------- reading
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

    @property
    def exact_is_faster(self) -> bool:
        """Whether exact MaxSim over every stored vector beats the graph search here (a measured crossover,
        :data:`EXACT_SEARCH_MAX_VECTORS`)."""
        return self.rows <= EXACT_SEARCH_MAX_VECTORS

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
        if subset is not None and (isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable)):
            raise InvalidArgumentError("subset must be a list of document ids, not one id; wrap it in a list")
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
        if subset is not None and (isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable)):
            raise InvalidArgumentError("subset must be a list of document ids, not one id; wrap it in a list")
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
