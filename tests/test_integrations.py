"""LangChain and LlamaIndex retrievers (colbert_az_pylate.integrations), with the real langchain-core and
llama-index-core, in process and over HTTP against a stand-in of ``colbert-az serve``'s API (stdlib http.server on
a free loopback port, serving a real Searcher over a tiny model), plus the real server when it is there."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from extras import require_extra

require_extra("langchain_core", "langchain")
require_extra("llama_index.core", "llamaindex")
httpx = require_extra("httpx", "langchain")

from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode  # noqa: E402
from tiny_checkpoints import CORPUS, build_checkpoint  # noqa: E402

from colbert_az_pylate import convert  # noqa: E402
from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, first_line  # noqa: E402
from colbert_az_pylate.integrations import (  # noqa: E402
    LangChainRetriever,
    LlamaIndexRetriever,
    SearchClient,
    SearchServerError,
)
from colbert_az_pylate.retrieval import Searcher  # noqa: E402

KEY = "s3cret-key"
QUERY = "Şəki xan sarayı XVIII əsrdə tikilmişdir"
SLOW = "a query the stand-in answers late"
CRASH = "a query the stand-in answers with a bare 500"
IDS = [f"doc{i}" for i in range(len(CORPUS))]
LONG = " ".join(CORPUS * 4)  # longer than the model's document length: indexed as several passages


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrations")
    convert(build_checkpoint(root / "raw"), root / "model", verify=False)
    searcher = Searcher(root / "model", root / "index", show_progress_bar=False)
    metadata = [{"n": i, "score": "mine"} for i in range(len(CORPUS))] + [{"n": -1}]
    searcher.index([*CORPUS, LONG], ids=[*IDS, "long"], metadata=metadata)
    return root / "index"


@pytest.fixture(scope="module")
def searcher(index_folder):
    return Searcher.open(index_folder, show_progress_bar=False)


class StandIn(BaseHTTPRequestHandler):
    """``colbert-az serve``'s API (the routes, bodies and errors the real server has), over an in-process Searcher."""

    searcher: Searcher
    lock = threading.Lock()
    requests: ClassVar[list[dict]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict | str) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok", "documents": len(self.searcher)})
        else:
            self._send(404, {"error": f"no such endpoint: GET {self.path}"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        StandIn.requests.append({"headers": dict(self.headers), "body": body})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._send(401, {"error": "missing or wrong API key; send Authorization: Bearer KEY"})
        if self.path != "/search":
            return self._send(404, {"error": f"no such endpoint: POST {self.path}"})
        if SLOW in body["queries"]:
            time.sleep(1.5)
        if CRASH in body["queries"]:
            return self._send(500, "Internal Server Error")
        try:
            with self.lock:
                ranked = self.searcher.search(
                    body["queries"],
                    body["k"],
                    exact=body.get("exact"),
                    group_by=body["group_by"],
                    subset=body["subset"],
                )
        except ColbertAzError as exc:
            return self._send(422, {"error": first_line(exc)})
        pairs = zip(body["queries"], ranked, strict=True)
        self._send(200, {"results": [{"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in pairs]})


@pytest.fixture(scope="module")
def server(searcher):
    handler = type("Handler", (StandIn,), {"searcher": searcher})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def number(doc_id: str) -> int:
    """The ``n`` in a document's metadata: its position in CORPUS, -1 for the long document."""
    return -1 if doc_id == "long" else int(doc_id[3:])


def expected_hits(searcher, query=QUERY, k=5, **options) -> list[dict]:
    return [hit.to_dict() for hit in searcher.search(query, k, **options)]


def documents_as_hits(documents: list[Document]) -> list[dict]:
    return [
        {
            "id": d.metadata["id"],
            "score": d.metadata["score"],
            "text": d.page_content,
            "passage": d.metadata["passage"],
            "span": d.metadata["span"],
        }
        for d in documents
    ]


def nodes_as_hits(nodes: list[NodeWithScore]) -> list[dict]:
    return [
        {
            "id": n.node.metadata["id"],
            "score": n.score,
            "text": n.node.get_content(),
            "passage": n.node.metadata["passage"],
            "span": n.node.metadata["span"],
        }
        for n in nodes
    ]


def without_metadata(hits: list[dict]) -> list[dict]:
    return [{key: value for key, value in hit.items() if key != "metadata"} for hit in hits]


# --- import policy ---------------------------------------------------------------------------------------------


def test_importing_the_integrations_imports_neither_framework_nor_torch():
    code = (
        "import sys, colbert_az_pylate.integrations, colbert_az_pylate.integrations.http\n"
        "print(sorted(m for m in ('langchain_core', 'llama_index', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "name", "blocked", "extra"),
    [
        ("langchain", "LangChainRetriever", ["langchain_core"], "[langchain]"),
        ("llamaindex", "LlamaIndexRetriever", ["llama_index", "llama_index.core"], "[llamaindex]"),
    ],
)
def test_without_its_framework_a_module_imports_and_the_retriever_names_the_extra(module, name, blocked, extra):
    code = (
        "import sys\n"
        f"for blocked in {blocked!r}: sys.modules[blocked] = None\n"
        f"from colbert_az_pylate.integrations.{module} import {name}\n"
        f"try:\n    {name}(url='http://127.0.0.1:1')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"pip install 'colbert-az-pylate{extra}'" in out and len(out.strip().splitlines()) == 1


# --- LangChain -------------------------------------------------------------------------------------------------


def test_langchain_in_process_returns_documents_with_the_searchers_text_score_and_metadata(searcher):
    retriever = LangChainRetriever(searcher=searcher, k=5)
    documents = retriever.invoke(QUERY)
    hits = expected_hits(searcher)
    assert all(isinstance(d, Document) for d in documents)
    assert documents_as_hits(documents) == without_metadata(hits)
    assert [d.id for d in documents] == [h["id"] for h in hits]
    # the document's own metadata passes through; id and score are ours even where the metadata has a "score"
    for document in documents:
        assert document.metadata["n"] == number(document.metadata["id"])
        assert isinstance(document.metadata["score"], float)


def test_langchain_async_in_process_equals_sync(searcher):
    retriever = LangChainRetriever(searcher=searcher, k=4)
    assert asyncio.run(retriever.ainvoke(QUERY)) == retriever.invoke(QUERY)


def test_langchain_over_http_returns_the_same_documents_as_in_process_sync_and_async(searcher, server):
    local = LangChainRetriever(searcher=searcher, k=5, exact=True)
    remote = LangChainRetriever(url=server, api_key=KEY, k=5, exact=True)
    expected = local.invoke(QUERY)
    assert remote.invoke(QUERY) == expected
    assert asyncio.run(remote.ainvoke(QUERY)) == expected
    sent = StandIn.requests[-1]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"] == {"queries": [QUERY], "k": 5, "exact": True, "group_by": "document", "subset": None}


def test_concurrent_async_searches_each_get_their_own_answer(searcher, server):
    queries = [QUERY, "Nizami Gəncəvi şair", "Bakı paytaxt", "late interaction"]
    expected = [without_metadata(expected_hits(searcher, q, k=3)) for q in queries]

    async def gather(retriever, call):
        return await asyncio.gather(*(getattr(retriever, call)(q) for q in queries))

    for target in ({"searcher": searcher}, {"url": server, "api_key": KEY}):
        documents = asyncio.run(gather(LangChainRetriever(**target, k=3), "ainvoke"))
        nodes = asyncio.run(gather(LlamaIndexRetriever(**target, k=3), "aretrieve"))
        assert [documents_as_hits(d) for d in documents] == [nodes_as_hits(n) for n in nodes] == expected
    assert [documents_as_hits(d) for d in LangChainRetriever(searcher=searcher, k=3).batch(queries)] == expected


def test_langchain_per_call_settings_override_the_retrievers(searcher, server):
    for retriever in (LangChainRetriever(searcher=searcher), LangChainRetriever(url=server, api_key=KEY)):
        assert len(retriever.invoke(QUERY)) == 10
        assert [d.metadata["id"] for d in retriever.invoke(QUERY, k=2, subset=["doc1", "doc2", "doc3"])] == [
            h["id"] for h in expected_hits(searcher, k=2, subset=["doc1", "doc2", "doc3"])
        ]


def test_langchain_from_index_opens_the_folder_with_its_recorded_model(index_folder, searcher):
    retriever = LangChainRetriever.from_index(index_folder, k=3)
    assert documents_as_hits(retriever.invoke(QUERY)) == without_metadata(expected_hits(searcher, k=3))


def test_langchain_settings_are_our_one_line_errors_at_construction_and_per_call(searcher):
    cases = {
        "k": (0, r"^k must be a whole number >= 1, got 0 \(int\)$"),
        "exact": ("yes", r"^exact must be True, False or None"),
        "group_by": ("page", r"^group_by must be 'document' or 'passage', got 'page'$"),
        "subset": ("sheki", r"^subset must be a list of document ids, not one id"),
        "timeout": (0, r"^timeout must be a number of seconds > 0, got 0$"),
        "top_k": (3, r"^LangChainRetriever has no setting 'top_k'"),
        "url": (5, r"^LangChainRetriever setting url: "),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(InvalidArgumentError, match=message) as raised:
            LangChainRetriever(searcher=searcher, **{name: value})
        assert "\n" not in str(raised.value)
    for k in (True, 2.5):
        with pytest.raises(InvalidArgumentError, match=r"^k must be a whole number >= 1"):
            LangChainRetriever(searcher=searcher, k=k)
    assert LangChainRetriever(searcher=searcher, subset=("sheki",)).subset == ["sheki"]
    retriever = LangChainRetriever(searcher=searcher)
    with pytest.raises(InvalidArgumentError, match=r"^k must be a whole number >= 1, got 0 \(int\)$"):
        retriever.invoke(QUERY, k=0)
    with pytest.raises(InvalidArgumentError, match="group_by must be 'document' or 'passage'"):
        asyncio.run(retriever.ainvoke(QUERY, group_by="page"))


# --- LlamaIndex ------------------------------------------------------------------------------------------------


def test_llamaindex_in_process_returns_text_nodes_with_score_and_metadata(searcher):
    nodes = LlamaIndexRetriever(searcher, k=5).retrieve(QUERY)
    hits = expected_hits(searcher)
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes)
    assert nodes_as_hits(nodes) == without_metadata(hits)
    for hit, node in zip(hits, (n.node for n in nodes), strict=True):
        assert node.node_id == node.ref_doc_id == hit["id"] and node.metadata["n"] == number(hit["id"])
        llm_view = node.get_metadata_str(mode=MetadataMode.LLM)
        assert "span" not in llm_view and f"n: {number(hit['id'])}" in llm_view


def test_llamaindex_over_http_returns_the_same_nodes_as_in_process_sync_and_async(searcher, server):
    local = LlamaIndexRetriever(searcher, k=5)
    remote = LlamaIndexRetriever(url=server, api_key=KEY, k=5)
    expected = nodes_as_hits(local.retrieve(QUERY))
    assert nodes_as_hits(remote.retrieve(QUERY)) == expected
    assert nodes_as_hits(asyncio.run(remote.aretrieve(QUERY))) == expected
    assert nodes_as_hits(asyncio.run(local.aretrieve(QUERY))) == expected


def test_llamaindex_from_index_and_settings_are_checked_by_our_rule(index_folder, searcher):
    assert len(LlamaIndexRetriever.from_index(index_folder, k=2).retrieve(QUERY)) == 2
    with pytest.raises(InvalidArgumentError, match=r"^k must be a whole number >= 1, got 0 \(int\)$"):
        LlamaIndexRetriever(searcher, k=0)
    with pytest.raises(InvalidArgumentError, match="group_by must be"):
        LlamaIndexRetriever(searcher, group_by="page")
    with pytest.raises(InvalidArgumentError, match="subset must be a list of document ids"):
        LlamaIndexRetriever(searcher, subset="doc1")


# --- both ------------------------------------------------------------------------------------------------------


def test_passages_come_back_with_unique_ids_and_their_documents_id_and_span(searcher, server):
    hits = expected_hits(searcher, "Nizami Gəncəvi şair", k=20, group_by="passage")
    assert sum(h["id"] == "long" for h in hits) > 1  # the guard: several passages of one document
    for remote in (False, True):
        target = {"url": server, "api_key": KEY} if remote else {"searcher": searcher}
        documents = LangChainRetriever(**target, k=20, group_by="passage").invoke("Nizami Gəncəvi şair")
        nodes = LlamaIndexRetriever(**target, k=20, group_by="passage").retrieve("Nizami Gəncəvi şair")
        assert documents_as_hits(documents) == nodes_as_hits(nodes) == without_metadata(hits)
        assert len({d.id for d in documents}) == len({n.node.node_id for n in nodes}) == len(hits)
        for document in documents:
            start, end = document.metadata["span"]
            assert (LONG if document.metadata["id"] == "long" else CORPUS[document.metadata["n"]])[
                start:end
            ] == document.page_content


def test_exactly_one_of_searcher_and_url(searcher):
    for arguments in ({}, {"searcher": searcher, "url": "http://127.0.0.1:8000"}):
        with pytest.raises(InvalidArgumentError, match=r"either searcher= .* or url="):
            LangChainRetriever(**arguments)
        with pytest.raises(InvalidArgumentError, match=r"either searcher= .* or url="):
            LlamaIndexRetriever(**arguments)
    with pytest.raises(InvalidArgumentError, match="url must be the server's http"):
        LlamaIndexRetriever(url="127.0.0.1:8000")
    with pytest.raises(InvalidArgumentError, match=r"searcher must be a colbert_az_pylate\.retrieval\.Searcher"):
        LlamaIndexRetriever("an index folder")


def assert_one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    for part in parts:
        assert part in message, message


def each_retriever_call(url: str, api_key: str | None, timeout: float = 30.0):
    """Sync and async searches through the client and both retrievers (what a server error must cross)."""
    client = SearchClient(url, api_key=api_key, timeout=timeout)
    langchain = LangChainRetriever(url=url, api_key=api_key, timeout=timeout, k=3)
    llamaindex = LlamaIndexRetriever(url=url, api_key=api_key, timeout=timeout, k=3)
    return {
        "client": lambda q: client.search(q, 3),
        "client async": lambda q: asyncio.run(client.asearch(q, 3)),
        "langchain": langchain.invoke,
        "langchain async": lambda q: asyncio.run(langchain.ainvoke(q)),
        "llamaindex": llamaindex.retrieve,
        "llamaindex async": lambda q: asyncio.run(llamaindex.aretrieve(q)),
    }


@pytest.mark.parametrize(
    ("api_key", "query", "status", "reason"),
    [
        (None, QUERY, 401, "missing or wrong API key"),
        ("wrong", QUERY, 401, "missing or wrong API key"),
        (KEY, CRASH, 500, "Internal Server Error"),
    ],
    ids=["no key", "wrong key", "bare 500"],
)
def test_server_errors_become_one_line_search_server_errors_in_every_call(server, api_key, query, status, reason):
    for name, call in each_retriever_call(server, api_key).items():
        with pytest.raises(SearchServerError) as error:
            call(query)
        assert_one_line(error, f"the search server at {server} answered {status}: {reason}")
        assert error.value.status == status, name


def test_the_searchers_own_refusal_comes_back_as_the_servers_one_line_422(server, index_folder, monkeypatch):
    # a search of an empty index: the Searcher in the server refuses it (the client cannot know)
    empty = Searcher(index_folder.parent / "model", index_folder.parent / "empty", show_progress_bar=False)
    for handler in StandIn.__subclasses__():  # the server fixture's handler class
        monkeypatch.setattr(handler, "searcher", empty)
    langchain = LangChainRetriever(url=server, api_key=KEY, exact=True, subset=["doc1"])
    llamaindex = LlamaIndexRetriever(url=server, api_key=KEY, exact=True, subset=["doc1"])
    for call in (
        langchain.invoke,
        lambda q: asyncio.run(langchain.ainvoke(q)),
        llamaindex.retrieve,
        lambda q: asyncio.run(llamaindex.aretrieve(q)),
    ):
        with pytest.raises(SearchServerError) as error:
            call(QUERY)
        assert_one_line(error, "answered 422: the index at")
        assert error.value.status == 422


def test_a_refused_connection_and_a_timeout_are_one_line_errors(server):
    closed = f"http://127.0.0.1:{free_port()}"
    for name, call in each_retriever_call(closed, KEY).items():
        with pytest.raises(SearchServerError) as error:
            call(QUERY)
        assert_one_line(error, f"cannot reach the search server at {closed}", "colbert-az serve")
        assert error.value.status is None, name
    client = SearchClient(server, api_key=KEY, timeout=0.3)
    for call in (lambda: client.search(SLOW), lambda: asyncio.run(client.asearch(SLOW))):
        started = time.perf_counter()
        with pytest.raises(SearchServerError) as error:
            call()
        assert time.perf_counter() - started < 1.2
        assert_one_line(error, f"the search server at {server} did not answer within 0.3 s")
    assert client.health()["status"] == "ok"  # and the client still works


def test_bad_arguments_are_refused_before_any_request_is_sent():
    sent = []
    client = SearchClient("http://search.local", transport=httpx.MockTransport(lambda r: sent.append(r)))
    for bad, message in (
        ({"k": 0}, "k must be a whole number >= 1"),
        ({"k": "3"}, "k must be a whole number >= 1"),
        ({"group_by": "page"}, "group_by must be"),
        ({"exact": "yes"}, "exact must be True, False or None"),
        ({"subset": "doc1"}, "subset must be a list"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            client.search(QUERY, **bad)
    for queries in ("", " ", [], ["ok", ""], b"bytes"):
        with pytest.raises(InvalidArgumentError, match="queries must be"):
            client.search(queries)
    for url in ("127.0.0.1:8000", "ftp://host", "http://", None):
        with pytest.raises(InvalidArgumentError, match="url must be"):
            SearchClient(url)
    with pytest.raises(InvalidArgumentError, match="timeout must be"):
        SearchClient("http://search.local", timeout=0)
    for key in ("açar-ğüşıöçə", "two words", "tab\tkey"):  # an HTTP header cannot carry them: refused up front
        with pytest.raises(InvalidArgumentError, match="visible ASCII") as error:
            SearchClient("http://search.local", api_key=key)
        assert key not in str(error.value)
    assert sent == []


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (422, {"detail": [{"loc": ["body", "k"], "msg": "Input should be greater than 0"}]}, "k: Input should be"),
        (413, {"detail": "request body too large"}, "answered 413: request body too large"),
        (400, {"error": "queries must be non-empty texts\n  at queries[1]"}, "answered 400: queries must be non-empty"),
        (200, {"results": []}, "without one result per query"),
        (200, {"results": [{"hits": [{"id": 1}]}]}, "malformed hits"),
    ],
)
def test_error_and_malformed_answers_are_one_line(status, body, expected):
    answer = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    client = SearchClient("http://search.local", transport=answer)
    for call in (lambda: client.search(QUERY), lambda: asyncio.run(client.asearch(QUERY))):
        with pytest.raises(SearchServerError) as error:
            call()
        assert_one_line(error, expected)


def test_the_key_is_never_shown(searcher, server):
    for shown in (
        repr(SearchClient(server, api_key=KEY)),
        repr(LangChainRetriever(url=server, api_key=KEY)),
        repr(LlamaIndexRetriever(url=server, api_key=KEY)),
    ):
        assert KEY not in shown
    for retriever in (LangChainRetriever, LlamaIndexRetriever):  # nor in the error of a mistaken construction
        for wrong in ({"url": "ftp://search.local"}, {"url": server, "searcher": searcher}):
            with pytest.raises(InvalidArgumentError) as error:
                retriever(**wrong, api_key=KEY)
            assert KEY not in str(error.value)
            assert_one_line(error)


# --- the real server -------------------------------------------------------------------------------------------


def test_end_to_end_against_colbert_az_serve_under_uvicorn(index_folder, searcher):
    require_extra("fastapi", "serve")
    uvicorn = require_extra("uvicorn", "serve")
    from colbert_az_pylate import serving  # it exists: a broken import must fail here, not skip

    app = serving.create_app(Searcher.open(index_folder, show_progress_bar=False), api_key=KEY, read_key_required=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start within 20 s"
        url = f"http://127.0.0.1:{config.port}"
        expected = without_metadata(expected_hits(searcher, k=3))
        assert documents_as_hits(LangChainRetriever(url=url, api_key=KEY, k=3).invoke(QUERY)) == expected
        assert nodes_as_hits(asyncio.run(LlamaIndexRetriever(url=url, api_key=KEY, k=3).aretrieve(QUERY))) == expected
        assert SearchClient(url, api_key=KEY).health()
        for key in (None, "wrong"):
            with pytest.raises(SearchServerError) as error:
                LangChainRetriever(url=url, api_key=key).invoke(QUERY)
            assert_one_line(error, "answered 401")
        with pytest.raises(SearchServerError) as error:
            asyncio.run(SearchClient(url, api_key=KEY).asearch(QUERY, 100_000))  # beyond the server's --max-k
        assert_one_line(error, "answered 4")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
