"""A small client of the search server's HTTP API (``colbert-az serve``): what the retrievers call in HTTP mode.

Imports neither torch nor the model: a RAG application that only talks to a server stays light.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, check_count, first_line
from colbert_az_pylate.serving.app import check_api_key

GROUP_BY = ("document", "passage")


class SearchServerError(ColbertAzError):
    """The search server could not be reached, timed out, or answered with an error (its one-line ``error``).

    ``status`` is the HTTP status the server answered, or ``None`` when no answer came (refused, timed out).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def check_search_arguments(
    queries: str | Sequence[str], k: int, exact: bool | None, group_by: str, subset: Sequence[str] | None
) -> tuple[list[str], int, list[str] | None]:
    """The queries as a list, ``k`` and ``subset`` checked as :meth:`Searcher.search` checks them, before any
    request is sent; one-line :class:`InvalidArgumentError` otherwise."""
    single = isinstance(queries, str)
    if not single and (isinstance(queries, bytes) or not isinstance(queries, Iterable)):
        raise InvalidArgumentError(f"queries must be a text or a list of texts, got {type(queries).__name__}")
    batch = [queries] if single else list(queries)
    if not batch or any(not isinstance(q, str) or not q.strip() for q in batch):
        raise InvalidArgumentError("queries must be non-empty texts")
    k = check_count(k, "k")
    if exact is not None and not isinstance(exact, bool):
        raise InvalidArgumentError(f"exact must be True, False or None (the faster of the two), got {exact!r}")
    if group_by not in GROUP_BY:
        raise InvalidArgumentError(f"group_by must be 'document' or 'passage', got {group_by!r}")
    if subset is not None:
        if isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable):
            raise InvalidArgumentError("subset must be a list of document ids, not one id; wrap it in a list")
        subset = list(subset)
        if any(not isinstance(doc_id, str) for doc_id in subset):
            raise InvalidArgumentError("subset must be a list of document ids (texts)")
    return batch, k, subset


