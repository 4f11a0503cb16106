"""``POST /search``: ranked hits per query."""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations, which name local classes
from typing import TYPE_CHECKING

from colbert_az_pylate.serving.limits import ClientError, check_count, check_texts, check_unicode
from colbert_az_pylate.serving.state import ServerState

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["build_search_router"]


def build_search_router(state: ServerState) -> "APIRouter":
    """The ``/search`` route: queries micro-batched, searched in the bounded search pool."""
    from fastapi import APIRouter, Request  # the [serve] extra: imported when an app is built
    from fastapi.responses import Response

    router = APIRouter()
    service, limits, bodies = state.service, state.limits, state.bodies

    @router.post("/search", summary="ranked hits per query")
    async def search(body: bodies.search, request: Request) -> dict:
        state.authorise(request, write=False)
        if not body.queries:
            raise ClientError(400, "queries is empty; give at least one query text")
        check_count(len(body.queries), limits.max_queries, "queries", "--max-queries")
        check_texts(body.queries, "queries", limits.max_query_chars, "--max-query-chars")
        if body.k < 1:
            raise ClientError(400, f"k must be a whole number >= 1, got {body.k}")
        if body.k > limits.max_k:
            raise ClientError(400, f"k is {body.k}; this server returns at most {limits.max_k} hits (--max-k)")
        deepest = max(limits.max_k, 1000)
        if not 1 <= body.candidates <= deepest:
            raise ClientError(400, f"candidates must be from 1 to {deepest}, got {body.candidates}")
        if body.subset is not None:
            check_count(len(body.subset), limits.max_documents * 100, "subset ids", "--max-documents x 100")
            check_unicode(body.subset, "subset")
        service.searches += 1
        try:
            words_only = (body.mode or service.reader.mode) == "bm25"
            embeddings = None if words_only else await state.encode_queries(request, body.queries)
            search = (service.search, body.queries, embeddings, body.k, body.exact, body.group_by, body.subset)
            answer = await state.until_disconnected(request, state.in_search_pool(*search, body.mode, body.candidates))
        finally:
            service.searches -= 1
        return Response(answer, media_type="application/json")

    return router
