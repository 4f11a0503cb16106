"""LangChain and LlamaIndex rerankers (colbert_az_pylate.integrations), with the real langchain-core and
llama-index-core, scoring with a local tiny model and with a real ``colbert-az serve`` (uvicorn) over its
``POST /v1/rerank``; the oracle is :func:`colbert_az_pylate.retrieval.searcher.rerank` on the same inputs."""

from __future__ import annotations

import asyncio
import socket

import pytest
from extras import require_extra

require_extra("langchain_core", "langchain")
require_extra("llama_index.core", "llamaindex")
require_extra("fastapi", "serve")
require_extra("uvicorn", "serve")

import test_serving  # the real server in a thread and the tiny model's fixtures  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from test_serving import KEY, TEXTS, Server, _new_index  # noqa: E402

from colbert_az_pylate.errors import InvalidArgumentError  # noqa: E402
from colbert_az_pylate.integrations import (  # noqa: E402
    LangChainReranker,
    LlamaIndexReranker,
    SearchServerError,
)
from colbert_az_pylate.retrieval.searcher import Searcher, rerank  # noqa: E402

model_folder, model = test_serving.model_folder, test_serving.model  # module-scoped fixtures, shared by name

QUERY = "Şəki xan sarayı hansı əsrdə tikilib?"
IDS = list(TEXTS)
DOCUMENTS = list(TEXTS.values())
RERANKERS = (LangChainReranker, LlamaIndexReranker)


@pytest.fixture(scope="module")
def expected(model) -> list[tuple[int, float]]:
    """(position, score) best first from ``retrieval.searcher.rerank``: the oracle."""
    ranked = [(int(hit.id), hit.score) for hit in rerank(model, QUERY, DOCUMENTS)]
    assert ranked[0][0] == IDS.index("sheki")  # the data makes the answer certain
    return ranked


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    """A real ``colbert-az serve`` app under uvicorn whose reads need the key."""
    searcher = _new_index(model, tmp_path_factory.mktemp("rerank-integrations") / "index")
    searcher.index_store.close()
    reader = Searcher.open(searcher.folder, model=model, show_progress_bar=False)
    server = Server(test_serving.create_app(reader, api_key=KEY, read_key_required=True))
    yield server.url
    server.stop()


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def documents() -> list[Document]:
    return [Document(text, metadata={"name": name, "nested": [name]}, id=name) for name, text in TEXTS.items()]


def nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=name, text=text), score=0.5) for name, text in TEXTS.items()]


def langchain_pairs(ranked: list[Document]) -> list[tuple[int, float]]:
    return [(IDS.index(document.id), document.metadata["relevance_score"]) for document in ranked]


def llamaindex_pairs(ranked: list[NodeWithScore]) -> list[tuple[int, float]]:
    return [(IDS.index(node.node.node_id), node.score) for node in ranked]


def run(reranker, query: str = QUERY, given=None) -> list[tuple[int, float]]:
    """The reranker's ranking of the test documents (or ``given``) as (position, score) pairs, sync and async
    checked equal."""
    if isinstance(reranker, LangChainReranker):
        given = documents() if given is None else given
        ranked = reranker.compress_documents(given, query)
        assert asyncio.run(reranker.acompress_documents(given, query)) == ranked
        return langchain_pairs(ranked)
    given = nodes() if given is None else given
    ranked = reranker.postprocess_nodes(given, query_str=query)
    assert asyncio.run(reranker.apostprocess_nodes(given, QueryBundle(query))) == ranked
    return llamaindex_pairs(ranked)


def assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [index for index, _ in got] == [index for index, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-5)


def settings(where: str, model, server) -> dict:
    return {"model": model} if where == "local" else {"url": server, "api_key": KEY}


# ------------------------------------------------------------------------------------------------ rankings
@pytest.mark.parametrize("reranker", RERANKERS)
def test_local_folder_loaded_model_and_server_rank_as_retrieval_rerank(reranker, model_folder, model, server, expected):
    for target in (
        {"model": model_folder},
        {"model": str(model_folder)},
        {"model": model},
        {"url": server, "api_key": KEY},
    ):
        assert_same_ranking(run(reranker(top_n=None, **target)), expected)


