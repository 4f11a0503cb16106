"""The search service: a FastAPI app over a :class:`~colbert_az_pylate.retrieval.Searcher`.

Endpoints: ``POST /search``, ``POST /documents``, ``DELETE /documents``, ``POST /compact``, ``POST /v1/embeddings``
(pylate's server API), ``POST /v1/rerank`` (Cohere's and Jina's rerank API; also ``/rerank`` and ``/v2/rerank``),
``GET /health``; the OpenAPI description at ``/openapi.json`` (no ``/docs`` or ``/redoc``:
their pages load scripts from a CDN). Every error is ``{"error": "one line"}`` with a 4xx (the caller's fault) or a
5xx (ours, logged on the server); no traceback reaches a client.

Concurrency: searches run at once in a bounded pool of threads, sharing the index under a readers-writer lock whose
exclusive side is taken only to refresh the searches' read-only view to a new commit (or, for a store the searches
share, to write it), briefly. Query encodings of concurrent requests are micro-batched
(:class:`~colbert_az_pylate.serving.batching.MicroBatcher`; a lone request does not wait for company) and served
ahead of document encodings, which hold the model about 16 queries' worth of tokens at a time. ``/health`` reads
cached counters and waits for nothing. A request whose client has gone is dropped before its encoding or its search
starts.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name local classes
import asyncio
import copy
import hmac
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    IndexLockedError,
    InvalidArgumentError,
    check_count,
)
from colbert_az_pylate.retrieval.backends import BACKENDS
from colbert_az_pylate.serving.batching import MicroBatcher
from colbert_az_pylate.serving.concurrency import BULK, QUERIES, WRITES, PriorityLock, ReadWriteLock
from colbert_az_pylate.threads import thread_policy

__all__ = ["ServeLimits", "create_app"]

log = logging.getLogger("colbert_az_pylate.serve")
access_log = logging.getLogger("colbert_az_pylate.serve.access")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server; anything beyond is refused with a 4xx and a one-line reason.

    Attributes
    ----------
    max_k
        Hits per query, at most (default 1000; ``--max-k``).
    max_queries
        Queries per ``/search`` request and texts per ``/v1/embeddings`` request (default 64; ``--max-queries``).
    max_documents
        Documents per ``POST /documents`` request, and ids per ``DELETE /documents`` or ``subset`` (x 100)
        (default 256; ``--max-documents``).
    max_query_chars
        Characters per query text (default 2,000; ``--max-query-chars``).
    max_document_chars
        Characters per document text (default 200,000: about 100 passages to encode; ``--max-document-chars``).
    max_body_bytes
        Bytes per request body, checked on ``Content-Length`` and on what actually arrives (default 4 MiB;
        ``--max-body-bytes``).
    max_embedding_chars
        Characters of all the inputs of one ``/v1/embeddings`` request together (default 128,000: 64 queries of
        2,000; ``--max-embedding-chars``): what one request may cost the tokenizer and the model.
    max_response_bytes
        Bytes of one answer (default 16 MiB; ``--max-response-bytes``): an embeddings request whose vectors could
        be larger is refused before it is encoded, a search whose hits are larger once serialised.
    max_metadata_bytes
        Bytes of one document's metadata, serialised as JSON (default 16 KiB; ``--max-metadata-bytes``).
    max_metadata_depth
        Nesting levels of one document's metadata (default 32; ``--max-metadata-depth``).
    max_rerank_documents
        Documents per rerank request (default 1,000, Cohere's advice; ``--max-rerank-documents``).
    max_rerank_chars
        Characters of the query and all the documents of one rerank request together (default 1,000,000;
        ``--max-rerank-chars``): what one request may cost the tokenizer.

    Examples
    --------
    >>> ServeLimits(max_k=100).max_k, ServeLimits().max_body_bytes
    (100, 4194304)
    """

    max_k: int = 1000
    max_queries: int = 64
    max_documents: int = 256
    max_query_chars: int = 2000
    max_document_chars: int = 200_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_embedding_chars: int = 128_000
    max_response_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 32
    max_rerank_documents: int = 1000
    max_rerank_chars: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {value!r}")


