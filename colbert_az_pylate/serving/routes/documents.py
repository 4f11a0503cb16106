"""The writes: ``POST /documents`` (add or upsert), ``DELETE /documents``, ``POST /compact``; each needs the key."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name local classes
from typing import TYPE_CHECKING

from colbert_az_pylate.serving.limits import (
    ClientError,
    check_count,
    check_metadata,
    check_texts,
    check_unicode,
    client_gone,
)
from colbert_az_pylate.serving.state import ServerState

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["build_documents_router"]


def build_documents_router(state: ServerState) -> "APIRouter":
    """The write routes: documents checked here, encoded in chunks behind queries, written one write at a time."""
    from fastapi import APIRouter, Request  # the [serve] extra: imported when an app is built

    router = APIRouter()
    service, limits, bodies = state.service, state.limits, state.bodies

    @router.post("/documents", summary="add (or upsert) documents; needs the key")
    async def add_documents(body: bodies.add, request: Request) -> dict:
        state.authorise(request, write=True)
        if not body.documents:
            raise ClientError(400, "documents is empty; give at least one document")
        check_count(len(body.documents), limits.max_documents, "documents", "--max-documents")
        texts = [document.text for document in body.documents]
        check_texts(texts, "documents", limits.max_document_chars, "--max-document-chars")
        ids = [document.id for document in body.documents]
        metadata = [document.metadata for document in body.documents]
        check_unicode(ids, "ids")
        check_metadata(metadata, ids, limits)
        if await request.is_disconnected():
            raise client_gone()

        def add(writer) -> None:
            writer.add(texts, ids=ids, metadata=metadata, upsert=body.upsert)

        commit = await state.blocking(service.write, add, True)
        return {"added": len(texts), "commit": commit}

    @router.delete("/documents", summary="delete documents by id (every passage); needs the key")
    async def delete_documents(body: bodies.delete, request: Request) -> dict:
        state.authorise(request, write=True)
        if not body.ids:
            raise ClientError(400, "ids is empty; give at least one id")
        check_count(len(body.ids), limits.max_documents * 100, "ids", "--max-documents x 100")
        check_unicode(body.ids, "ids")
        ids = list(dict.fromkeys(body.ids))
        commit = await state.blocking(service.write, lambda writer: writer.delete(ids), False)
        return {"deleted": len(ids), "commit": commit}

    @router.post("/compact", summary="reclaim the space of deleted documents (Voyager); needs the key")
    async def compact(request: Request) -> dict:
        state.authorise(request, write=True)
        return {"compacted": True, "commit": await state.blocking(service.compact)}

    return router
