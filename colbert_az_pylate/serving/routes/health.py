"""``GET /health``: model, backend, index size and commit, from cached counters (waits for nothing)."""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations
from typing import TYPE_CHECKING

from colbert_az_pylate.serving.state import ServerState

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["build_health_router"]


def build_health_router(state: ServerState) -> "APIRouter":
    """The ``/health`` route: the cached counters, refreshed in the background when stale."""
    from fastapi import APIRouter, Request  # the [serve] extra: imported when an app is built

    router = APIRouter()

    @router.get("/health", summary="model, backend, index size, commit (cached: waits for nothing)")
    async def health(request: Request) -> dict:
        state.authorise(request, write=False)
        state.service.refresh_soon()
        return state.service.health()

    return router
