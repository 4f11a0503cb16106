"""The search service: a FastAPI app over a :class:`~colbert_az_pylate.retrieval.Searcher`.

Endpoints: ``POST /search``, ``POST /documents``, ``DELETE /documents``, ``POST /compact``, ``POST /v1/embeddings``
(pylate's server API), ``GET /health``; OpenAPI at ``/docs``. Every error is ``{"error": "one line"}`` with a 4xx
(the caller's fault) or a 5xx (ours, logged on the server); no traceback reaches a client.

Concurrency: the blocking work (encoding, index reads and commits) runs in worker threads. Query encodings of
concurrent requests are micro-batched (:class:`~colbert_az_pylate.serving.batching.MicroBatcher`); the model encodes
one batch at a time (queries, or the documents of a write). Searches of a Voyager index read a read-only view of
it that picks up each commit (this server's or another process's) before the next search, so a search never waits
for a write's commit; writes are serialised.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name local classes
import contextlib
import copy
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, IndexLockedError, InvalidArgumentError
from colbert_az_pylate.serving.batching import MicroBatcher

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
        exact: bool = Field(False, description="score every document by exact MaxSim (Voyager)")
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

    return SimpleNamespace(search=SearchRequest, add=AddRequest, delete=DeleteRequest, embedding=EmbeddingRequest)


# ------------------------------------------------------------------------------------------------ the service
class _Service:
    """The searcher(s), locks and batcher behind the endpoints (blocking methods run in worker threads)."""

    def __init__(self, searcher, *, writable: bool, limits: ServeLimits, batch_wait_ms: float, max_batch: int):
        self.limits = limits
        self.backend = searcher.backend
        self.folder = Path(searcher.folder)
        recorded = searcher.signature.name  # a local model is named by its folder's name: no server paths
        self.model_names = {recorded, Path(recorded).name}
        self.model_name = Path(recorded).name if Path(recorded).is_absolute() or Path(recorded).exists() else recorded
        self.model_lock = threading.Lock()  # one encoding at a time: the model and its tokenizer are shared
        self.write_lock = threading.Lock()
        self.index_lock = threading.Lock()  # index reads: its payload file handle is shared
        self.compacting = False
        self.local = threading.local()
        store = searcher.index_store
        self.writer = copy.copy(searcher) if writable else None
        self.reader = copy.copy(searcher)
        if self.backend == "voyager":
            from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex

            if writable:  # a read-only view: searches read committed state and never wait for a write
                self.reader.index_store = VoyagerIndex(
                    str(self.folder.parent),
                    self.folder.name,
                    embedding_size=searcher.embedding_size,
                    model=searcher.signature,
                    read_only=True,
                )
            self.manifest = self.folder / "manifest.json"
            self.seen = self._manifest_state()
        self.shared_store = writable and self.reader.index_store is store and self.backend != "voyager"
        self.reader.encode_queries = self._embeddings_of_this_request  # the batcher encoded them already
        if self.writer is not None:
            self.writer.show_progress_bar = False
        self.reader.show_progress_bar = False
        self.batcher = MicroBatcher(self._encode_queries, wait_ms=batch_wait_ms, max_batch=max_batch)

    # -- encoding
    def _encode_queries(self, texts: list[str]) -> list:
        with self.model_lock:
            return list(
                self.reader.model.encode(
                    texts,
                    is_query=True,
                    batch_size=max(len(texts), 1),
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            )

    def encode_documents(self, texts: list[str]) -> list:
        with self.model_lock:
            return list(
                self.reader.model.encode(
                    texts, is_query=False, batch_size=32, show_progress_bar=False, convert_to_numpy=True
                )
            )

    def _embeddings_of_this_request(self, queries) -> list:
        return self.local.embeddings

    # -- reading
    def _manifest_state(self) -> tuple | None:
        try:
            stat = os.stat(self.manifest)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _refresh(self) -> None:
        """Pick up a commit made since the last search (cheap: one stat when nothing changed)."""
        if self.backend != "voyager":
            return
        state = self._manifest_state()
        if state != self.seen:
            self.reader.index_store.refresh()
            self.seen = state

    def search(self, queries: list[str], embeddings: list, k: int, exact: bool, group_by: str, subset) -> list:
        with self.index_lock:
            self._refresh()
            self.local.embeddings = embeddings
            try:
                return self.reader.search(queries, k=k, exact=exact, group_by=group_by, subset=subset)
            finally:
                self.local.embeddings = None

    def health(self) -> dict:
        with self.index_lock:
            self._refresh()
            store = self.reader.index_store
            return {
                "status": "ok",
                "model": self.model_name,
                "backend": self.backend,
                "encoder": getattr(self.reader.model[0].auto_model, "description", "torch"),
                "documents": len(self.reader),
                "commit": getattr(store, "generation", None),
                "writable": self.writer is not None,
                "query_batches": {"forward_passes": self.batcher.calls, "queries": self.batcher.texts},
            }

    # -- writing
    def write(self, action: Callable[[Any], Any], encodes: bool) -> int | None:
        if self.writer is None:
            raise ClientError(403, "this server is read-only; writes need a single-worker server started with a key")
        if self.compacting:
            raise ClientError(409, "the index is being compacted; retry in a moment", {"Retry-After": "1"})
        with self.write_lock:
            if self.writer.backend == "voyager":
                self.writer.index_store.refresh()  # nothing else writes, but be exact about what we replace
            with (
                self.model_lock if encodes else contextlib.nullcontext(),
                self.index_lock if self.shared_store else contextlib.nullcontext(),
            ):
                action(self.writer)
            return getattr(self.writer.index_store, "generation", None)

    def compact(self) -> int | None:
        if self.writer is None:
            raise ClientError(403, "this server is read-only; writes need a single-worker server started with a key")
        if self.backend != "voyager":
            raise ClientError(400, f"compaction is for Voyager indexes; this one is {self.backend}")
        if not self.write_lock.acquire(blocking=False):
            raise ClientError(409, "a write is in progress; retry the compaction in a moment", {"Retry-After": "1"})
        try:
            self.compacting = True
            self.writer.index_store.compact()
            return self.writer.index_store.generation
        finally:
            self.compacting = False
            self.write_lock.release()

    def public_message(self, message: str) -> str:
        """A message without the server's paths: the index folder is named by its name only."""
        for path in {str(self.folder.resolve()), str(self.folder)}:
            message = message.replace(path, self.folder.name)
        return message


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
        return 422, f"unknown field {where!r}{more}; see /docs for the fields"
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
READ_ROUTES = frozenset(
    {("POST", "/search"), ("POST", "/v1/embeddings"), ("GET", "/health"), ("GET", "/docs"), ("GET", "/openapi.json")}
)