def check_timeout(timeout: Any) -> float:
    """``timeout`` as seconds > 0; one-line :class:`InvalidArgumentError` otherwise."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgumentError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _httpx():
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with every extra that uses this module
        raise ImportError(
            "the HTTP mode needs httpx: pip install 'colbert-az-pylate[langchain]' (or [llamaindex], [serve])"
        ) from None
    return httpx


class SearchClient:
    """A client of ``colbert-az serve``: ``POST /search``, ``POST /v1/rerank`` and ``GET /health``, with a timeout,
    the API key as ``Authorization: Bearer KEY``, and every failure as one :class:`SearchServerError` line.

    Parameters
    ----------
    url
        The server's base URL, e.g. ``"http://127.0.0.1:8000"`` (``http`` or ``https``).
    api_key
        The server's API key (``--api-key-file`` of ``colbert-az serve``); default: none sent.
    timeout
        Seconds to wait for connecting and for the answer (default 30).
    transport
        An httpx transport for both the sync and the async client (``httpx.MockTransport`` in tests); default:
        the network.

    Examples
    --------
    >>> import httpx
    >>> hit = {"id": "sheki", "score": 9.5, "text": "Şəki xan sarayı", "metadata": {}, "passage": 0, "span": [0, 15]}
    >>> def server(request):  # a stand-in for `colbert-az serve`
    ...     return httpx.Response(200, json={"results": [{"query": "Şəki", "hits": [hit]}]})
    >>> client = SearchClient("http://search.local", transport=httpx.MockTransport(server))
    >>> [hit["id"] for hit in client.search("Şəki", k=1)]
    ['sheki']
    >>> def locked(request):
    ...     return httpx.Response(401, json={"error": "missing or wrong API key"})
    >>> SearchClient("http://search.local", transport=httpx.MockTransport(locked)).search("Şəki")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.integrations.http.SearchServerError: the search server at http://search.local answered 401: missing or wrong API key
    """  # noqa: E501

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0, transport: Any = None) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise InvalidArgumentError(
                f"url must be the server's http(s) address, e.g. http://127.0.0.1:8000, got {url!r}"
            )
        if api_key is not None:
            api_key = check_api_key(api_key)  # the server's rule: else httpx fails on the header, not in one line
        check_timeout(timeout)
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._client = None

    def __repr__(self) -> str:  # never the key
        return f"SearchClient({self.url!r}, timeout={self.timeout})"

    def _sync_client(self):
        if self._client is None:
            httpx = _httpx()
            self._client = httpx.Client(timeout=self.timeout, headers=self._headers, transport=self._transport)
        return self._client

    def close(self) -> None:
        """Close the connections of the sync client (a new one opens on the next call)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @staticmethod
    def _body(queries, k, exact, group_by, subset) -> tuple[dict, bool]:
        batch, k, subset = check_search_arguments(queries, k, exact, group_by, subset)
        body = {"queries": batch, "k": k, "group_by": group_by, "subset": subset}
        if exact is not None:  # omitted: the server picks the faster of exact and graph search
            body["exact"] = exact
        return body, isinstance(queries, str)

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        exact: bool | None = None,
        group_by: str = "document",
        subset: Sequence[str] | None = None,
    ) -> list[dict] | list[list[dict]]:
        """Ranked hits from the server, as :meth:`Searcher.search` gives them in process.

        Parameters
        ----------
        queries
            One query text, or a list of them.
        k
            Hits per query, a whole number >= 1 (default 10).
        exact
            ``True``: brute-force MaxSim over every document; ``False``: the index's graph search; ``None``
            (default): the faster of the two (see :meth:`Searcher.search`).
        group_by
            ``"document"`` (default, one hit per document) or ``"passage"``.
        subset
            Only these document ids may be returned; default: all.

        Returns
        -------
        list[dict] | list[list[dict]]
            For one query its hits best first, for a list one list per query; each hit a dict as
            ``Hit.to_dict()`` writes it (``id``, ``score``, ``text``, ``metadata``, ``passage``, ``span``).
        """
        body, single = self._body(queries, k, exact, group_by, subset)
        answer = self._request("POST", "/search", body, self._sync_client())
        results = self._results(answer, len(body["queries"]))
        return results[0] if single else results

    async def asearch(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        exact: bool | None = None,
        group_by: str = "document",
        subset: Sequence[str] | None = None,
    ) -> list[dict] | list[list[dict]]:
        """:meth:`search` with an ``httpx.AsyncClient`` (one per call, so any event loop may await it)."""
        body, single = self._body(queries, k, exact, group_by, subset)
        httpx = _httpx()
        transport = self._transport
        async with httpx.AsyncClient(timeout=self.timeout, headers=self._headers, transport=transport) as client:
            answer = await self._arequest("POST", "/search", body, client)
        results = self._results(answer, len(body["queries"]))
        return results[0] if single else results

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """The server's ``POST /v1/rerank`` (Cohere's shape): ``documents`` ranked for ``query`` by MaxSim.

        Parameters
        ----------
        query
            The query text.
        documents
            The texts to rank (at least one; the server's limits apply).
        top_n
            Results to return, best first (default: every document).

        Returns
        -------
        list[tuple[int, float]]
            ``(position in documents, score)`` pairs, best first.
        """
        body = {"query": query, "documents": list(documents), "top_n": top_n, "return_documents": False}
        answer = self._request("POST", "/v1/rerank", body, self._sync_client())
        results = answer.get("results") if isinstance(answer, dict) else None
        count = len(body["documents"]) if top_n is None else min(top_n, len(body["documents"]))
        if (
            not isinstance(results, list)
            or len(results) != count
            or any(not _is_rerank_result(result, len(body["documents"])) for result in results)
        ):
            raise SearchServerError(
                f"the server at {self.url} answered /v1/rerank without one result per document; "
                "is it a colbert-az server?"
            )
        return [(result["index"], float(result["relevance_score"])) for result in results]

    def health(self) -> dict:
        """The server's ``GET /health`` answer (model, index size, backend …), as a dict."""
        answer = self._request("GET", "/health", None, self._sync_client())
        if not isinstance(answer, dict):
            raise SearchServerError(f"the server at {self.url} answered /health with something other than an object")
        return answer

    def _request(self, method: str, path: str, body: dict | None, client) -> Any:
        httpx = _httpx()
        try:
            response = client.request(method, self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        return self._answer(response)

    async def _arequest(self, method: str, path: str, body: dict | None, client) -> Any:
        httpx = _httpx()
        try:
            response = await client.request(method, self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        return self._answer(response)

    def _transport_error(self, exc: Exception) -> SearchServerError:
        httpx = _httpx()
        if isinstance(exc, httpx.TimeoutException):
            return SearchServerError(
                f"the search server at {self.url} did not answer within {self.timeout:g} s; "
                "raise timeout= or check the server"
            )
        if isinstance(exc, httpx.ConnectError):
            return SearchServerError(
                f"cannot reach the search server at {self.url} ({first_line(exc)}); "
                "is `colbert-az serve` running there?"
            )
        return SearchServerError(f"the request to the search server at {self.url} failed: {first_line(exc)}")

    def _answer(self, response) -> Any:
        try:
            answer = response.json()
        except (ValueError, UnicodeDecodeError):
            answer = None
        if response.status_code >= 400:
            raise SearchServerError(
                f"the search server at {self.url} answered {response.status_code}: {_error_line(answer, response)}",
                response.status_code,
            )
        if answer is None:
            raise SearchServerError(f"the server at {self.url} answered with something other than JSON")
        return answer

    def _results(self, answer: Any, count: int) -> list[list[dict]]:
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != count:
            raise SearchServerError(
                f"the server at {self.url} answered without one result per query; is it a colbert-az server?"
            )
        ranked = []
        for result in results:
            hits = result.get("hits") if isinstance(result, dict) else None
            if not isinstance(hits, list) or any(not _is_hit(hit) for hit in hits):
                raise SearchServerError(f"the server at {self.url} answered with malformed hits")
            ranked.append(hits)
        return ranked


def _is_hit(hit: Any) -> bool:
    return (
        isinstance(hit, dict)
        and isinstance(hit.get("id"), str)
        and isinstance(hit.get("score"), (int, float))
        and isinstance(hit.get("metadata", {}), (dict, type(None)))
    )


def _is_rerank_result(result: Any, count: int) -> bool:
    return (
        isinstance(result, dict)
        and type(result.get("index")) is int
        and 0 <= result["index"] < count
        and isinstance(result.get("relevance_score"), (int, float))
    )


def _error_line(answer: Any, response) -> str:
    """The server's one-line reason: its ``error``, else FastAPI's ``detail``, else the status phrase."""
    if isinstance(answer, dict):
        if isinstance(answer.get("error"), str) and answer["error"].strip():
            return first_line(Exception(answer["error"]))
        detail = answer.get("detail")
        if isinstance(detail, str) and detail.strip():
            return first_line(Exception(detail))
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            where = ".".join(str(part) for part in detail[0].get("loc", ()) if part != "body")
            return f"{where}: {detail[0].get('msg', 'invalid')}" if where else str(detail[0].get("msg", "invalid"))
        if answer:
            return first_line(Exception(json.dumps(answer, ensure_ascii=False)[:200]))
    return response.reason_phrase or "no reason given"