class ClientError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# ------------------------------------------------------------------------------------------------ request bodies
def _models():
    """The pydantic request models (built on first use: pydantic is imported only by the server)."""
    from pydantic import BaseModel, ConfigDict, Field

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    class SearchRequest(Body):
        queries: list[str] = Field(description="query texts")
        k: int = Field(10, description="hits per query")
        exact: bool | None = Field(
            None,
            description="true: exact MaxSim over every document; false: the graph search; null or absent: the "
            "faster of the two for this index (Voyager)",
        )
        group_by: Literal["document", "passage"] = Field("document", description="one hit per document or passage")
        subset: list[str] | None = Field(None, description="only these document ids may be returned")

    class Document(Body):
        id: str
        text: str
        metadata: dict[str, Any] = Field(default_factory=dict)

    class AddRequest(Body):
        documents: list[Document]
        upsert: bool = Field(False, description="replace documents whose id is already indexed")

    class DeleteRequest(Body):
        ids: list[str]

    class EmbeddingRequest(Body):
        input: list[str] | str = Field(description="text(s) to encode")
        is_query: bool = True
        model: str | None = Field(None, description="the served model's name (optional; checked when given)")

    class RerankRequest(Body):
        """Cohere's v1 and v2 rerank request and Jina's; the documents' forms are checked by the endpoint (one line
        per problem, not pydantic's list)."""

        query: str = Field(description="the query text")
        documents: list[Any] = Field(description='texts, or objects {"text": ...} (other fields are not ranked)')
        model: str | None = Field(None, description="the served model's name (optional; checked when given)")
        top_n: int | None = Field(None, description="results to return, best first (default: every document)")
        return_documents: bool = Field(False, description='each result carries its document as {"text": ...}')
        rank_fields: list[str] | None = Field(None, description='Cohere v1: only ["text"] is ranked')
        max_chunks_per_doc: int | None = Field(None, description="Cohere v1: ignored (one chunk per document)")
        max_tokens_per_doc: int | None = Field(
            None, description="Cohere v2: ignored (documents are cut at the model's document length)"
        )
        relevant_spans: dict[str, Any] | None = Field(None, description='Cohere v2: only {"mode": "disabled"}')
        priority: int | None = Field(None, description="Cohere v2: ignored (queries go first, then documents)")

    return SimpleNamespace(
        search=SearchRequest, add=AddRequest, delete=DeleteRequest, embedding=EmbeddingRequest, rerank=RerankRequest
    )


