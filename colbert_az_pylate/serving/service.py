"""The service behind the endpoints (:class:`SearchService`): the searcher(s), locks, pools and batcher.

Searches run at once in a bounded pool of threads, sharing the index under a readers-writer lock whose exclusive
side is taken only to refresh the searches' read-only view to a new commit (or, for a store the searches share, to
write it), briefly. Query encodings are micro-batched and served ahead of document encodings, which hold the model
about 16 queries' worth of tokens at a time (short texts packed together, shortest first).
"""

import asyncio
import copy
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.retrieval.backends import BACKENDS
from colbert_az_pylate.serving.answers import results_json
from colbert_az_pylate.serving.batching import MicroBatcher
from colbert_az_pylate.serving.concurrency import (
    BULK,
    QUERIES,
    WRITES,
    LeftBeforeTurnError,
    PriorityLock,
    ReadWriteLock,
    TurnLock,
)
from colbert_az_pylate.serving.limits import ClientError, ServeLimits, client_gone
from colbert_az_pylate.threads import thread_policy

__all__ = ["ExclusiveWrites", "HeldTokenizer", "SearchService"]

log = logging.getLogger("colbert_az_pylate.serve")


class SearchService:
    """The searcher(s), locks, pools and batcher behind the endpoints (blocking methods run in worker threads)."""

    BULK_QUEUE = 4  # document-embedding requests that may wait for the one in progress; more are answered 503

    def __init__(
        self,
        searcher,
        *,
        writable: bool,
        limits: ServeLimits,
        batch_wait_ms: float,
        max_batch: int,
        search_threads: int | None = None,
    ):
        self.limits = limits
        self.backend = searcher.backend
        self.folder = Path(searcher.folder)
        recorded = searcher.signature.name  # a local model is named by its folder's name: no server paths
        self.model_names = {recorded, Path(recorded).name}
        self.model_name = Path(recorded).name if Path(recorded).is_absolute() or Path(recorded).exists() else recorded
        self.rerank_turns = TurnLock()  # reranks' document encodings, one request after another
        self.model_lock = PriorityLock()  # one encoding at a time (model and tokenizer are shared), queries first
        self.write_lock = threading.Lock()  # one write at a time
        self.index_lock = ReadWriteLock()  # searches share the index; a refresh (or a shared store's write) is alone
        self.refresh_lock = threading.Lock()
        self.compacting = False
        self.local = threading.local()
        self.searches = 0  # searches in flight (counted on the event loop): bulk document encodings step aside
        self.search_threads = search_threads or max(2, os.cpu_count() or 2)
        self.search_pool = ThreadPoolExecutor(self.search_threads, thread_name_prefix="colbert-az-search")
        self.bulk_slot = asyncio.Semaphore(1)  # document embeddings: one request at a time
        self.bulk_waiting = 0
        store = searcher.index_store
        self.writer = copy.copy(searcher) if writable else None
        self.read_only_reason = (
            f"this server is read-only: a {BACKENDS[self.backend].title} index is built once; rebuild it with "
            "`colbert-az index ... --override` to change it"
            if not searcher.backend_type.updatable
            else "this server is read-only; writes need a single-worker server started with a key"
        )
        self.reader = copy.copy(searcher)
        self.commits = bool(store is not None and store.commits)  # readers see a commit after a refresh
        if self.commits:
            if writable:  # a read-only view: searches read committed state and never wait for a write
                self.reader.index_store = type(store).open_for_searcher(
                    self.folder,
                    signature=searcher.signature,
                    embedding_size=searcher.embedding_size,
                    override=False,
                    read_only=True,
                    show_progress=False,
                    url=None,
                    api_key=None,
                    settings={},
                )
            self.seen = self._commit_state()
        self.shared_store = writable and self.reader.index_store is store and not self.commits
        self._open_reader_lexical(searcher, writable)
        self.reader.encode_queries = self._embeddings_of_this_request  # the batcher encoded them already
        self.reader.encode_candidates = self._encode_candidates  # bm25+rerank: in chunks, behind queries
        model = self.reader.model
        self.query_length = int(getattr(model, "query_length", 32) or 32)
        self.document_length = int(getattr(model, "document_length", 256) or 256)
        # tokens per model hold for documents: about 16 queries' worth (512 for colbert-az), so a query that
        # arrives meanwhile waits for one such chunk at most
        self.document_budget = min(max_batch, 16) * self.query_length
        self.characters_per_token = characters_per_token(model)
        if self.writer is not None:
            self.writer.show_progress_bar = False
            # long documents are split with the model's tokenizer, which the query batches use: one at a time
            self.writer.passage_tokenizer = HeldTokenizer(model.tokenizer, lambda: self.model_lock.hold(WRITES))
            self.writer.encode_documents = self._encode_for_write  # in chunks, behind waiting queries
            if self.shared_store:  # the store's writes alone, not the encoding before them, exclude searches
                self.writer.index_store = ExclusiveWrites(store, self.index_lock)
        self.reader.show_progress_bar = False
        self.unencoded = 0  # query requests not encoded yet: a lone one does not wait for company
        self.batcher = MicroBatcher(
            self._encode_queries, wait_ms=batch_wait_ms, max_batch=max_batch, company=lambda: self.unencoded > 1
        )
        self.encoder = getattr(model[0].auto_model, "description", "torch")
        self.refreshing = False
        self.counted_at = 0.0
        self.counters = self._count()

    def _open_reader_lexical(self, searcher, writable: bool) -> None:
        """The searches' own view of the BM25 index (a BM25-only index is its store; a companion beside the vectors
        is opened read-only when this server writes, so a search never reads an entry list being changed)."""
        if searcher.lexical is None:
            return
        if not BACKENDS[self.backend].stores_vectors:
            self.reader.lexical = self.reader.index_store
        elif writable:
            from colbert_az_pylate.retrieval.lexical import LexicalIndex  # numpy: not with the package

            self.reader.lexical = LexicalIndex(searcher.lexical.folder, read_only=True)

    def _separate_lexical(self):
        lexical = self.reader.lexical
        return lexical if lexical is not None and lexical is not self.reader.index_store else None

    def close(self) -> None:
        self.search_pool.shutdown(wait=False, cancel_futures=True)

    # -- encoding
    def _encode_queries(self, texts: list[str]) -> list:
        with self.model_lock.hold(QUERIES):
            return list(
                self.reader.model.encode(
                    texts,
                    is_query=True,
                    batch_size=max(len(texts), 1),
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            )

    def _document_chunks(
        self, texts: list[str], level: int, encode: Callable[[list[str]], list], stop: threading.Event | None = None
    ) -> list:
        """``encode`` over ``texts`` one chunk per model hold, so a waiting query batch never waits for more than
        one chunk; bulk work (``level`` BULK) also steps aside while searches are in flight (1 s at most), and
        ends before its next chunk once ``stop`` is set (its client has gone)."""
        vectors: list = [None] * len(texts)
        defer = (lambda: self.searches > 0) if level == BULK else None
        for chunk in self.document_chunks(texts):
            with self.model_lock.hold(level, defer=defer):
                if stop is not None and stop.is_set():
                    raise client_gone()
                for position, vector in zip(chunk, encode([texts[i] for i in chunk]), strict=True):
                    vectors[position] = vector
        return vectors

    def document_chunks(self, texts: list[str]) -> list[list[int]]:
        """Positions of ``texts`` grouped into one chunk per model hold: shortest first, each chunk's padded size
        (texts x its longest, in estimated tokens) within :attr:`document_budget`, a text over it alone.

        Tokens are estimated from characters (:func:`estimated_tokens`; no tokenizer call outside the model's
        hold: the tokenizer is not safe to share between threads)."""
        ratio, length = self.characters_per_token, self.document_length
        estimate = [estimated_tokens(text, length, ratio) for text in texts]
        chunks: list[list[int]] = []
        chunk: list[int] = []
        for position in sorted(range(len(texts)), key=estimate.__getitem__):
            if chunk and (len(chunk) + 1) * estimate[position] > self.document_budget:
                chunks.append(chunk)
                chunk = []
            chunk.append(position)
        return [*chunks, chunk] if chunk else chunks

    def _encode_document_chunk(self, chunk: list[str]) -> list:
        return list(
            self.reader.model.encode(
                chunk, is_query=False, batch_size=len(chunk), show_progress_bar=False, convert_to_numpy=True
            )
        )

    def encode_documents(self, texts: list[str], stop: threading.Event | None = None) -> list:
        """Document vectors for ``/v1/embeddings`` (``is_query: false``): bulk work, behind queries and writes."""
        return self._document_chunks(texts, BULK, self._encode_document_chunk, stop)

    def _encode_candidates(self, texts: list[str]) -> list:
        """BM25's candidates for a ``bm25+rerank`` search: at the level of writes, ahead of bulk embeddings, in
        turn with reranks."""
        with self.rerank_turns.hold():
            return self._document_chunks(list(texts), WRITES, self._encode_document_chunk)

    def rerank_scores(self, query_vectors, texts: list[str], stop: threading.Event | None = None):
        """MaxSim of the encoded query against each of ``texts`` (``/v1/rerank``) and the documents' token count:
        the documents encoded in chunks behind queries (at the level of writes, ahead of bulk embeddings; one
        rerank request after another, in arrival order), scored
        as :func:`~colbert_az_pylate.retrieval.rerank` scores them."""

        from colbert_az_pylate.scores import rerank_scores  # imports torch: not with the package

        try:
            with self.rerank_turns.hold(stop):  # first come, first served: under load each finishes in turn
                vectors = self._document_chunks(texts, WRITES, self._encode_document_chunk, stop)
        except LeftBeforeTurnError:
            raise client_gone() from None
        _, scores = rerank_scores(query_vectors, vectors)
        return scores, sum(len(v) for v in vectors)

    def _encode_for_write(self, texts) -> list:
        from colbert_az_pylate.retrieval.searcher import encode_document_vectors  # numpy, tqdm: not with the package

        writer = self.writer

        def encode(chunk: list[str]) -> list:
            return encode_document_vectors(writer.model, chunk, writer.batch_size, writer.pool_factor, False)

        return self._document_chunks(list(texts), WRITES, encode)

    def _embeddings_of_this_request(self, queries) -> list:
        return self.local.embeddings

    # -- reading
    def _commit_state(self):
        lexical = self._separate_lexical()  # a BM25 companion commits on its own, after the vectors
        return self.reader.index_store.commit_state(), lexical.commit_state() if lexical is not None else None

    def stale(self) -> bool:
        """Whether a commit was made since the searches' view was refreshed (one ``stat``, no lock)."""
        return self.commits and self._commit_state() != self.seen

    def refresh(self) -> None:
        """Move the searches' view to the latest commit, alone (they wait, briefly); cheap when nothing changed."""
        if not self.stale():
            return
        with self.refresh_lock:  # one refresher; the others find it done
            state = self._commit_state()
            if state == self.seen:
                return
            with self.index_lock.write():
                self.reader.index_store.refresh()
                if self._separate_lexical() is not None:
                    self.reader.lexical.refresh()
                self.seen = state
            with self.index_lock.read():  # counting reads every id (passages): beside the searches, not alone
                self.counters = self._count()

    def refresh_soon(self) -> None:
        """Bring the counters of ``/health`` up to date in the background, without waiting: after another
        process's commit (Voyager), or once a second (other backends, which say nothing of their commits)."""
        if self.refreshing:
            return
        if not (self.stale() if self.commits else time.monotonic() - self.counted_at > 1.0):
            return
        self.refreshing = True

        def run() -> None:
            try:
                if self.commits:
                    self.refresh()
                else:
                    with self.index_lock.read():
                        self.counters = self._count()
            except Exception as exc:  # the next search says what is wrong; health keeps the last counters
                log.warning("could not refresh the index counters: %s", self.public_message(str(exc)))
            finally:
                self.refreshing = False

        try:
            self.search_pool.submit(run)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.refreshing = False

    def _count(self) -> dict:
        """What ``/health`` says of the index (computed when it changes, read by ``/health`` without a lock)."""
        self.counted_at = time.monotonic()
        return {
            "documents": len(self.reader),
            "commit": getattr(self.reader.index_store, "generation", None),
        }

    def search(self, queries: list[str], embeddings: list | None, k: int, exact: bool | None, group_by: str, subset,
               mode: str | None = None, candidates: int = 100) -> bytes:  # fmt: skip
        """The answer of ``/search``, serialised (outside the lock); ``embeddings`` None: mode bm25 (none needed)."""
        self.refresh()
        with self.index_lock.read():
            self.local.embeddings = embeddings
            try:
                ranked = self.reader.search(
                    queries, k=k, mode=mode, candidates=candidates, exact=exact, group_by=group_by, subset=subset
                )
            except InvalidArgumentError as exc:  # a mode this index cannot serve
                raise ClientError(400, self.public_message(str(exc))) from exc
            finally:
                self.local.embeddings = None
        return results_json(queries, ranked, self.limits.max_response_bytes)

    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.model_name,
            "backend": self.backend,
            "mode": self.reader.mode,
            "encoder": self.encoder,
            **self.counters,
            "writable": self.writer is not None,
            "query_batches": {"forward_passes": self.batcher.calls, "queries": self.batcher.texts},
            "searches_in_flight": self.searches,
            "threads": thread_policy(),
        }

    # -- writing
    def write(self, action: Callable[[Any], Any], encodes: bool = True) -> int | None:
        if self.writer is None:
            raise ClientError(403, self.read_only_reason)
        if self.compacting:
            raise ClientError(409, "the index is being compacted; retry in a moment", {"Retry-After": "1"})
        with self.write_lock:
            if self.commits:
                self.writer.index_store.refresh()  # nothing else writes, but be exact about what we replace
            try:
                action(self.writer)  # encodes in chunks behind queries; a shared store's commit excludes searches
            finally:
                if self.shared_store:
                    with self.index_lock.read():
                        self.counters = self._count()
            commit = getattr(self.writer.index_store, "generation", None)
        self.refresh()  # here, not in the next search: health and searches see the commit at once
        return commit

    def compact(self) -> int | None:
        if self.writer is None:
            raise ClientError(403, self.read_only_reason)
        if not callable(getattr(self.writer.index_store, "compact", None)):
            raise ClientError(400, f"compaction is for Voyager indexes; this one is {self.backend}")
        if not self.write_lock.acquire(blocking=False):
            raise ClientError(409, "a write is in progress; retry the compaction in a moment", {"Retry-After": "1"})
        try:
            self.compacting = True
            self.writer.index_store.compact()
            commit = self.writer.index_store.generation
        finally:
            self.compacting = False
            self.write_lock.release()
        self.refresh()
        return commit

    def public_message(self, message: str) -> str:
        """A message without the server's paths: the index folder is named by its name only."""
        for path in {str(self.folder.resolve()), str(self.folder)}:
            message = message.replace(path, self.folder.name)
        return message


