"""Retrievers and rerankers for LLM frameworks: LangChain (``[langchain]``) and LlamaIndex (``[llamaindex]``).

Each retriever searches in process (a :class:`~colbert_az_pylate.retrieval.Searcher`) or over HTTP
(``colbert-az serve``, through :class:`SearchClient`) and returns the framework's own types with score and
metadata; each reranker ranks a first stage's documents by MaxSim, with a local model or the server's
``/v1/rerank``. Neither framework, nor torch, is imported until a retriever or a reranker is used.

>>> import colbert_az_pylate.integrations as integrations
>>> sorted(integrations.__all__)  # doctest: +NORMALIZE_WHITESPACE
['LangChainReranker', 'LangChainRetriever', 'LlamaIndexReranker', 'LlamaIndexRetriever', 'SearchClient',
 'SearchServerError']
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.integrations.http import SearchClient, SearchServerError, check_search_arguments

if TYPE_CHECKING:
    from colbert_az_pylate.integrations.langchain import LangChainReranker, LangChainRetriever
    from colbert_az_pylate.integrations.llamaindex import LlamaIndexReranker, LlamaIndexRetriever

_LAZY = {
    "LangChainReranker": "colbert_az_pylate.integrations.langchain",
    "LangChainRetriever": "colbert_az_pylate.integrations.langchain",
    "LlamaIndexReranker": "colbert_az_pylate.integrations.llamaindex",
    "LlamaIndexRetriever": "colbert_az_pylate.integrations.llamaindex",
}

__all__ = [
    "LangChainReranker",
    "LangChainRetriever",
    "LlamaIndexReranker",
    "LlamaIndexRetriever",
    "SearchClient",
    "SearchServerError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'colbert_az_pylate.integrations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def search_target(searcher: Any, url: str | None, api_key: str | None, timeout: float) -> Any:
    """What a retriever searches: ``searcher`` (anything with ``search``, in process) or a :class:`SearchClient`
    of ``url``; exactly one of the two."""
    if (searcher is None) == (url is None):
        raise InvalidArgumentError(
            "give either searcher= (a Searcher, in process) or url= (a `colbert-az serve` server), not both or neither"
        )
    if url is not None:
        return SearchClient(url, api_key=api_key, timeout=timeout)
    if api_key is not None:
        raise InvalidArgumentError("api_key= is for a server (url=); an in-process searcher takes none")
    if not callable(getattr(searcher, "search", None)):
        raise InvalidArgumentError(
            f"searcher must be a colbert_az_pylate.retrieval.Searcher, got {type(searcher).__name__}"
        )
    return searcher


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _searcher_lock(searcher: Any) -> threading.Lock:
    """One lock per in-process searcher: threads (``ainvoke``, LangChain's ``batch``) search it one at a time."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(searcher)
        if lock is None:
            lock = _LOCKS[searcher] = threading.Lock()
        return lock


def search_hits(
    target: Any, query: str, k: int, exact: bool | None, group_by: str, subset: list[str] | None
) -> list[dict]:
    """One query's hits as ``Hit.to_dict()`` dicts, from a Searcher or a :class:`SearchClient`."""
    if isinstance(target, SearchClient):
        return target.search(query, k, exact=exact, group_by=group_by, subset=subset)
    (query,), k, subset = check_search_arguments(query, k, exact, group_by, subset)
    with _searcher_lock(target):
        hits = target.search(query, k, exact=exact, group_by=group_by, subset=subset)
    return [hit.to_dict() for hit in hits]


async def asearch_hits(
    target: Any, query: str, k: int, exact: bool | None, group_by: str, subset: list[str] | None
) -> list[dict]:
    """:func:`search_hits` without blocking the event loop: ``httpx.AsyncClient`` over HTTP, a thread in process."""
    if isinstance(target, SearchClient):
        return await target.asearch(query, k, exact=exact, group_by=group_by, subset=subset)
    return await asyncio.to_thread(search_hits, target, query, k, exact, group_by, subset)


def hit_id(hit: dict, group_by: str) -> str:
    """A unique id for a hit: the document's id, or ``"ID#N"`` for passage ``N`` when passages are returned."""
    if group_by == "passage" and hit.get("passage") is not None:
        return f"{hit['id']}#{hit['passage']}"
    return hit["id"]