# ------------------------------------------------------------------------------------------------ the service
class _Service:
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
        self.reader.encode_queries = self._embeddings_of_this_request  # the batcher encoded them already
        model = self.reader.model
        self.query_length = int(getattr(model, "query_length", 32) or 32)
        self.document_length = int(getattr(model, "document_length", 256) or 256)
        # texts per model hold for documents: about 16 queries' worth of tokens (512 for colbert-az), so a query
        # that arrives meanwhile waits for one such chunk at most
        self.document_chunk = max(1, min(max_batch, 16) * self.query_length // self.document_length)
        if self.writer is not None:
            self.writer.show_progress_bar = False
            self.writer.encode_documents = self._encode_for_write  # in chunks, behind waiting queries
            if self.shared_store:  # the store's writes alone, not the encoding before them, exclude searches
                self.writer.index_store = _ExclusiveWrites(store, self.index_lock)
        self.reader.show_progress_bar = False
        self.unencoded = 0  # query requests not encoded yet: a lone one does not wait for company
        self.batcher = MicroBatcher(
            self._encode_queries, wait_ms=batch_wait_ms, max_batch=max_batch, company=lambda: self.unencoded > 1
        )
        self.encoder = getattr(model[0].auto_model, "description", "torch")
        self.refreshing = False
        self.counted_at = 0.0
        self.counters = self._count()

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
        vectors: list = []
        defer = (lambda: self.searches > 0) if level == BULK else None
        for start in range(0, len(texts), self.document_chunk):
            with self.model_lock.hold(level, defer=defer):
                if stop is not None and stop.is_set():
                    raise ClientError(499, "the client disconnected; its request was dropped")
                vectors.extend(encode(texts[start : start + self.document_chunk]))
        return vectors

    def encode_documents(self, texts: list[str], stop: threading.Event | None = None) -> list:
        """Document vectors for ``/v1/embeddings`` (``is_query: false``): bulk work, behind queries and writes."""

        def encode(chunk: list[str]) -> list:
            return list(
                self.reader.model.encode(
                    chunk, is_query=False, batch_size=len(chunk), show_progress_bar=False, convert_to_numpy=True
                )
            )

        return self._document_chunks(texts, BULK, encode, stop)

    def rerank_scores(self, query_vectors, texts: list[str], stop: threading.Event | None = None):
        """MaxSim of the encoded query against each of ``texts`` (``/v1/rerank``) and the documents' token count:
        the documents encoded in chunks behind queries (at the level of writes, ahead of bulk embeddings), scored
        as :func:`~colbert_az_pylate.retrieval.rerank` scores them."""

        from colbert_az_pylate.scores import rerank_scores

        def encode(chunk: list[str]) -> list:
            return list(
                self.reader.model.encode(
                    chunk, is_query=False, batch_size=len(chunk), show_progress_bar=False, convert_to_numpy=True
                )
            )

        vectors = self._document_chunks(texts, WRITES, encode, stop)
        _, scores = rerank_scores(query_vectors, vectors)
        return scores, sum(len(v) for v in vectors)

    def _encode_for_write(self, texts) -> list:
        from colbert_az_pylate.retrieval.searcher import encode_document_vectors

        writer = self.writer

        def encode(chunk: list[str]) -> list:
            return encode_document_vectors(writer.model, chunk, writer.batch_size, writer.pool_factor, False)

        return self._document_chunks(list(texts), WRITES, encode)

    def _embeddings_of_this_request(self, queries) -> list:
        return self.local.embeddings

    # -- reading
    def _commit_state(self):
        return self.reader.index_store.commit_state()

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

    def search(self, queries: list[str], embeddings: list, k: int, exact: bool | None, group_by: str, subset) -> bytes:
        """The answer of ``/search``, serialised (outside the lock)."""
        self.refresh()
        with self.index_lock.read():
            self.local.embeddings = embeddings
            try:
                ranked = self.reader.search(queries, k=k, exact=exact, group_by=group_by, subset=subset)
            finally:
                self.local.embeddings = None
        return _results_json(queries, ranked, self.limits.max_response_bytes)

    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.model_name,
            "backend": self.backend,
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


class _ExclusiveWrites:
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


# ------------------------------------------------------------------------------------------------ answers
def _to_json(value) -> bytes:
    from pydantic_core import to_json

    return to_json(value, inf_nan_mode="null")  # strict JSON: a NaN stored in process answers null


def _hit_json(hit) -> bytes:
    entry = hit.to_dict()
    try:
        return _to_json(entry)
    except Exception as exc:  # metadata stored in process (or by an older server) that JSON cannot carry
        log.warning("the metadata of document %r cannot be sent as JSON (%s); answered as null", hit.id, exc)
        entry["metadata"] = None
        return _to_json(entry)


def _results_json(queries: list[str], ranked: list, limit: int) -> bytes:
    """``{"results": [{"query", "hits"}]}`` as bytes, refused (413) as soon as it grows past ``limit`` bytes."""
    parts, size = [], 0
    for query, hits in zip(queries, ranked, strict=True):
        part = b'{"query":' + _to_json(query) + b',"hits":[' + b",".join(_hit_json(hit) for hit in hits) + b"]}"
        size += len(part) + 1
        if size > limit:
            raise ClientError(
                413,
                f"the answer is over this server's limit of {limit} bytes (--max-response-bytes); "
                "ask for fewer hits (k) or fewer queries",
            )
        parts.append(part)
    return b'{"results":[' + b",".join(parts) + b"]}"


def _embeddings_json(vectors: list, model: str) -> bytes:
    tokens = sum(len(vector) for vector in vectors)
    data = b",".join(
        b'{"object":"embedding","embedding":' + _to_json(vector.tolist()) + b',"index":' + str(i).encode() + b"}"
        for i, vector in enumerate(vectors)
    )
    usage = _to_json({"prompt_tokens": tokens, "total_tokens": tokens})
    return b'{"data":[' + data + b'],"model":' + _to_json(model) + b',"usage":' + usage + b"}"


JSON_FLOAT_BYTES = 24  # at most, for one float of a vector in JSON ("-1.2345678901234567e-05,")


# ------------------------------------------------------------------------------------------------ input checks
def _check_texts(texts: list[str], what: str, limit: int, limit_flag: str) -> None:
    for position, text in enumerate(texts):
        if not text.strip():
            raise ClientError(400, f"{what}[{position}] is empty or whitespace only; give it text")
        if len(text) > limit:
            raise ClientError(
                413, f"{what}[{position}] has {len(text)} characters; this server takes at most {limit} ({limit_flag})"
            )
        _check_unicode(text, f"{what}[{position}]")


def _check_unicode(value: Any, where: str) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError(400, f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not text") from None
    except (TypeError, ValueError, RecursionError):
        return  # the searcher's own checks name what cannot be stored


def _check_finite(value: Any, where: str) -> None:
    """Refuse NaN and ±Infinity (Python's JSON parser takes them): stored, they would come back as null (the
    answers are strict JSON), the document silently changed."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ClientError(400, f"{where} holds NaN or Infinity, which JSON cannot carry; send null or a text") from None
    except (TypeError, RecursionError):
        return  # the searcher's own checks name what cannot be stored


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` levels (itself counted; no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_metadata(metadata: list[dict], ids: list[str], limits: ServeLimits) -> None:
    """Metadata that can be stored and sent back: nested at most ``max_metadata_depth`` levels, strict JSON
    (finite numbers, no lone surrogate), at most ``max_metadata_bytes`` serialised. Every search that returns a
    document serialises its metadata: one that cannot be must never get in."""
    depth, size = limits.max_metadata_depth, limits.max_metadata_bytes
    for position, (entry, doc_id) in enumerate(zip(metadata, ids, strict=True)):
        where = f"documents[{position}].metadata"
        if _nested_deeper_than(entry, depth):
            raise ClientError(
                422, f"{where} (id {doc_id!r}) is nested more than {depth} levels deep (--max-metadata-depth)"
            )
        try:
            serialised = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise ClientError(
                400, f"{where} holds NaN or Infinity, which JSON cannot carry; send null or a text"
            ) from None
        except (TypeError, RecursionError) as exc:
            raise ClientError(422, f"{where} (id {doc_id!r}) cannot be stored as JSON: {exc}") from None
        try:
            length = len(serialised.encode("utf-8"))
        except UnicodeEncodeError:
            raise ClientError(400, f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not text") from None
        if length > size:
            raise ClientError(
                413,
                f"{where} (id {doc_id!r}) is {length} bytes as JSON; this server stores at most {size} "
                "(--max-metadata-bytes)",
            )


def _rerank_texts(documents: list) -> list[str]:
    """The texts of a rerank request's documents: each a text or an object with a ``"text"`` (Cohere's other
    fields are not ranked, as Cohere ranks ``text`` alone unless ``rank_fields`` says otherwise)."""
    texts = []
    for position, document in enumerate(documents):
        if isinstance(document, dict):
            document = document.get("text")
            if not isinstance(document, str):
                raise ClientError(
                    422, f'documents[{position}] is an object with no text in "text"; give {{"text": ...}}'
                )
        elif not isinstance(document, str):
            raise ClientError(
                422, f'documents[{position}] is a {type(document).__name__}; give a text or {{"text": ...}}'
            )
        texts.append(document)
    return texts


def _rerank_json(scores, texts: list[str], top_n: int, return_documents: bool, version: str, tokens: int) -> bytes:
    """Cohere's rerank answer (v1 and v2 alike; Jina's too): results best first, ties in the order given."""
    import numpy as np

    results = []
    for index in np.argsort(-scores, kind="stable")[:top_n]:
        result = {"index": int(index), "relevance_score": float(scores[index])}
        if return_documents:
            result["document"] = {"text": texts[index]}
        results.append(result)
    meta = {"api_version": {"version": version}, "tokens": {"input_tokens": tokens}}
    return _to_json({"id": str(uuid.uuid4()), "results": results, "meta": meta, "usage": {"total_tokens": tokens}})


def _check_count(value: int, limit: int, what: str, flag: str) -> None:
    if value > limit:
        raise ClientError(413, f"{value} {what} in one request; this server takes at most {limit} ({flag})")


def _flatten_validation(errors: list[dict]) -> tuple[int, str]:
    """pydantic's error list as one status and one line."""
    first = errors[0] if errors else {}
    kind, loc = first.get("type", ""), [str(part) for part in first.get("loc", ())]
    where = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "JSON decode error")
        return 400, f"the body is not valid JSON: {detail} (at character {loc[1] if len(loc) > 1 else '?'})"
    if kind == "missing" and where == "body":
        return 422, "a JSON body is required (Content-Type: application/json)"
    if isinstance(first.get("input"), bytes):
        return 422, "the body must be JSON with Content-Type: application/json"
    if kind == "extra_forbidden":
        return 422, f"unknown field {where!r}{more}; see /openapi.json for the fields"
    if kind == "missing":
        return 422, f"{where}: required field missing{more}"
    return 422, f"{where}: {first.get('msg', 'invalid value')}{more}"


