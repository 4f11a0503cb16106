"""What the framework rerankers share: where they score (a local model or ``colbert-az serve``), the scoring, and
their settings' errors as one line. Imports neither framework nor torch (a local model loads when a reranker is
made).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from colbert_az_pylate.errors import InvalidArgumentError, check_count
from colbert_az_pylate.integrations import _searcher_lock
from colbert_az_pylate.integrations.http import SearchClient
from colbert_az_pylate.retrieval.corpus import check_documents


class LocalModel:
    """A model loaded once (a folder or hub id) or given loaded, scored in process by
    :func:`~colbert_az_pylate.retrieval.searcher.rerank`, one call at a time."""

    def __init__(self, model: Any, batch_size: int | None) -> None:
        from colbert_az_pylate.loading import resolve_model

        self.batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
        self.model, self.name = resolve_model(model)  # loaded here, not on every call

    def __repr__(self) -> str:
        return f"LocalModel({self.name or type(self.model).__name__!r})"

    def rerank(self, query: str, documents: list[str], top_n: int | None) -> list[tuple[int, float]]:
        from colbert_az_pylate.retrieval.searcher import rerank

        with _searcher_lock(self.model):
            hits = rerank(self.model, query, documents, batch_size=self.batch_size)
        return [(int(hit.id), hit.score) for hit in hits[:top_n]]


def rerank_target(model: Any, url: str | None, api_key: str | None, timeout: float, batch_size: int | None) -> Any:
    """What a reranker scores with: a :class:`LocalModel` of ``model`` or a :class:`SearchClient` of ``url``;
    exactly one of the two."""
    if (model is None) == (url is None):
        raise InvalidArgumentError(
            "give either model= (a model folder or a loaded model, in process) or url= "
            "(a `colbert-az serve` server), not both or neither"
        )
    if url is not None:
        return SearchClient(url, api_key=api_key, timeout=timeout)
    if api_key is not None:
        raise InvalidArgumentError("api_key= is for a server (url=); an in-process model takes none")
    if not isinstance(model, (str, Path)) and not callable(getattr(model, "encode", None)):
        raise InvalidArgumentError(
            f"model must be a model folder, a hub id or a loaded pylate ColBERT, got {type(model).__name__}"
        )
    return LocalModel(model, batch_size)


def check_top_n(top_n: Any) -> int | None:
    """``top_n`` as an int >= 1, or ``None`` (every document)."""
    return None if top_n is None else check_count(top_n, "top_n")


def rerank_scores(target: Any, query: Any, texts: list, top_n: int | None) -> list[tuple[int, float]]:
    """``(position, MaxSim score)`` of the best ``top_n`` of ``texts`` for ``query``, best first; checked here,
    so that a local model and a server refuse the same input with the same line. No texts: no call, ``[]``."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgumentError("the query must be a non-empty text")
    if not texts:
        return []
    texts = check_documents(texts)
    return target.rerank(query, texts, top_n)


def settings_error(error: Any, owner: str) -> InvalidArgumentError:
    """pydantic's ``ValidationError`` on a reranker's settings as our one line (the first problem, without the
    values given: they may hold the API key)."""
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "settings"
    if first.get("type") == "extra_forbidden":
        return InvalidArgumentError(f"{owner} has no setting {where!r}; see help({owner}) for its settings")
    return InvalidArgumentError(f"{owner} setting {where}: {first.get('msg', 'invalid')}")