class _Guard:
    """Outermost middleware: body size limit (``Content-Length`` and streamed bytes), an access log line without
    any request or response content, and a JSON 500 for anything that escapes the app."""

    DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body up to this size is read and dropped, so the client hears 413

    def __init__(self, app, max_body_bytes: int, refusal=None) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
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
            refusal = self.refusal(scope.get("method"), scope.get("path"), dict(scope.get("headers") or []))
            body = b""
            if refusal is None:
                body, refusal = await self._read_body(scope, receive)
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
):
    """The FastAPI app that serves ``searcher``: search, add and delete documents, embeddings, health.

    Parameters
    ----------
    searcher
        A :class:`~colbert_az_pylate.retrieval.Searcher` over an existing index (any backend). Writes are possible
        when it holds the writer lock (``Searcher.open(..., read_only=False)``; a PLAID index is never written).
    api_key
        The key clients send as ``Authorization: Bearer KEY`` (compared in constant time). Writes always need it;
        without a key the server is read-only unless ``allow_unauthenticated_writes``.
    read_key_required
        Searches, embeddings and health need the key too (default: only writes).
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

    Returns
    -------
    fastapi.FastAPI
        The app; run it with uvicorn (``colbert-az serve`` does).

    Examples
    --------
    >>> import tempfile
    >>> from fastapi.testclient import TestClient
    >>> from colbert_az_pylate import convert
    >>> from colbert_az_pylate.fixtures import build_checkpoint
    >>> from colbert_az_pylate.retrieval import Searcher
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
    >>> texts, ids = ["Bakı paytaxtdır.", "Şəki xan sarayı"], ["baku", "sheki"]
    >>> _ = Searcher(f"{folder}/model", f"{folder}/index").index(texts, ids=ids)
    >>> searcher = Searcher.open(f"{folder}/index", read_only=False)
    >>> with TestClient(create_app(searcher, api_key="secret")) as client:
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
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or ServeLimits()
    if api_key is not None:
        api_key = check_api_key(api_key)
    if read_key_required and api_key is None:
        raise InvalidArgumentError("reads cannot require a key when no key is set; give api_key")
    key = api_key.strip().encode() if api_key else None
    store_writable = searcher.backend != "plaid" and not getattr(searcher.index_store, "read_only", False)
    writable = store_writable and not read_only and (key is not None or allow_unauthenticated_writes)
    service = _Service(searcher, writable=writable, limits=limits, batch_wait_ms=batch_wait_ms, max_batch=max_batch)
    models = _models()

    @asynccontextmanager
    async def lifespan(app):
        yield
        await service.batcher.close()

    app = FastAPI(
        title="colbert-az search",
        description="Search, add and delete documents in a colbert-az index; pylate-compatible embeddings.",
        lifespan=lifespan,
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
        """The key rule applied by the outer guard before the body is read (documentation pages included)."""
        write = (method, path) in WRITE_ROUTES
        if not write and (method, path) not in READ_ROUTES:
            return None  # unknown routes answer 404/405 as usual
        raw = headers.get(b"authorization")
        return key_refusal(write, raw.decode("latin-1") if raw is not None else None)

    async def blocking(function, *args):
        try:
            return await run_in_threadpool(function, *args)
        except ClientError:
            raise
        except IndexLockedError as exc:
            raise ClientError(409, service.public_message(str(exc))) from None
        except IndexFormatError as exc:
            log.error("index error: %s", exc)
            raise ClientError(500, service.public_message(str(exc))) from None
        except InvalidArgumentError as exc:
            raise ClientError(400, service.public_message(str(exc))) from None
        except ColbertAzError as exc:
            raise ClientError(409, service.public_message(str(exc))) from None

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
            message = f"no such endpoint: {_shown_path(request.scope)} (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {_shown_path(request.scope)} (see /docs)"
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
        embeddings = await service.batcher.encode(body.queries)
        ranked = await blocking(
            service.search, body.queries, embeddings, body.k, body.exact, body.group_by, body.subset
        )
        return {
            "results": [
                {"query": query, "hits": [hit.to_dict() for hit in hits]}
                for query, hits in zip(body.queries, ranked, strict=True)
            ]
        }

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
        _check_unicode(metadata, "metadata")
        _check_finite(metadata, "metadata")

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

    @app.post("/v1/embeddings", summary="token vectors, as pylate's server returns them")
    async def embeddings(body: models.embedding, request: Request) -> dict:
        authorise(request, write=False)
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
        if body.is_query:
            vectors = await service.batcher.encode(texts)
        else:
            vectors = await blocking(service.encode_documents, texts)
        data = [{"object": "embedding", "embedding": vector.tolist(), "index": i} for i, vector in enumerate(vectors)]
        tokens = sum(len(vector) for vector in vectors)
        return {
            "data": data,
            "model": body.model or service.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/health", summary="model, backend, index size, commit")
    async def health(request: Request) -> dict:
        authorise(request, write=False)
        return await blocking(service.health)

    app.add_middleware(_Guard, max_body_bytes=limits.max_body_bytes, refusal=early_refusal)
    return app