API_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a Bearer token (RFC 6750) may hold


def check_api_key(key: str, source: str = "api_key") -> str:
    """``key`` stripped, or a one-line error when it cannot travel in an ``Authorization: Bearer`` header
    (visible ASCII without spaces, as RFC 6750 has it; the error never shows the key).

    Examples
    --------
    >>> check_api_key("  s3cret-key ")
    's3cret-key'
    >>> check_api_key("açar-ğüşıöçə")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: api_key must be visible ASCII without spaces ...
    """
    if not isinstance(key, str) or not key.strip():
        raise InvalidArgumentError(f"{source} must be a non-empty text (or None for no key)")
    if not API_KEY_PATTERN.fullmatch(key.strip()):
        raise InvalidArgumentError(
            f"{source} must be visible ASCII without spaces (HTTP headers carry nothing else); "
            'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return key.strip()


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _shown_path(scope) -> str:
    """The request's path as it was sent (still percent-encoded): a decoded ``%0A`` must not split, or forge, a log
    line or a one-line error."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("ascii", "backslashreplace")
    return str(scope.get("path", "")).encode("unicode_escape").decode("ascii")


# ------------------------------------------------------------------------------------------------ ASGI guard
WRITE_ROUTES = frozenset({("POST", "/documents"), ("DELETE", "/documents"), ("POST", "/compact")})
RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")  # Cohere v1 (and Jina), Infinity, Cohere v2
READ_ROUTES = frozenset(
    {("POST", "/search"), ("POST", "/v1/embeddings"), ("GET", "/health"), ("GET", "/openapi.json")}
    | {("POST", path) for path in RERANK_PATHS}
)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_of(header: str) -> str:
    """The host name of a ``Host`` header, lower case, without its port, brackets or final dot.

    Examples
    --------
    >>> host_of("LocalHost:8000"), host_of("[::1]:8000"), host_of("example.az."), host_of("::1")
    ('localhost', '::1', 'example.az', '::1')
    """
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class AllowedHosts:
    """The ``Host`` names a server answers (Starlette's ``TrustedHostMiddleware`` rule, IPv6 literals included):
    exact names, ``*.example.az`` for any subdomain, ``*`` for any host. A browser page on another site can reach
    a server on localhost through its own DNS name (DNS rebinding); the name it sends in ``Host`` gives it away.

    Examples
    --------
    >>> hosts = AllowedHosts(["localhost", "*.example.az"])
    >>> hosts.allows("localhost:8000"), hosts.allows("api.example.az"), hosts.allows("evil.example")
    (True, True, False)
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [host_of(pattern) if pattern != "*" else "*" for pattern in patterns]
        for pattern in self.patterns:
            name = pattern[2:] if pattern.startswith("*.") else pattern
            if pattern != "*" and (not name or "*" in name):
                raise InvalidArgumentError(f"allowed host {pattern!r} must be a name, *.domain or *")
        self.any = "*" in self.patterns

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        host = host_of(header or "")
        return bool(host) and any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])) for pattern in self.patterns
        )


