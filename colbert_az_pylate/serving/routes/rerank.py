"""``POST /v1/rerank`` (Cohere's v1 and Jina's rerank API), ``/rerank`` (Infinity's) and ``/v2/rerank``
(Cohere's v2): documents ranked for a query by MaxSim."""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations, which name local classes
import threading
from typing import TYPE_CHECKING

from colbert_az_pylate.serving.access import RERANK_PATHS
from colbert_az_pylate.serving.answers import rerank_json
from colbert_az_pylate.serving.limits import ClientError, ServeLimits, check_count, check_texts
from colbert_az_pylate.serving.service import SearchService
from colbert_az_pylate.serving.state import ServerState

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["build_rerank_router", "rerank_request", "rerank_texts"]


def rerank_texts(documents: list) -> list[str]:
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


def rerank_request(body, service: SearchService, limits: ServeLimits) -> tuple[list[str], int]:
    """The documents' texts of a rerank request and how many results to return, refused in one line when this
    server does not serve its model, takes options it does not follow, or would not encode its texts."""
    if body.model is not None and body.model not in service.model_names:
        raise ClientError(400, f"model {body.model!r} is not served here; this server serves {service.model_name}")
    if body.rank_fields is not None and body.rank_fields != ["text"]:
        raise ClientError(422, 'rank_fields: only "text" is ranked here; send ["text"] or leave it out')
    if body.relevant_spans is not None and body.relevant_spans.get("mode", "disabled") != "disabled":
        raise ClientError(422, "relevant_spans: not available from this server; leave it out")
    check_texts([body.query], "query", limits.max_query_chars, "--max-query-chars")
    if not body.documents:
        raise ClientError(400, "documents is empty; give at least one document")
    check_count(len(body.documents), limits.max_rerank_documents, "documents", "--max-rerank-documents")
    texts = rerank_texts(body.documents)
    check_texts(texts, "documents", limits.max_document_chars, "--max-document-chars")
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
    return texts, top_n


def build_rerank_router(state: ServerState) -> "APIRouter":
    """The rerank routes, one endpoint at each of :data:`~colbert_az_pylate.serving.access.RERANK_PATHS`."""
    from fastapi import APIRouter, Request  # the [serve] extra: imported when an app is built
    from fastapi.responses import Response

    router = APIRouter()
    service, bodies = state.service, state.bodies

    async def rerank(body: bodies.rerank, request: Request) -> dict:
        state.authorise(request, write=False)
        texts, top_n = rerank_request(body, service, state.limits)
        query_vectors = (await state.encode_queries(request, [body.query]))[0]
        stop = threading.Event()
        scores, tokens = await state.until_disconnected(
            request, state.blocking(service.rerank_scores, query_vectors, texts, stop), stop
        )
        version = "2" if request.url.path == "/v2/rerank" else "1"
        answer = await state.blocking(
            rerank_json, scores, texts, top_n, body.return_documents, version, tokens + len(query_vectors)
        )
        return Response(answer, media_type="application/json")

    for path in RERANK_PATHS:
        router.post(
            path,
            summary="rank documents for a query by MaxSim (Cohere's v1/v2 and Jina's rerank API)",
            operation_id=f"rerank{path.replace('/', '_')}",
        )(rerank)
    return router