def test_langchain_documents_keep_their_content_id_and_metadata_plus_relevance_score(model, server, expected):
    for where in ("local", "served"):
        given = documents()
        ranked = LangChainReranker(top_n=None, **settings(where, model, server)).compress_documents(given, QUERY)
        for document, (index, score) in zip(ranked, expected, strict=True):
            assert document.page_content == DOCUMENTS[index] and document.id == IDS[index]
            metadata = dict(document.metadata)
            assert metadata.pop("relevance_score") == pytest.approx(score, abs=1e-5)
            assert metadata == {"name": IDS[index], "nested": [IDS[index]]}
        assert given == documents()  # the caller's documents are not changed
        ranked[0].metadata["nested"].append("changed")
        assert given == documents()


def test_llamaindex_nodes_are_the_same_nodes_with_the_maxsim_score(model, server, expected):
    for where in ("local", "served"):
        given = nodes()
        ranked = LlamaIndexReranker(top_n=None, **settings(where, model, server)).postprocess_nodes(
            given, QueryBundle(QUERY)
        )
        assert [node.node for node in ranked] == [given[index].node for index, _ in expected]
        assert all(node.score == 0.5 for node in given)  # the caller's scores are not changed


@pytest.mark.parametrize("reranker", RERANKERS)
def test_top_n_keeps_the_best_default_three_and_more_than_given_keeps_all(reranker, model, server, expected):
    for where in ("local", "served"):
        target = settings(where, model, server)
        assert_same_ranking(run(reranker(top_n=2, **target)), expected[:2])
        assert_same_ranking(run(reranker(**target)), expected[:3])
        assert_same_ranking(run(reranker(top_n=50, **target)), expected)


@pytest.mark.parametrize("reranker", RERANKERS)
def test_no_documents_give_an_empty_list_without_calling_the_model_or_the_server(reranker, model):
    for target in ({"model": model}, {"url": closed_url()}):  # nothing listens there: a call would fail
        assert run(reranker(**target), given=[]) == []


# ------------------------------------------------------------------------------------------------ errors
def assert_one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "validation error" not in message.lower()
    for part in parts:
        assert part in message
    assert KEY not in message


@pytest.mark.parametrize("reranker", RERANKERS)
def test_bad_settings_are_our_one_line_errors_not_pydantic_tracebacks(reranker, model, model_folder, server):
    name = reranker.__name__
    bad = [
        ({"model": model, "top_n": 0}, r"top_n must be a whole number >= 1, got 0 (int)"),
        ({"model": model, "top_n": True}, "top_n must be a whole number >= 1"),
        ({"model": model, "top_n": 2.5}, "top_n must be a whole number >= 1"),
        ({"model": model, "batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"model": model, "top_k": 3}, f"{name} has no setting 'top_k'"),
        ({"model": model, "url": server}, "give either model="),
        ({}, "give either model="),
        ({"model": model, "api_key": KEY}, "api_key= is for a server (url=)"),
        ({"model": 42}, "model must be a model folder, a hub id or a loaded pylate ColBERT, got int"),
        ({"url": "ftp://search.local"}, "url must be the server's http(s) address"),
        ({"url": server, "timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"url": server, "api_key": 5}, "api_key"),
    ]
    for given, message in bad:
        with pytest.raises(InvalidArgumentError) as error:
            reranker(**given)
        assert_one_line(error, message)


@pytest.mark.parametrize("reranker", RERANKERS)
def test_bad_queries_and_texts_are_refused_alike_in_process_and_served(reranker, model, server):
    for where in ("local", "served"):
        instance = reranker(**settings(where, model, server))
        blank = (
            [*documents()[:1], Document("  ")]
            if reranker is LangChainReranker
            else [*nodes()[:1], NodeWithScore(node=TextNode(text="  "))]
        )
        with pytest.raises(InvalidArgumentError) as error:
            run(instance, given=blank)
        assert_one_line(error, "document 1 is empty or whitespace only")
        with pytest.raises(InvalidArgumentError) as error:
            run(instance, query=" ")
        assert_one_line(error, "the query must be a non-empty text")
    with pytest.raises(InvalidArgumentError, match="needs the query"):
        LlamaIndexReranker(model=model).postprocess_nodes(nodes())


@pytest.mark.parametrize("reranker", RERANKERS)
def test_server_failures_are_one_line_search_server_errors_and_the_key_is_never_shown(reranker, server):
    for target, status in (({"url": server, "api_key": "wrong-key-0123456789"}, "401"), ({"url": server}, "401")):
        with pytest.raises(SearchServerError) as error:
            run(reranker(**target))
        assert_one_line(error, f"the search server at {server} answered {status}")
    with pytest.raises(SearchServerError) as error:
        run(reranker(url=closed_url()))
    assert_one_line(error, "cannot reach the search server", "colbert-az serve")
    assert KEY not in repr(reranker(url=server, api_key=KEY))