class _Guard:
    """Outermost middleware: the allowed hosts, the key rule and the body size and time limits before any body is
    parsed, an access log line without any request or response content, and a JSON 500 for anything that escapes
    the app."""

    DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body up to this size is read and dropped, so the client hears 413

    def __init__(
        self, app, max_body_bytes: int, refusal=None, hosts: AllowedHosts | None = None, body_timeout: float = 30.0
    ) -> None:
        self.app, self.max_body_bytes, self.hosts, self.body_timeout = app, max_body_bytes, hosts, body_timeout
        self.refusal = refusal or (lambda method, path, headers: None)  # the key rule, before any body is read

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, sent = time.perf_counter(), [0], [0]

        async def send_logged(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            method = "GET" if scope.get("method") == "HEAD" else scope.get("method")  # HEAD is a GET: same rule
            body = b""
            if self.hosts is not None and not self.hosts.allows(host):
                shown = host[:100].encode("unicode_escape").decode("ascii")
                refusal = (400, f"host {shown!r} is not served here; the server names it with --allowed-host")
            else:
                refusal = self.refusal(method, scope.get("path"), headers)
            if refusal is None:
                try:
                    body, refusal = await asyncio.wait_for(self._read_body(scope, receive), self.body_timeout)
                except asyncio.TimeoutError:
                    message = f"the request body did not arrive within {self.body_timeout:g} s (--body-timeout)"
                    refusal = (408, message, {"Connection": "close"})
            if refusal is not None:
                await _send_json(send_logged, *refusal)
            else:
                replayed = [False]

                async def replay():
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_logged)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), _shown_path(scope))
            if status[0] == 0:
                await _send_json(send_logged, 500, "internal error (logged on the server)")
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %d %dB %.1fms',
                client[0],
                scope.get("method"),
                _shown_path(scope),
                status[0],
                sent[0],
                (time.perf_counter() - started) * 1000,
            )

    async def _read_body(self, scope, receive) -> tuple[bytes, tuple | None]:
        limit = self.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = (413, f"the request body is over this server's limit of {limit} bytes (--max-body-bytes)")
        if declared is not None:
            try:
                declared = int(declared)
            except ValueError:
                return b"", (400, "Content-Length is not a number")
            if declared > limit:
                if declared <= self.DRAIN_LIMIT:
                    await self._drain(receive)
                return b"", too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body"):
                    await self._drain(receive, size)
                return b"", too_big
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks), None

    async def _drain(self, receive, size: int = 0) -> None:
        while size <= self.DRAIN_LIMIT:
            message = await receive()
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return


