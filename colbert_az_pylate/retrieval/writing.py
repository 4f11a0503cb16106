"""Writing a :class:`~colbert_az_pylate.retrieval.searcher.Searcher`'s index: :class:`IndexWriting`, the methods
that add, upsert and delete documents (long ones split into passages, every write committed in chunks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    InvalidArgumentError,
    check_count,
)
from colbert_az_pylate.retrieval.backends import BACKENDS
from colbert_az_pylate.retrieval.corpus import check_documents, check_metadata
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.passages import (
    DEFAULT_OVERLAP,
    PASSAGE_SEPARATOR,
    PassageReport,
    index_entries,
    passage_id,
)

if TYPE_CHECKING:
    from colbert_az_pylate.retrieval.searcher import Searcher


def _no_vectors(chunk) -> None:
    """What a BM25 index is given for token vectors: nothing (its entries are never encoded)."""
    return None


class IndexWriting:
    """The writing half of :class:`~colbert_az_pylate.retrieval.searcher.Searcher` (a mixin: it uses the
    searcher's model, index store, BM25 companion and encoders)."""

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
            self.passage_tokenizer or self.model.tokenizer,
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
        >>> from colbert_az_pylate.retrieval import Searcher
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
