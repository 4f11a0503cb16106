"""The committed state of a Voyager index: ``manifest.json`` and the generation files it names.

A commit writes the new generation's files (``hnsw.<gen>.voyager``, ``docs.<gen>.npz``, ``ids.<gen>.json``), each
with its SHA-256 recorded in the manifest, then replaces ``manifest.json`` in one ``os.replace`` and deletes what
is no longer named (older generations and epochs, leftovers of killed writers). Opening reads the manifest, then
its files, checked against their checksums, retrying when a writer moves on in between.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, first_line
from colbert_az_pylate.files import atomic_path, atomic_write
from colbert_az_pylate.retrieval.folders import VOYAGER_MANIFEST as MANIFEST
from colbert_az_pylate.retrieval.voyager.store import CHUNK_BYTES, NO_SUMS, STORE_FILE

if TYPE_CHECKING:
    from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex

FORMAT_VERSION = 1
GENERATION_FILE = re.compile(r"^(hnsw|docs|ids)\.(\d+)\.(voyager|npz|json)(\.tmp)?$")
# The document tables of docs.<gen>.npz: per document its first row, length, payload offset/length and whether it
# is alive; per label (a row of the store) its document.
DOC_ARRAYS = ("doc_start", "doc_length", "payload_start", "payload_length", "alive", "label_doc")


def _generation_files(generation: int) -> dict[str, str]:
    """The names of a generation's files, by kind."""
    return {kind: f"{kind}.{generation}.{ext}" for kind, ext in (("hnsw", "voyager"), ("docs", "npz"), ("ids", "json"))}


class CommittedState:
    """Reading and committing the manifest of :class:`~colbert_az_pylate.retrieval.voyager_index.VoyagerIndex`
    (a mixin).

    Reads and sets the index's ``path``, ``generation``, ``epoch``, the counts, the document tables
    (:data:`DOC_ARRAYS`), ``doc_ids``, ``graph`` and the store checksums; ``_pending`` marks a staged override
    (the committed index is still the one it replaces).
    """

    def _numbers_on_disk(self) -> tuple[int, int]:
        """The highest generation and epoch any file in the folder carries (-1 when none)."""
        generation = epoch = -1
        with contextlib.suppress(FileNotFoundError):
            for child in self.path.iterdir():
                if match := GENERATION_FILE.match(child.name):
                    generation = max(generation, int(match.group(2)))
                elif match := STORE_FILE.match(child.name):
                    epoch = max(epoch, int(match.group(2)))
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            generation = max(generation, int(manifest["generation"]))
            epoch = max(epoch, int(manifest["epoch"]))
        return generation, epoch

    def _next_epoch(self) -> int:
        """A store epoch no file in the folder uses: an override or a compaction never appends to live stores."""
        return max(self._numbers_on_disk()[1], getattr(self, "epoch", -1)) + 1

    # ----------------------------------------------------------------------------------------------- reading
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

        previous = (getattr(self, "epoch", None), getattr(self, "vector_sums", NO_SUMS))
        previous_payload = getattr(self, "payload_sums", NO_SUMS)
        previous_ok = (getattr(self, "_vector_ok", None), getattr(self, "_payload_ok", None))
        settings, embedding_size, model = manifest["settings"], int(manifest["embedding_size"]), manifest["model"]
        generation, rows, payload_bytes = manifest["generation"], int(manifest["rows"]), int(manifest["payload_bytes"])
        epoch, chunk_bytes = int(manifest["epoch"]), manifest.get("chunk_bytes", CHUNK_BYTES)
        if chunk_bytes != CHUNK_BYTES:
            raise IndexFormatError(f"index at {self.path} has store chunks of {chunk_bytes} bytes; upgrade")
        names = _generation_files(generation)
        docs = self._read_checked(names["docs"], manifest)
        ids = self._read_checked(names["ids"], manifest)
        graph = self._read_checked(names["hnsw"], manifest)
        try:
            with np.load(io.BytesIO(docs), allow_pickle=False) as arrays:
                tables = {key: arrays[key] for key in DOC_ARRAYS}
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
        self._check_store_sizes()
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

    # ----------------------------------------------------------------------------------------------- writing
    def _write_generation(self, generation: int) -> dict[str, str]:
        """Write the files of a generation (each atomically); their names and SHA-256s, for the manifest."""
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
                    **{key: getattr(self, key) for key in DOC_ARRAYS},
                    vector_sums=self.vector_sums,
                    payload_sums=self.payload_sums,
                )

        def write_graph(path: Path) -> None:
            if len(self.label_doc):
                self.graph.save(str(path))
            else:  # voyager cannot load the file of an index without elements
                path.write_bytes(b"")

        names = _generation_files(generation)
        write(names["docs"], write_docs)
        write(names["ids"], lambda p: p.write_bytes(json.dumps(self.doc_ids, ensure_ascii=False).encode()))
        write(names["hnsw"], write_graph)
        return files

    def _commit(self) -> None:
        if self._pending and self._batch_depth:
            return  # an override inside batch(): committed once, when the block ends
        # An override comes after whatever the replaced index reached, so no file name is reused.
        generation = max(self._numbers_on_disk()[0], self.generation) + 1 if self._pending else self.generation + 1
        files = self._write_generation(generation)
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
            match = GENERATION_FILE.match(child.name)
            stale = match and (match.group(4) or int(match.group(2)) != self.generation)
            store = STORE_FILE.match(child.name)
            if stale or (store and int(store.group(2)) != self.epoch):
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()