async def _send_json(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------ the app
def create_app(
    searcher,
    *,
    api_key: str | None = None,
    read_key_required: bool = False,
    allow_unauthenticated_writes: bool = False,
    read_only: bool = False,
    limits: ServeLimits | None = None,
    batch_wait_ms: float = 2.0,
    max_batch: int = 64,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
    search_threads: int | None = None,
    body_timeout: float = 30.0,
):
    """The FastAPI app that serves ``searcher``: search, add and delete documents, embeddings, health.

    Parameters
    ----------
    searcher
        A :class:`~colbert_az_pylate.retrieval.Searcher` over an existing index (any backend). Writes are possible
        when it holds the writer lock (``Searcher.open(..., read_only=False)``; a PLAID index is never written).
    api_key
        The key clients send as ``Authorization: Bearer KEY`` (compared in constant time). Writes always need it,
        and so do document embeddings (``/v1/embeddings`` with ``is_query: false``) when it is set; without a key
        the server is read-only unless ``allow_unauthenticated_writes``.
    read_key_required
        Searches, embeddings, health and ``/openapi.json`` need the key too (default: only writes).
    allow_unauthenticated_writes
        Accept writes without a key (a server reachable only by trusted clients; default off).
    read_only
        Refuse every write (403), whatever the key.
    limits
        Per-request limits (:class:`ServeLimits`; default ``ServeLimits()``).
    batch_wait_ms
        How long a query waits for others to share its forward pass (default 2 ms; 0: no micro-batching).
    max_batch
        Texts per forward pass at most (default 64).
    allowed_hosts
        ``Host`` names answered (default ``localhost``, ``127.0.0.1``, ``::1``; ``*.domain`` for subdomains,
        ``"*"`` for any): others get a 400, which defeats DNS rebinding against a local server.
    search_threads
        Searches run at once, at most (default: the number of CPU cores, at least 2); more wait their turn.
    body_timeout
        Seconds a client has to send a request body once its headers arrived (default 30; 408 past it).

    Returns
    -------
    fastapi.FastAPI
        The app; run it with uvicorn (``colbert-az serve`` does, with the connection limits of
        :func:`colbert_az_pylate.serving.protocol.uvicorn_options`).

    Examples
    --------
    >>> import tempfile
    >>> from fastapi.testclient import TestClient
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> from colbert_az_pylate.retrieval import Searcher
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
    >>> texts, ids = ["Bakı paytaxtdır.", "Şəki xan sarayı"], ["baku", "sheki"]
    >>> _ = Searcher(f"{folder}/model", f"{folder}/index").index(texts, ids=ids)
    >>> searcher = Searcher.open(f"{folder}/index", read_only=False)
    >>> with TestClient(create_app(searcher, api_key="secret"), base_url="http://localhost") as client:
    ...     hits = client.post("/search", json={"queries": ["Şəki xan sarayı"], "k": 1}).json()["results"][0]["hits"]
    ...     added = client.post("/documents", json={"documents": [{"id": "quba", "text": "Quba alması"}]},
    ...                         headers={"Authorization": "Bearer secret"}).json()
    ...     refused = client.post("/search", json={"queries": ["Bakı"], "k": 0})
    >>> hits[0]["id"], added["added"], refused.status_code, refused.json()
    ('sheki', 1, 400, {'error': 'k must be a whole number >= 1, got 0'})
    >>> import shutil; searcher.index_store.close(); shutil.rmtree(folder)
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or ServeLimits()
    if api_key is not None:
        api_key = check_api_key(api_key)
    if read_key_required and api_key is None:
        raise InvalidArgumentError("reads cannot require a key when no key is set; give api_key")
    if isinstance(body_timeout, bool) or not isinstance(body_timeout, (int, float)) or not body_timeout > 0:
        raise InvalidArgumentError(f"body_timeout must be a number of seconds > 0, got {body_timeout!r}")
    if search_threads is not None:
        check_count(search_threads, "search_threads")
    hosts = AllowedHosts(allowed_hosts)
    key = api_key.strip().encode() if api_key else None
    store_writable = searcher.backend_type.updatable and not getattr(searcher.index_store, "read_only", False)
    writable = store_writable and not read_only and (key is not None or allow_unauthenticated_writes)
    service = _Service(
        searcher,
        writable=writable,
        limits=limits,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        search_threads=search_threads,
    )
    models = _models()

    @asynccontextmanager
    async def lifespan(app):
        yield
        await service.batcher.close()
        service.close()

    app = FastAPI(
        title="colbert-az search",
        description="Search, add and delete documents in a colbert-az index; pylate-compatible embeddings.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: blank offline; /openapi.json stays
        redoc_url=None,
    )
    app.state.service = service

    def key_refusal(write: bool, authorization: str | None) -> tuple[int, str, dict] | None:
        """The one key rule: writes need the key (or a server that takes unauthenticated writes), reads need it
        with ``read_key_required``; ``None`` when the request may go on."""
        if not write and not read_key_required:
            return None
        if write and key is None:
            if service.writer is None:
                return 403, "this server is read-only: start it with --api-key-file to accept writes", {}
            return None  # allow_unauthenticated_writes
        given = _bearer(authorization)
        if given is None:
            return 401, "missing API key: send Authorization: Bearer KEY", {"WWW-Authenticate": "Bearer"}
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key):
            return 401, "wrong API key", {"WWW-Authenticate": "Bearer"}
        return None

    def authorise(request: Request, write: bool) -> None:
        refusal = key_refusal(write, request.headers.get("authorization"))
        if refusal is not None:
            raise ClientError(refusal[0], refusal[1], refusal[2] or None)

    def early_refusal(method: str | None, path: str | None, headers: dict) -> tuple | None:
        """The key rule applied by the outer guard before the body is read (``/openapi.json`` included)."""
        write = (method, path) in WRITE_ROUTES
        if not write and (method, path) not in READ_ROUTES:
            return None  # unknown routes answer 404/405 as usual
        raw = headers.get(b"authorization")
        return key_refusal(write, raw.decode("latin-1") if raw is not None else None)

    def public_error(exc: Exception) -> Exception:
        if isinstance(exc, ClientError):
            return exc
        if isinstance(exc, IndexLockedError):
            return ClientError(409, service.public_message(str(exc)))
        if isinstance(exc, IndexFormatError):
            log.error("index error: %s", exc)
            return ClientError(500, service.public_message(str(exc)))
        if isinstance(exc, InvalidArgumentError):
            return ClientError(400, service.public_message(str(exc)))
        if isinstance(exc, ColbertAzError):
            return ClientError(409, service.public_message(str(exc)))
        return exc

    async def blocking(function, *args):
        """``function(*args)`` in a worker thread (Starlette's pool), its errors as one-line client errors."""
        try:
            return await run_in_threadpool(function, *args)
        except Exception as exc:
            raise public_error(exc) from None

    async def in_search_pool(function, *args):
        """``function(*args)`` in the bounded search pool; a cancelled call that has not started never runs."""
        try:
            return await asyncio.get_running_loop().run_in_executor(service.search_pool, function, *args)
        except Exception as exc:
            raise public_error(exc) from None

    async def until_disconnected(request: Request, work, stop: threading.Event | None = None):
        """``await work``, unless the client goes first: then the work is cancelled (queued texts never reach the
        model, a queued search never starts) or, given ``stop``, told to stop at its next chunk; 499."""
        gone = ClientError(499, "the client disconnected; its request was dropped")
        if await request.is_disconnected():
            if asyncio.iscoroutine(work):
                work.close()
            raise gone
        work = asyncio.ensure_future(work)
        listener = asyncio.ensure_future(_disconnection(request))
        try:
            await asyncio.wait({work, listener}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            listener.cancel()
        if work.done():
            return work.result()
        if stop is None:
            work.cancel()
        else:
            stop.set()
            await asyncio.wait({work})  # it ends at its next chunk
            if not work.cancelled():
                work.exception()  # retrieved: nobody is left to hear it
        raise gone

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        status, message = _flatten_validation(list(exc.errors()))
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the body could not be parsed as JSON (is it UTF-8?)"
        elif exc.status_code == 404:
            message = f"no such endpoint: {_shown_path(request.scope)} (see /openapi.json)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {_shown_path(request.scope)} (see /openapi.json)"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("internal error in %s %s", request.method, _shown_path(request.scope), exc_info=exc)
        return JSONResponse({"error": "internal error (logged on the server)"}, status_code=500)

    @app.post("/search", summary="ranked hits per query")
    async def search(body: models.search, request: Request) -> dict:
        authorise(request, write=False)
        if not body.queries:
            raise ClientError(400, "queries is empty; give at least one query text")
        _check_count(len(body.queries), limits.max_queries, "queries", "--max-queries")
        _check_texts(body.queries, "queries", limits.max_query_chars, "--max-query-chars")
        if body.k < 1:
            raise ClientError(400, f"k must be a whole number >= 1, got {body.k}")
        if body.k > limits.max_k:
            raise ClientError(400, f"k is {body.k}; this server returns at most {limits.max_k} hits (--max-k)")
        if body.subset is not None:
            _check_count(len(body.subset), limits.max_documents * 100, "subset ids", "--max-documents x 100")
            _check_unicode(body.subset, "subset")
        service.searches += 1
        service.unencoded += 1
        try:
            try:
                embeddings = await until_disconnected(request, service.batcher.encode(body.queries))
            finally:
                service.unencoded -= 1
            answer = await until_disconnected(
                request,
                in_search_pool(
                    service.search, body.queries, embeddings, body.k, body.exact, body.group_by, body.subset
                ),
            )
        finally:
            service.searches -= 1
        return Response(answer, media_type="application/json")

    @app.post("/documents", summary="add (or upsert) documents; needs the key")
    async def add_documents(body: models.add, request: Request) -> dict:
        authorise(request, write=True)
        if not body.documents:
            raise ClientError(400, "documents is empty; give at least one document")
        _check_count(len(body.documents), limits.max_documents, "documents", "--max-documents")
        texts = [document.text for document in body.documents]
        _check_texts(texts, "documents", limits.max_document_chars, "--max-document-chars")
        ids = [document.id for document in body.documents]
        metadata = [document.metadata for document in body.documents]
        _check_unicode(ids, "ids")
        _check_metadata(metadata, ids, limits)
        if await request.is_disconnected():
            raise ClientError(499, "the client disconnected; its request was dropped")

        def add(writer) -> None:
            writer.add(texts, ids=ids, metadata=metadata, upsert=body.upsert)

        commit = await blocking(service.write, add, True)
        return {"added": len(texts), "commit": commit}

    @app.delete("/documents", summary="delete documents by id (every passage); needs the key")
    async def delete_documents(body: models.delete, request: Request) -> dict:
        authorise(request, write=True)
        if not body.ids:
            raise ClientError(400, "ids is empty; give at least one id")
        _check_count(len(body.ids), limits.max_documents * 100, "ids", "--max-documents x 100")
        _check_unicode(body.ids, "ids")
        ids = list(dict.fromkeys(body.ids))
        commit = await blocking(service.write, lambda writer: writer.delete(ids), False)
        return {"deleted": len(ids), "commit": commit}

    @app.post("/compact", summary="reclaim the space of deleted documents (Voyager); needs the key")
    async def compact(request: Request) -> dict:
        authorise(request, write=True)
        return {"compacted": True, "commit": await blocking(service.compact)}

    @app.post("/v1/embeddings", summary="token vectors, as pylate's server returns them (documents: with the key)")
    async def embeddings(body: models.embedding, request: Request) -> dict:
        authorise(request, write=False)
        if not body.is_query and key is not None:
            authorise(request, write=True)  # bulk document encoding is for key holders where there is a key
        if body.model is not None and body.model not in service.model_names:
            raise ClientError(400, f"model {body.model!r} is not served here; this server serves {service.model_name}")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise ClientError(400, "input is empty; give at least one text")
        _check_count(len(texts), limits.max_queries, "inputs", "--max-queries")
        if body.is_query:
            _check_texts(texts, "input", limits.max_query_chars, "--max-query-chars")
        else:
            _check_texts(texts, "input", limits.max_document_chars, "--max-document-chars")
        characters = sum(len(text) for text in texts)
        if characters > limits.max_embedding_chars:
            raise ClientError(
                413,
                f"the inputs hold {characters} characters together; this server encodes at most "
                f"{limits.max_embedding_chars} per request (--max-embedding-chars)",
            )
        if body.is_query:
            tokens = len(texts) * service.query_length
        else:  # a token covers at least one byte of UTF-8; a document is cut at the model's document length
            tokens = sum(min(service.document_length, len(text.encode("utf-8", "surrogatepass")) + 4) for text in texts)
        size = tokens * service.reader.embedding_size * JSON_FLOAT_BYTES + 64 * len(texts) + 256
        if size > limits.max_response_bytes:
            raise ClientError(
                413,
                f"the vectors of these inputs may take up to {math.ceil(size / 2**20)} MiB as JSON ({tokens} tokens); "
                f"this server answers at most {limits.max_response_bytes} bytes (--max-response-bytes); "
                "send fewer or shorter texts",
            )
        if body.is_query:
            service.unencoded += 1
            try:
                vectors = await until_disconnected(request, service.batcher.encode(texts))
            finally:
                service.unencoded -= 1
        else:
            if service.bulk_slot.locked() and service.bulk_waiting >= service.BULK_QUEUE:
                raise ClientError(
                    503, "document embeddings are busy (one request at a time); retry shortly", {"Retry-After": "1"}
                )
            service.bulk_waiting += 1
            try:
                await until_disconnected(request, service.bulk_slot.acquire())
            finally:
                service.bulk_waiting -= 1
            try:
                stop = threading.Event()
                vectors = await until_disconnected(request, blocking(service.encode_documents, texts, stop), stop)
            finally:
                service.bulk_slot.release()
        answer = await blocking(_embeddings_json, vectors, body.model or service.model_name)
        return Response(answer, media_type="application/json")

    async def rerank(body: models.rerank, request: Request) -> dict:
        authorise(request, write=False)
        if body.model is not None and body.model not in service.model_names:
            raise ClientError(400, f"model {body.model!r} is not served here; this server serves {service.model_name}")
        if body.rank_fields is not None and body.rank_fields != ["text"]:
            raise ClientError(422, 'rank_fields: only "text" is ranked here; send ["text"] or leave it out')
        if body.relevant_spans is not None and body.relevant_spans.get("mode", "disabled") != "disabled":
            raise ClientError(422, "relevant_spans: not available from this server; leave it out")
        _check_texts([body.query], "query", limits.max_query_chars, "--max-query-chars")
        if not body.documents:
            raise ClientError(400, "documents is empty; give at least one document")
        _check_count(len(body.documents), limits.max_rerank_documents, "documents", "--max-rerank-documents")
        texts = _rerank_texts(body.documents)
        _check_texts(texts, "documents", limits.max_document_chars, "--max-document-chars")
        characters = len(body.query) + sum(len(text) for text in texts)
        if characters > limits.max_rerank_chars:
            raise ClientError(
                413,
                f"the query and documents hold {characters} characters together; this server reranks at most "
                f"{limits.max_rerank_chars} per request (--max-rerank-chars)",
            )
        if body.top_n is not None and body.top_n < 1:
            raise ClientError(400, f"top_n must be a whole number >= 1, got {body.top_n}")
        top_n = len(texts) if body.top_n is None else min(body.top_n, len(texts))  # more than given: all, as Cohere
        service.unencoded += 1
        try:
            query_vectors = (await until_disconnected(request, service.batcher.encode([body.query])))[0]
        finally:
            service.unencoded -= 1
        stop = threading.Event()
        scores, tokens = await until_disconnected(
            request, blocking(service.rerank_scores, query_vectors, texts, stop), stop
        )
        version = "2" if request.url.path == "/v2/rerank" else "1"
        answer = await blocking(
            _rerank_json, scores, texts, top_n, body.return_documents, version, tokens + len(query_vectors)
        )
        return Response(answer, media_type="application/json")

    for path in RERANK_PATHS:
        app.post(
            path,
            summary="rank documents for a query by MaxSim (Cohere's v1/v2 and Jina's rerank API)",
            operation_id=f"rerank{path.replace('/', '_')}",
        )(rerank)

    @app.get("/health", summary="model, backend, index size, commit (cached: waits for nothing)")
    async def health(request: Request) -> dict:
        authorise(request, write=False)
        service.refresh_soon()
        return service.health()

    app.add_middleware(
        _Guard, max_body_bytes=limits.max_body_bytes, refusal=early_refusal, hosts=hosts, body_timeout=body_timeout
    )
    return app


async def _disconnection(request) -> None:
    """Returns when the client has gone (the body was read already: the next message is the disconnection)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
