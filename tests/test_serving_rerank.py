"""colbert-az serve's rerank API (Cohere's v1/v2 and Jina's shape): scores equal to pylate's ``rank.rerank``,
limits, keys, and the official ``cohere`` SDK, unmodified, against a real uvicorn server."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from extras import require_extra

require_extra("fastapi", "serve")
require_extra("uvicorn", "serve")

import test_serving  # the fixtures and helpers of the main serving tests  # noqa: E402
from test_serving import AUTH, KEY, TEXTS, Server, _assert_one_line_error, _new_index, _texts_in_chunks  # noqa: E402

from colbert_az_pylate.retrieval.searcher import Searcher  # noqa: E402
from colbert_az_pylate.serving import ServeLimits, create_app  # noqa: E402

model_folder, model = test_serving.model_folder, test_serving.model  # module-scoped fixtures, shared by name

QUERY = "Şəki xan sarayı hansı əsrdə tikilib?"
DOCUMENTS = list(TEXTS.values())
PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")


@pytest.fixture(scope="module")
def index(model, tmp_path_factory):
    searcher = _new_index(model, tmp_path_factory.mktemp("rerank") / "index")
    searcher.index_store.close()
    return searcher.folder


@pytest.fixture(scope="module")
def keyless(index, model):
    """A read-only server without a key, with small rerank limits."""
    reader = Searcher.open(index, model=model, show_progress_bar=False)
    limits = ServeLimits(max_rerank_documents=8, max_document_chars=500, max_rerank_chars=1500, max_query_chars=200)
    server = Server(create_app(reader, limits=limits, batch_wait_ms=5))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed(index, model):
    """A read-only server whose reads need the key."""
    reader = Searcher.open(index, model=model, show_progress_bar=False)
    server = Server(create_app(reader, api_key=KEY, read_key_required=True))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def expected(model) -> list[tuple[int, float]]:
    """(index, score) best first, from pylate's own ``rank.rerank`` over the model's embeddings: the oracle."""
    from pylate import rank

    query = model.encode([QUERY], is_query=True, convert_to_numpy=True)
    documents = model.encode(DOCUMENTS, is_query=False, convert_to_numpy=True)
    ranked = rank.rerank([list(range(len(DOCUMENTS)))], query, [documents])[0]
    return [(int(entry["id"]), float(entry["score"])) for entry in ranked]


def _rerank(server, path: str = "/v1/rerank", headers=None, **fields) -> dict:
    response = server.client.post(path, json={"query": QUERY, "documents": DOCUMENTS, **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _pairs(results: list[dict]) -> list[tuple[int, float]]:
    return [(result["index"], result["relevance_score"]) for result in results]


def _assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [index for index, _ in got] == [index for index, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-5)


# ------------------------------------------------------------------------------------------------ answers
def test_rerank_scores_equal_pylates_rank_rerank_best_first_on_every_path(keyless, expected):
    assert expected[0][0] == DOCUMENTS.index(TEXTS["sheki"])  # the data makes the answer certain
    for path in PATHS:
        body = _rerank(keyless, path)
        _assert_same_ranking(_pairs(body["results"]), expected)
        scores = [result["relevance_score"] for result in body["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all("document" not in result for result in body["results"])
        assert isinstance(body["id"], str) and body["id"]
        assert body["meta"]["api_version"]["version"] == ("2" if path == "/v2/rerank" else "1")
        assert body["meta"]["tokens"]["input_tokens"] == body["usage"]["total_tokens"] > 0


def test_rerank_top_n_keeps_the_best_and_more_than_given_returns_all(keyless, expected):
    _assert_same_ranking(_pairs(_rerank(keyless, top_n=2)["results"]), expected[:2])
    _assert_same_ranking(_pairs(_rerank(keyless, top_n=50)["results"]), expected)  # as Cohere: every document


def test_rerank_returns_documents_when_asked_and_takes_text_objects_and_mixed_forms(keyless, expected):
    objects = [{"text": text} for text in DOCUMENTS]
    body = _rerank(keyless, documents=objects, return_documents=True)
    _assert_same_ranking(_pairs(body["results"]), expected)
    assert [result["document"] for result in body["results"]] == [objects[index] for index, _ in expected]
    mixed = [{"text": text, "title": "ignored"} if i % 2 else text for i, text in enumerate(DOCUMENTS)]
    _assert_same_ranking(_pairs(_rerank(keyless, "/v2/rerank", documents=mixed)["results"]), expected)


def test_rerank_accepts_the_fields_cohere_sdks_send_and_checks_the_model_name(keyless, model_folder, expected):
    extras = {
        "model": model_folder.name,
        "rank_fields": ["text"],
        "max_chunks_per_doc": 10,
        "max_tokens_per_doc": 4096,
        "relevant_spans": {"mode": "disabled"},
        "priority": 0,
    }
    _assert_same_ranking(_pairs(_rerank(keyless, **extras)["results"]), expected)
    request = {"query": QUERY, "documents": DOCUMENTS}
    wrong = keyless.client.post("/v2/rerank", json={**request, "model": "rerank-v3.5"})
    assert "not served here" in _assert_one_line_error(wrong, 400)
    fields = keyless.client.post("/v1/rerank", json={**request, "rank_fields": ["title", "text"]})
    assert "rank_fields" in _assert_one_line_error(fields, 422)
    spans = keyless.client.post("/v2/rerank", json={**request, "relevant_spans": {"mode": "enabled"}})
    assert "relevant_spans" in _assert_one_line_error(spans, 422)
    unknown = keyless.client.post("/rerank", json={**request, "documents_ids": [1]})
    assert "unknown field" in _assert_one_line_error(unknown, 422)


# ------------------------------------------------------------------------------------------------ refusals
def test_rerank_refuses_bad_documents_query_and_top_n_with_one_line(keyless):
    def post(**fields):
        return keyless.client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, **fields})

    assert "documents is empty" in _assert_one_line_error(post(documents=[]), 400)
    assert "documents[1] is a int" in _assert_one_line_error(post(documents=["Bakı", 3]), 422)
    assert "documents[0] is an object" in _assert_one_line_error(post(documents=[{"title": "Bakı"}]), 422)
    assert "documents[1] is empty" in _assert_one_line_error(post(documents=["Bakı", "  "]), 400)
    assert "query[0] is empty" in _assert_one_line_error(post(query=" "), 400)
    assert "required field missing" in _assert_one_line_error(keyless.client.post("/v1/rerank", json={}), 422)
    for top_n in (0, -1):
        assert "top_n must be" in _assert_one_line_error(post(top_n=top_n), 400)


def test_rerank_limits_documents_characters_and_query_length_naming_the_flag(keyless):
    def post(**fields):
        return keyless.client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, **fields})

    assert "--max-rerank-documents" in _assert_one_line_error(post(documents=["Bakı"] * 9), 413)
    assert "--max-document-chars" in _assert_one_line_error(post(documents=["ə" * 501]), 413)
    assert "--max-rerank-chars" in _assert_one_line_error(post(documents=["ə" * 400] * 4), 413)
    assert "--max-query-chars" in _assert_one_line_error(post(query="ə" * 201), 413)


def test_rerank_needs_the_key_where_reads_do(keyed, expected):
    for path in PATHS:
        missing = keyed.client.post(path, json={"query": QUERY, "documents": DOCUMENTS})
        assert "missing API key" in _assert_one_line_error(missing, 401)
        wrong = keyed.client.post(
            path, json={"query": QUERY, "documents": DOCUMENTS}, headers={"Authorization": "Bearer x"}
        )
        assert "wrong API key" in _assert_one_line_error(wrong, 401)
        _assert_same_ranking(_pairs(_rerank(keyed, path, headers=AUTH)["results"]), expected)


def test_rerank_is_described_in_openapi(keyless):
    paths = keyless.client.get("/openapi.json").json()["paths"]
    assert set(PATHS) <= set(paths)


def test_a_rerank_whose_client_goes_stops_encoding_at_the_next_chunk(keyed, monkeypatch):
    service, chunks, started = keyed.service, [], threading.Event()
    real = service.reader.model.encode

    def slow(texts, *args, **kwargs):
        if kwargs.get("is_query") is False:
            chunks.append(len(texts))
            started.set()
            time.sleep(0.2)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(service.reader.model, "encode", slow)
    texts = _texts_in_chunks(service, 8)
    body = json.dumps({"query": QUERY, "documents": texts}).encode()
    head = (
        f"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gone = socket.create_connection(("127.0.0.1", keyed.port), timeout=10)
    gone.sendall(head.encode() + body)
    assert started.wait(10)
    gone.close()
    seen = -1
    while len(chunks) != seen:  # until no chunk has started for 0.6 s (three chunks' time)
        seen = len(chunks)
        time.sleep(0.6)
    assert len(chunks) < 8
    monkeypatch.undo()
    answer = keyed.client.post("/v1/rerank", json={"query": QUERY, "documents": texts[:2]}, headers=AUTH)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 2


# ------------------------------------------------------------------------------------------------ official SDK
def test_the_official_cohere_clients_unmodified_parse_our_answers(keyless, keyed, model_folder, expected):
    cohere = require_extra("cohere", "test")
    for server, key in ((keyless, "any-key"), (keyed, KEY)):
        v1 = cohere.Client(api_key=key, base_url=server.url, timeout=60)
        answer = v1.rerank(query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True)
        _assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], expected[:3])
        assert [r.document.text for r in answer.results] == [DOCUMENTS[index] for index, _ in expected[:3]]
        assert answer.id and answer.meta.api_version.version == "1"
        objects = v1.rerank(query=QUERY, documents=[{"text": text} for text in DOCUMENTS], model=model_folder.name)
        _assert_same_ranking([(r.index, r.relevance_score) for r in objects.results], expected)
        v2 = cohere.ClientV2(api_key=key, base_url=server.url, timeout=60)
        answer = v2.rerank(model=model_folder.name, query=QUERY, documents=DOCUMENTS, max_tokens_per_doc=512)
        _assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], expected)
        assert answer.meta.api_version.version == "2"
    refused = cohere.ClientV2(api_key="wrong", base_url=keyed.url, timeout=60)
    with pytest.raises(cohere.errors.UnauthorizedError) as caught:
        refused.rerank(model=model_folder.name, query=QUERY, documents=DOCUMENTS)
    assert caught.value.body == {"error": "wrong API key"}


@pytest.mark.slow
def test_the_official_cohere_client_reranks_through_a_real_colbert_az_serve_process(index, model_folder, expected):
    """The whole path a user takes: `colbert-az serve INDEX` as its own process, Cohere's unmodified V2 client
    pointed at it with ``base_url``; the scores are pylate's ``rank.rerank``'s."""
    import os
    import subprocess
    import sys

    cohere = require_extra("cohere", "test")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "colbert_az_pylate", "serve", str(index), "--port", str(port), "--read-only"]
    command += ["--model", str(model_folder)]  # the index was built with a loaded model: it records no path
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = cohere.ClientV2(api_key="none", base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                answer = client.rerank(model=model_folder.name, query=QUERY, documents=DOCUMENTS)
                break
            except Exception:  # not listening yet (the model loads first)
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        _assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], expected)
        with pytest.raises(cohere.errors.BadRequestError) as refused:
            client.rerank(model=model_folder.name, query=QUERY, documents=[])
        assert refused.value.body == {"error": "documents is empty; give at least one document"}
    finally:
        process.terminate()
        process.wait(30)
