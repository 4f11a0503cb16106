"""``POST /v1/embeddings``: token vectors, as pylate's server returns them. Queries are micro-batched; documents
(with the key, where there is one) are bulk work, one request at a time behind queries and writes."""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations, which name local classes
import math
import threading
from typing import TYPE_CHECKING

from colbert_az_pylate.serving.answers import JSON_FLOAT_BYTES, embeddings_json
from colbert_az_pylate.serving.limits import ClientError, ServeLimits, check_count, check_texts
from colbert_az_pylate.serving.service import SearchService
from colbert_az_pylate.serving.state import ServerState

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["build_embeddings_router", "document_vectors", "embedding_texts"]


def embedding_texts(body, service: SearchService, limits: ServeLimits) -> list[str]:
    """The texts of an embeddings request, refused in one line when this server does not serve its model, would
    not encode them, or could not send their vectors within ``max_response_bytes``."""
    if body.model is not None and body.model not in service.model_names:
        raise ClientError(400, f"model {body.model!r} is not served here; this server serves {service.model_name}")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ClientError(400, "input is empty; give at least one text")
    check_count(len(texts), limits.max_queries, "inputs", "--max-queries")
    if body.is_query:
        check_texts(texts, "input", limits.max_query_chars, "--max-query-chars")
    else:
        check_texts(texts, "input", limits.max_document_chars, "--max-document-chars")
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
    return texts


async def document_vectors(state: ServerState, request, texts: list[str]) -> list:
    """The document vectors of ``texts``: one request at a time (a few more may wait, the rest are answered 503),
    encoded in chunks that stop at the next one when the client goes."""
    service = state.service
    if service.bulk_slot.locked() and service.bulk_waiting >= service.BULK_QUEUE:
        raise ClientError(
            503, "document embeddings are busy (one request at a time); retry shortly", {"Retry-After": "1"}
        )
    service.bulk_waiting += 1
    try:
        await state.until_disconnected(request, service.bulk_slot.acquire())
    finally:
        service.bulk_waiting -= 1
    try:
        stop = threading.Event()
        return await state.until_disconnected(request, state.blocking(service.encode_documents, texts, stop), stop)
    finally:
        service.bulk_slot.release()


def build_embeddings_router(state: ServerState) -> "APIRouter":
    """The ``/v1/embeddings`` route (pylate's server API)."""
    from fastapi import APIRouter, Request  # the [serve] extra: imported when an app is built
    from fastapi.responses import Response

    router = APIRouter()
    service, bodies = state.service, state.bodies

    @router.post("/v1/embeddings", summary="token vectors, as pylate's server returns them (documents: with the key)")
    async def embeddings(body: bodies.embedding, request: Request) -> dict:
        state.authorise(request, write=False)
        if not body.is_query and state.key is not None:
            state.authorise(request, write=True)  # bulk document encoding is for key holders where there is a key
        texts = embedding_texts(body, service, state.limits)
        if body.is_query:
            vectors = await state.encode_queries(request, texts)
        else:
            vectors = await document_vectors(state, request, texts)
        answer = await state.blocking(embeddings_json, vectors, body.model or service.model_name)
        return Response(answer, media_type="application/json")

    return router
