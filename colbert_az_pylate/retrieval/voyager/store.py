"""The append-only store files of a Voyager index and their chunk checksums.

``vectors.<epoch>.f16`` holds every document token vector, document after document (float16);
``payloads.<epoch>.jsonl`` one JSON object per document. Both are only read up to the counts the manifest records,
and a writer appends after that committed part (dropping what a killed writer may have left past it). The SHA-256 of
every 64 KiB chunk of each file is kept in the generation's ``docs`` file; a chunk is checked the first time it is
read (a search reads only its candidates' chunks) or all at once by :meth:`StoreFiles.verify`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from colbert_az_pylate.errors import IndexFormatError, InvalidArgumentError, first_line
from colbert_az_pylate.files import read_at

STORE_DTYPE = np.float16
CHUNK_BYTES = 1 << 16  # store checksum granularity: a search hashes only the chunks its candidates live in
STORE_FILE = re.compile(r"^(vectors|payloads)\.(\d+)\.(f16|jsonl)$")
NO_SUMS = np.zeros((0, 32), np.uint8)


def encode_payloads(payloads: Sequence[dict]) -> list[bytes]:
    """The lines of the payload store for these payloads (one JSON object and a newline each).

    Raises
    ------
    InvalidArgumentError
        A payload cannot be stored as JSON.
    """
    try:
        return [(json.dumps(payload, ensure_ascii=False) + "\n").encode() for payload in payloads]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"a payload cannot be stored as JSON: {first_line(exc)}") from exc


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


class StoreFiles:
    """The store files of :class:`~colbert_az_pylate.retrieval.voyager_index.VoyagerIndex` (a mixin).

    Reads and sets the index's ``path``, ``epoch``, ``rows``, ``embedding_size``, ``payload_bytes``,
    ``vector_sums``/``payload_sums`` (the chunk checksums), ``_vector_ok``/``_payload_ok`` (the chunks checked in
    this snapshot), ``_vectors`` (the memory map) and ``_payload_handle``.
    """

    @property
    def vectors_file(self) -> Path:
        """The store of token vectors of the current epoch."""
        return self.path / f"vectors.{self.epoch}.f16"

    @property
    def payloads_file(self) -> Path:
        """The store of payloads of the current epoch."""
        return self.path / f"payloads.{self.epoch}.jsonl"

    @property
    def vectors(self) -> np.ndarray:
        """All committed token vectors (rows × dim, float16), memory-mapped; not checksummed (see :meth:`verify`)."""
        if self._vectors is None or self._vectors.shape[0] != self.rows:
            if self.rows == 0:
                return np.zeros((0, self.embedding_size), STORE_DTYPE)
            self._vectors = np.memmap(self.vectors_file, STORE_DTYPE, "r", shape=(self.rows, self.embedding_size))
        return self._vectors

    def _check_store_sizes(self) -> None:
        """Both store files hold at least the committed bytes (a missing one was compacted away by a writer:
        ``FileNotFoundError``, which makes the opening retry with the newer manifest)."""
        for path, needed in (
            (self.vectors_file, self.rows * self.embedding_size * 2),
            (self.payloads_file, self.payload_bytes),
        ):
            if needed and not path.exists():
                raise FileNotFoundError(2, "No such file", str(path))
            size = path.stat().st_size if path.exists() else 0
            if size < needed:
                raise IndexFormatError(f"{path} is truncated ({size} of {needed} bytes); rebuild the index")

    def _hold_store(self) -> None:
        """Hold the store files open: a writer (another process, or another object of this one) may compact or
        replace them away, and this snapshot must stay readable."""
        _ = self.vectors
        if self.payload_bytes:
            self._payload_handle = open(self.payloads_file, "rb")  # noqa: SIM115 - closed by _derive/close

    def _sums(self, sums: np.ndarray | None, size: int, path: Path) -> np.ndarray:
        if sums is None:  # written before store checksums existed: computed at the next commit
            return NO_SUMS
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

    def _append_to_store(self, stacked: np.ndarray, encoded_payloads: list[bytes]) -> None:
        """Append token vectors (normalised) and encoded payloads after the committed part of the store files and
        extend their chunk checksums; the counts and document tables are the caller's to update."""
        vector_bytes = self.rows * self.embedding_size * 2
        new_vectors = stacked.astype(STORE_DTYPE).tobytes()
        _append(self.vectors_file, vector_bytes, new_vectors)
        self.vector_sums = _extend_sums(
            self.vectors_file, vector_bytes, vector_bytes + len(new_vectors), self.vector_sums
        )
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
        >>> from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex
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
