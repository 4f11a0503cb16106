"""Writing a Voyager index: the writer lock, batches of writes, adding, removing and compacting documents.

One writer per index folder at a time (:func:`~colbert_az_pylate.retrieval.folders.acquire_writer_lock`); every
write ends in one commit (:mod:`colbert_az_pylate.retrieval.voyager.manifest`), and a write that fails goes back
to the last commit. An index opened with ``override=True`` stages its writes until its first commit.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from colbert_az_pylate.errors import ColbertAzError, IndexLockedError, InvalidArgumentError, first_line
from colbert_az_pylate.retrieval.folders import VOYAGER_MANIFEST as MANIFEST
from colbert_az_pylate.retrieval.folders import acquire_writer_lock, release_writer_lock
from colbert_az_pylate.retrieval.voyager.store import encode_payloads

if TYPE_CHECKING:
    from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex


class Writer:
    """The writes of :class:`~colbert_az_pylate.retrieval.voyager_index.VoyagerIndex` (a mixin).

    Holds the writer lock in ``_lock`` (released by ``_release``), counts nested :meth:`batch` blocks in
    ``_batch_depth``; appends through the store (``_append_to_store``) and the graph (``_add_to_graph``), updates
    the document tables and commits (``_commit``).
    """

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
        >>> from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex
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

    def _add(
        self, documents_ids: list[str], matrices: list[np.ndarray], encoded_payloads: list[bytes], present: list[str]
    ) -> None:
        """Remove ``present``, append the documents to the store and the graph, extend the tables, commit."""
        if present:
            self._mark_removed(present)
        lengths = np.array([len(m) for m in matrices], np.int64)
        stacked = np.concatenate(matrices)
        stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        payload_lengths = np.array([len(p) for p in encoded_payloads], np.int64)
        self._append_to_store(stacked, encoded_payloads)
        self._add_to_graph(stacked)
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
                    self._add(ids, matrices, encode_payloads(payloads), [])
                else:
                    self._commit()
            except BaseException:
                self._forget_uncommitted()
                raise
        return self

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