class HeldTokenizer:
    """``tokenizer`` whose calls each take ``hold()`` first (a Hugging Face fast tokenizer used by two threads at
    once fails with "Already borrowed"): what a server's writes split long documents with."""

    def __init__(self, tokenizer, hold: Callable[[], Any]) -> None:
        self._tokenizer, self._hold = tokenizer, hold

    def __call__(self, *args, **kwargs):
        with self._hold():
            return self._tokenizer(*args, **kwargs)

    def num_special_tokens_to_add(self, *args, **kwargs) -> int:
        with self._hold():
            return self._tokenizer.num_special_tokens_to_add(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


class ExclusiveWrites:
    """A store whose writes hold the index lock alone (a store that the searches read too, such as Qdrant's)."""

    def __init__(self, store, lock: ReadWriteLock) -> None:
        self._store, self._lock = store, lock

    def add_documents(self, *args, **kwargs):
        with self._lock.write():
            return self._store.add_documents(*args, **kwargs)

    def remove_documents(self, *args, **kwargs):
        with self._lock.write():
            return self._store.remove_documents(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def __contains__(self, document_id) -> bool:
        return document_id in self._store

    def __len__(self) -> int:
        return len(self._store)


TOKENS_SAMPLE = (
    "Azərbaycan Respublikasının paytaxtı Bakı şəhəridir; Şəki xan sarayı XVIII əsrdə tikilib. "
    "İçərişəhər 2000-ci ildə UNESCO-nun siyahısına daxil edilib. The capital of Azerbaijan is Baku."
)


def characters_per_token(model) -> float:
    """Characters per token of ``model``'s tokenizer on :data:`TOKENS_SAMPLE` (mixed Azerbaijani, English and
    numbers), less a fifth so that chunks over- rather than under-estimate their tokens; 2.0 without a tokenizer.
    Called once, before serving (a tokenizer is not safe to share between threads)."""
    tokenizer = getattr(model, "tokenizer", None)
    if not callable(tokenizer):
        return 2.0
    tokens = len(tokenizer(TOKENS_SAMPLE, add_special_tokens=False)["input_ids"])
    return max(1.0, 0.8 * len(TOKENS_SAMPLE) / max(tokens, 1))


def estimated_tokens(text: str, document_length: int, characters_per_token: float) -> int:
    """The tokens ``text`` will take as a document: its characters / ``characters_per_token`` plus the three
    special tokens, at most ``document_length`` (documents are truncated there)."""
    return min(document_length, math.ceil(len(text) / characters_per_token) + 3)
