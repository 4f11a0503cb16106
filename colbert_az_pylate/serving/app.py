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

Layout: this module builds the app; :mod:`~colbert_az_pylate.serving.state` holds what the routes share (the
:class:`~colbert_az_pylate.serving.service.SearchService`, the limits, the key rule); the routes are in
:mod:`colbert_az_pylate.serving.routes` (search, documents, embeddings, rerank, health); the request limits in
:mod:`~colbert_az_pylate.serving.limits`, keys and hosts in :mod:`~colbert_az_pylate.serving.access`, the outer
middleware in :mod:`~colbert_az_pylate.serving.guard`.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from colbert_az_pylate.serving.access import LOCAL_HOSTS, AllowedHosts, check_api_key
from colbert_az_pylate.serving.error_handlers import add_error_handlers
from colbert_az_pylate.serving.guard import RequestGuard
from colbert_az_pylate.serving.limits import ServeLimits
from colbert_az_pylate.serving.routes.documents import build_documents_router
from colbert_az_pylate.serving.routes.embeddings import build_embeddings_router
from colbert_az_pylate.serving.routes.health import build_health_router
from colbert_az_pylate.serving.routes.rerank import build_rerank_router
from colbert_az_pylate.serving.routes.search import build_search_router
from colbert_az_pylate.serving.state import ServerState, build_state

if TYPE_CHECKING:
    from fastapi import FastAPI

# AllowedHosts and check_api_key live in serving.access; they are named here too, where the CLI and the HTTP
# client import them
__all__ = ["AllowedHosts", "ServeLimits", "check_api_key", "create_app"]

# in the order the routes were always added (the order of /openapi.json's paths)
ROUTER_BUILDERS = (
    build_search_router,
    build_documents_router,
    build_embeddings_router,
    build_rerank_router,
    build_health_router,
)


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
    state = build_state(
        searcher,
        api_key=api_key,
        read_key_required=read_key_required,
        allow_unauthenticated_writes=allow_unauthenticated_writes,
        read_only=read_only,
        limits=limits,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        allowed_hosts=allowed_hosts,
        search_threads=search_threads,
        body_timeout=body_timeout,
    )
    return assemble_app(state)


def assemble_app(state: ServerState) -> "FastAPI":
    """The FastAPI app over ``state``: its routes, its one-line error answers and the outer guard."""
    from fastapi import FastAPI  # the [serve] extra: imported when an app is built, not with the package

    app = FastAPI(
        title="colbert-az search",
        description="Search, add and delete documents in a colbert-az index; pylate-compatible embeddings.",
        lifespan=state.lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: blank offline; /openapi.json stays
        redoc_url=None,
    )
    app.state.service, app.state.server = state.service, state
    add_error_handlers(app)
    for build_router in ROUTER_BUILDERS:
        app.include_router(build_router(state))
    app.add_middleware(
        RequestGuard,
        max_body_bytes=state.limits.max_body_bytes,
        refusal=state.early_refusal,
        hosts=state.hosts,
        body_timeout=state.body_timeout,
    )
    return app
