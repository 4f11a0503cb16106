"""colbert-az serve: a real uvicorn on a free loopback port, called with httpx, over a tiny converted model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from extras import require_extra

require_extra("fastapi", "serve")
uvicorn = require_extra("uvicorn", "serve")

from colbert_az_pylate.cli import main  # noqa: E402
from colbert_az_pylate.errors import InvalidArgumentError  # noqa: E402
from colbert_az_pylate.retrieval.searcher import Searcher  # noqa: E402
from colbert_az_pylate.serving import MicroBatcher, ServeLimits, batching, create_app  # noqa: E402
from colbert_az_pylate.serving.service import estimated_tokens  # noqa: E402

KEY = "test-key-ğüşıöçə"[:8] + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = {
    "baku": "Bakı Azərbaycanın paytaxtıdır və Xəzər dənizinin sahilində yerləşir.",
    "sheki": "Şəki xan sarayı XVIII əsrdə tikilib, şəbəkə pəncərələri ilə məşhurdur.",
    "nizami": "Nizami Gəncəvi Xəmsə adlı beş poemanın müəllifidir.",
    "quba": "Quba alması və xalçaları ilə tanınan şimal bölgəsidir.",
    "lankaran": "Lənkəran çay plantasiyaları və subtropik iqlimi ilə seçilir.",
}


class Server:
    """uvicorn serving ``app`` in a thread on a free 127.0.0.1 port (``options``: more of ``uvicorn.Config``);
    ``stop()`` ends it."""

    def __init__(self, app, **options) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60)

    @property
    def service(self):
        return self.app.state.service

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    from tiny_checkpoints import build_checkpoint

    from colbert_az_pylate import convert

    root = tmp_path_factory.mktemp("serve-model")
    return convert(build_checkpoint(root / "raw"), root / "model", verify=False) and root / "model"


@pytest.fixture(scope="module")
def model(model_folder):
    from colbert_az_pylate import load

    return load(model_folder)


def _new_index(model, folder: Path) -> Searcher:
    searcher = Searcher(model, folder, show_progress_bar=False)
    searcher.index(list(TEXTS.values()), ids=list(TEXTS), metadata=[{"name": name} for name in TEXTS])
    return searcher


@pytest.fixture(scope="module")
def served(model, tmp_path_factory):
    """The main server: a writable index, a key, small limits."""
    searcher = _new_index(model, tmp_path_factory.mktemp("served") / "index")
    limits = ServeLimits(max_k=50, max_queries=8, max_documents=20, max_query_chars=300, max_body_bytes=200_000)
    server = Server(create_app(searcher, api_key=KEY, limits=limits, batch_wait_ms=5))
    yield server
    server.stop()
    searcher.index_store.close()


def _search(server, query: str, **fields) -> list[dict]:
    response = server.client.post("/search", json={"queries": [query], **fields})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["hits"]


def _found(server, doc_id: str, text: str) -> bool:
    hits = _search(server, text, k=1, subset=[doc_id])
    return bool(hits) and hits[0]["id"] == doc_id


def _texts_in_chunks(service, chunks: int) -> list[str]:
    """Documents that fill ``chunks`` of ``service``'s model holds (as few and short as that allows)."""
    tokens = min(service.document_length, service.document_budget // 2 + 1)
    characters = int((tokens - 3) * service.characters_per_token)
    per_chunk = max(1, service.document_budget // tokens)
    texts = [(f"Sənəd {n}: Şahdağ, Qusar. " * characters)[:characters] for n in range(chunks * per_chunk)]
    assert len(service.document_chunks(texts)) == chunks
    return texts


def _assert_one_line_error(response, status: int | tuple) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"].strip()
    assert "\n" not in body["error"] and "Traceback" not in response.text and "/tmp" not in body["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------------ reading
def test_search_answers_ranked_hits_with_text_metadata_passage_and_span(served):
    response = served.client.post("/search", json={"queries": [TEXTS["sheki"], TEXTS["quba"]], "k": 3, "exact": True})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["query"] for result in results] == [TEXTS["sheki"], TEXTS["quba"]]
    best = results[0]["hits"][0]
    assert best == {
        "id": "sheki",
        "score": pytest.approx(best["score"]),
        "text": TEXTS["sheki"],
        "metadata": {"name": "sheki"},
        "passage": 0,
        "span": [0, len(TEXTS["sheki"])],
    }
    scores = [hit["score"] for hit in results[0]["hits"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert results[1]["hits"][0]["id"] == "quba"
    assert _search(served, TEXTS["nizami"], k=2, group_by="passage")[0]["id"] == "nizami"


def test_search_answers_the_same_hits_as_the_searcher_in_process(served, model):
    folder = served.service.folder
    local = Searcher.open(folder, model=model, show_progress_bar=False)
    for query in ("Bakı paytaxt", "Şəki sarayı", "poema"):
        expected = [hit.to_dict() for hit in local.search(query, k=4)]
        got = _search(served, query, k=4)
        assert [hit["id"] for hit in got] == [hit["id"] for hit in expected]
        assert [hit["score"] for hit in got] == pytest.approx([hit["score"] for hit in expected], rel=1e-5)
    for exact in (True, False):  # forced either way, as in process; absent (above): the faster of the two
        expected = [hit.id for hit in local.search("Bakı paytaxt", k=4, exact=exact)]
        assert [hit["id"] for hit in _search(served, "Bakı paytaxt", k=4, exact=exact)] == expected


def test_health_names_the_model_backend_size_and_commit_and_the_openapi_description_is_served(served, model_folder):
    health = served.client.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "voyager" and health["writable"] is True
    assert health["model"] == Path(model_folder).name and isinstance(health["commit"], int)
    assert health["documents"] >= len(TEXTS) and health["encoder"] == "torch"
    assert health["threads"]["openmp_wait_policy"] and health["threads"]["torch_threads"] >= 1
    for page in ("/docs", "/redoc"):  # their pages load scripts from a CDN (blank offline): not served
        assert "no such endpoint" in _assert_one_line_error(served.client.get(page), 404)
    paths = served.client.get("/openapi.json").json()["paths"]
    assert {"/search", "/documents", "/v1/embeddings", "/health", "/compact"} <= set(paths)


def test_embeddings_answer_like_pylates_server_with_the_models_vectors(served, model, model_folder):
    response = served.client.post("/v1/embeddings", json={"input": ["Bakı", "Şəki xan sarayı"], "is_query": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["index"] for item in body["data"]] == [0, 1] and body["data"][0]["object"] == "embedding"
    expected = model.encode(["Bakı", "Şəki xan sarayı"], is_query=True, convert_to_numpy=True)
    for item, vectors in zip(body["data"], expected, strict=True):
        np.testing.assert_allclose(np.array(item["embedding"]), vectors, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(len(v) for v in expected)
    request = {"input": "Quba alması", "is_query": False, "model": Path(model_folder).name}
    # document embeddings are bulk work: on a server with a key, for key holders only
    assert "missing API key" in _assert_one_line_error(served.client.post("/v1/embeddings", json=request), 401)
    document = served.client.post("/v1/embeddings", json=request, headers=AUTH).json()
    np.testing.assert_allclose(
        np.array(document["data"][0]["embedding"]),
        model.encode(["Quba alması"], is_query=False, convert_to_numpy=True)[0],
        atol=1e-5,
    )
    wrong = served.client.post("/v1/embeddings", json={"input": "Bakı", "model": "lightonai/GTE-ModernColBERT-v1"})
    assert "not served here" in _assert_one_line_error(wrong, 400)


def test_documents_are_encoded_in_chunks_of_the_token_budget_shortest_first_and_answered_in_order(served):
    """A model hold encodes documents whose padded size (texts x the longest, estimated from characters) stays
    within the budget of 16 queries' tokens: short texts many at once, full-length ones a few, one over it alone;
    the vectors come back in the order the texts were given."""
    service = served.service
    budget, length, ratio = service.document_budget, service.document_length, service.characters_per_token
    short = ["Bakı."] * 40
    full = ["Şəki xan sarayı. " * length] * 6
    mixed = [full[0], *short[:5], full[1]]
    for texts in (short, full, mixed):
        chunks = service.document_chunks(texts)
        assert sorted(i for chunk in chunks for i in chunk) == list(range(len(texts)))  # each text once
        for chunk in chunks:
            longest = max(estimated_tokens(texts[i], length, ratio) for i in chunk)
            assert len(chunk) == 1 or len(chunk) * longest <= budget
    assert len(service.document_chunks(short)) < len(short) // 2  # short texts share a hold
    assert len(service.document_chunks(full)) == math.ceil(6 / max(1, budget // length))
    assert service.document_chunks(mixed)[0] == [1, 2, 3, 4, 5]  # shortest first
    texts = [TEXTS["sheki"], "Bakı. " * length, TEXTS["baku"]]
    vectors = service._document_chunks(texts, 1, service._encode_document_chunk)
    alone = [service._encode_document_chunk([text])[0] for text in texts]
    assert [len(v) for v in vectors] == [len(v) for v in alone]
    assert all(np.allclose(v, w, atol=1e-5) for v, w in zip(vectors, alone, strict=True))


def test_concurrent_queries_share_forward_passes_and_get_their_own_hits(served):
    batcher = served.service.batcher
    calls, texts = batcher.calls, batcher.texts
    queries = [TEXTS[name] for name in TEXTS] * 4
    with ThreadPoolExecutor(len(queries)) as pool:
        hits = list(pool.map(lambda query: _search(served, query, k=1, exact=True)[0], queries))
    assert [hit["text"] for hit in hits] == queries  # each request got the hits of its own query
    assert batcher.texts - texts == len(queries)
    assert batcher.calls - calls < len(queries)  # fewer forward passes than requests


# ------------------------------------------------------------------------------------------------ writing
def test_added_documents_are_found_by_the_next_search_and_deleted_ones_are_gone(served):
    text = "Qəbələ Qafqaz Albaniyasının qədim paytaxtı olub."
    response = served.client.post(
        "/documents",
        json={"documents": [{"id": "qabala", "text": text, "metadata": {"region": "şimal"}}]},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 1 and isinstance(response.json()["commit"], int)
    hit = _search(served, text, k=1, exact=True)[0]
    assert (hit["id"], hit["metadata"]) == ("qabala", {"region": "şimal"})
    again = served.client.post("/documents", json={"documents": [{"id": "qabala", "text": text}]}, headers=AUTH)
    assert "already in the index" in _assert_one_line_error(again, 400)
    upserted = served.client.post(
        "/documents", json={"documents": [{"id": "qabala", "text": text + " Yenilənib."}], "upsert": True}, headers=AUTH
    )
    assert upserted.status_code == 200 and _search(served, text, k=1, exact=True)[0]["text"].endswith("Yenilənib.")
    deleted = served.client.request("DELETE", "/documents", json={"ids": ["qabala"]}, headers=AUTH)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == 1
    assert "qabala" not in [hit["id"] for hit in _search(served, text, k=50, exact=True)]
    gone = served.client.request("DELETE", "/documents", json={"ids": ["qabala"]}, headers=AUTH)
    assert "not in the index" in _assert_one_line_error(gone, 400)


def test_concurrent_writes_and_searches_lose_nothing(served):
    acknowledged, failures = [], []

    def write(worker: int) -> None:
        for batch in range(3):
            docs = [
                {"id": f"w{worker}-{batch}-{n}", "text": f"Sənəd {worker} {batch} {n}: Gəncə, Şamaxı, Naxçıvan."}
                for n in range(3)
            ]
            response = served.client.post("/documents", json={"documents": docs}, headers=AUTH)
            if response.status_code == 200:
                acknowledged.extend(docs)
            else:
                failures.append(response.text)

    def read(_: int) -> None:
        for _ in range(6):
            response = served.client.post("/search", json={"queries": ["Gəncə Şamaxı"], "k": 5})
            if response.status_code != 200:
                failures.append(response.text)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: job[0](job[1]), [(write, w) for w in range(4)] + [(read, r) for r in range(4)]))
    assert not failures
    assert len(acknowledged) == 36
    assert all(_found(served, doc["id"], doc["text"]) for doc in acknowledged)


def test_the_tokenizer_is_only_called_while_the_model_is_held_writes_included(served, monkeypatch):
    """A write splits long documents with the tokenizer that query batches use; a fast tokenizer used by two
    threads at once fails ("Already borrowed"), so every call, the write's split included, holds the model."""
    service = served.service
    tokenizer = type(service.reader.model.tokenizer)
    real_call, real_special = tokenizer.__call__, tokenizer.num_special_tokens_to_add
    held: list[bool] = []

    def watched(real):
        def call(self, *args, **kwargs):
            held.append(service.model_lock.held)
            return real(self, *args, **kwargs)

        return call

    monkeypatch.setattr(tokenizer, "__call__", watched(real_call))
    monkeypatch.setattr(tokenizer, "num_special_tokens_to_add", watched(real_special))
    long = {"id": "long-race", "text": "Gəncə Nizami Gəncəvinin vətənidir. " * 200}
    with ThreadPoolExecutor(3) as pool:
        write = pool.submit(served.client.post, "/documents", json={"documents": [long]}, headers=AUTH)
        reads = [pool.submit(_search, served, "Gəncə", k=1) for _ in range(6)]
        assert write.result().status_code == 200 and all(read.result() for read in reads)
    assert len(held) > 6 and all(held)
    served.client.request("DELETE", "/documents", json={"ids": ["long-race"]}, headers=AUTH)


def test_a_request_while_the_index_is_being_compacted_is_answered(served, monkeypatch):
    store = served.service.writer.index_store
    compacting, go_on = threading.Event(), threading.Event()
    real_commit = store._commit

    def paused_commit():  # the compaction's commit waits: its new store files are written, the manifest not yet
        if served.service.compacting:
            compacting.set()
            go_on.wait(10)
        return real_commit()

    monkeypatch.setattr(store, "_commit", paused_commit)
    served.client.post("/documents", json={"documents": [{"id": "tmp", "text": "Müvəqqəti sənəd."}]}, headers=AUTH)
    served.client.request("DELETE", "/documents", json={"ids": ["tmp"]}, headers=AUTH)
    with ThreadPoolExecutor(1) as pool:
        compaction = pool.submit(served.client.post, "/compact", headers=AUTH)
        try:
            assert compacting.wait(10)
            assert _search(served, TEXTS["baku"], k=1)[0]["id"] == "baku"  # searches go on, mid-compaction
            write = served.client.post("/documents", json={"documents": [{"id": "x", "text": "Xaçmaz"}]}, headers=AUTH)
            assert "being compacted" in _assert_one_line_error(write, 409)
            assert write.headers["retry-after"] == "1"
        finally:
            go_on.set()
        assert compaction.result().status_code == 200
    assert _search(served, TEXTS["baku"], k=1)[0]["id"] == "baku"
    assert served.client.post(
        "/documents", json={"documents": [{"id": "x", "text": "Xaçmaz"}]}, headers=AUTH
    ).is_success


# ------------------------------------------------------------------------------------------------ keys
def test_writes_need_the_right_key(served):
    doc = {"documents": [{"id": "k", "text": "Açarsız yazı"}]}
    assert "missing API key" in _assert_one_line_error(served.client.post("/documents", json=doc), 401)
    wrong = served.client.post("/documents", json=doc, headers={"Authorization": "Bearer nope"})
    assert _assert_one_line_error(wrong, 401) == "wrong API key" and wrong.headers["www-authenticate"] == "Bearer"
    basic = served.client.post("/documents", json=doc, headers={"Authorization": f"Basic {KEY}"})
    _assert_one_line_error(basic, 401)
    prefix = served.client.post("/documents", json=doc, headers={"Authorization": f"Bearer {KEY[:-1]}"})
    _assert_one_line_error(prefix, 401)
    _assert_one_line_error(served.client.request("DELETE", "/documents", json={"ids": ["baku"]}), 401)
    _assert_one_line_error(served.client.post("/compact"), 401)
    # the key is checked before the body is read: a keyless client cannot make the server parse its body
    garbage = served.client.post("/documents", content=b"{not json", headers={"Content-Type": "application/json"})
    assert "missing API key" in _assert_one_line_error(garbage, 401)
    unknown = served.client.post("/documents", json={"documents": [], "surprise": 1})
    assert "missing API key" in _assert_one_line_error(unknown, 401)
    assert _search(served, TEXTS["baku"], k=1)[0]["id"] == "baku"  # reads need no key here


def test_without_a_key_the_server_is_read_only_and_with_read_keys_searches_need_it(served, model):
    folder = served.service.folder
    reader = Searcher.open(folder, model=model, show_progress_bar=False)
    open_server = Server(create_app(reader))
    locked_server = Server(create_app(reader, api_key=KEY, read_key_required=True, read_only=True))
    try:
        refused = open_server.client.post("/documents", json={"documents": [{"id": "z", "text": "Zaqatala"}]})
        assert "read-only" in _assert_one_line_error(refused, 403)
        assert open_server.client.get("/health").json()["writable"] is False
        _assert_one_line_error(locked_server.client.post("/search", json={"queries": ["Bakı"]}), 401)
        _assert_one_line_error(locked_server.client.get("/health"), 401)
        _assert_one_line_error(locked_server.client.post("/v1/embeddings", json={"input": "Bakı"}), 401)
        # the API's description is a read too, and HEAD is a GET: the same rule
        for method in ("GET", "HEAD"):
            refused = locked_server.client.request(method, "/openapi.json")
            assert refused.status_code == 401, (method, refused.status_code)
            assert locked_server.client.request(method, "/openapi.json", headers=AUTH).status_code == 200
            assert open_server.client.request(method, "/openapi.json").status_code == 200
            assert locked_server.client.request(method, "/health").status_code == 401
        unlocked = locked_server.client.post("/v1/embeddings", json={"input": "Bakı"}, headers=AUTH)
        assert unlocked.status_code == 200, unlocked.text
        assert locked_server.client.post("/search", json={"queries": ["Bakı"]}, headers=AUTH).status_code == 200
        with_key = locked_server.client.post("/documents", json={"documents": [{"id": "z", "text": "Z"}]}, headers=AUTH)
        assert "read-only" in _assert_one_line_error(with_key, 403)
        # a commit of another writer (the main server) is seen by this read-only server without a restart
        text = "Zaqatala fındıq bağları ilə tanınır."
        assert served.client.post("/documents", json={"documents": [{"id": "zaqatala", "text": text}]}, headers=AUTH)
        assert _found(open_server, "zaqatala", text)
    finally:
        open_server.stop()
        locked_server.stop()


# ------------------------------------------------------------------------------------------------ bad input
def _big_chunks(size: int, piece: int = 65536):
    yield b'{"queries": ["'
    for _ in range(size // piece):
        yield b"a" * piece
    yield b'"]}'


def _raw(body, headers=None) -> dict:
    return {"content": body, "headers": {"content-type": "application/json", **(headers or {})}}


def _docs(*documents) -> dict:
    return {"json": {"documents": list(documents)}, "headers": AUTH}


def _q(**fields) -> dict:
    return {"json": {"queries": ["Bakı"], **fields}}


BAD_REQUESTS = {
    "malformed JSON": ("POST", "/search", _raw(b'{"queries": ["Bak'), 400),
    "invalid UTF-8": ("POST", "/search", _raw(b'{"queries": ["\xff\xfe"]}'), 400),
    "not JSON content type": ("POST", "/search", {"content": b"q=1", "headers": {"content-type": "text/plain"}}, 422),
    "no body": ("POST", "/search", {}, 422),
    "body is a list": ("POST", "/search", {"json": ["Bakı"]}, 422),
    "queries is a string": ("POST", "/search", {"json": {"queries": "Bakı"}}, 422),
    "query is a number": ("POST", "/search", {"json": {"queries": [1]}}, 422),
    "k is a string": ("POST", "/search", _q(k="10"), 422),
    "k is a float": ("POST", "/search", _q(k=2.5), 422),
    "k is a boolean": ("POST", "/search", _q(k=True), 422),
    "k is null": ("POST", "/search", _q(k=None), 422),
    "k is zero": ("POST", "/search", _q(k=0), 400),
    "k is negative": ("POST", "/search", _q(k=-5), 400),
    "k is huge": ("POST", "/search", _q(k=10**12), 400),
    "k is beyond int64": ("POST", "/search", _q(k=10**30), (400, 422)),
    "unknown field": ("POST", "/search", _q(top_k=3), 422),
    "unknown group_by": ("POST", "/search", _q(group_by="sentence"), 422),
    "subset is one id": ("POST", "/search", _q(subset="baku"), 422),
    "empty queries": ("POST", "/search", {"json": {"queries": []}}, 400),
    "empty query": ("POST", "/search", {"json": {"queries": [""]}}, 400),
    "whitespace query": ("POST", "/search", {"json": {"queries": [" \t\u3000"]}}, 400),
    "lone surrogate": ("POST", "/search", _raw(b'{"queries": ["\\ud800"]}'), 400),
    "too long query": ("POST", "/search", {"json": {"queries": ["ə" * 301]}}, 413),
    "too many queries": ("POST", "/search", {"json": {"queries": ["Bakı"] * 9}}, 413),
    "10 MB body": ("POST", "/search", {"json": {"queries": ["a" * 10_000_000]}}, 413),
    "10 MB streamed body": ("POST", "/search", _raw(_big_chunks(10_000_000)), 413),
    "deeply nested JSON": ("POST", "/search", _raw(b"[" * 50_000 + b"]" * 50_000), (400, 422)),
    "document without id": ("POST", "/documents", _docs({"text": "Bakı"}), 422),
    "document id is a number": ("POST", "/documents", _docs({"id": 5, "text": "Bakı"}), 422),
    "metadata is a list": ("POST", "/documents", _docs({"id": "m", "text": "Bakı", "metadata": [1]}), 422),
    "empty document": ("POST", "/documents", _docs({"id": "e", "text": "  "}), 400),
    "no documents": ("POST", "/documents", _docs(), 400),
    "too many documents": ("POST", "/documents", _docs(*({"id": str(i), "text": "x"} for i in range(21))), 413),
    "duplicate ids": ("POST", "/documents", _docs({"id": "d", "text": "x"}, {"id": "d", "text": "y"}), 400),
    "empty id": ("POST", "/documents", _docs({"id": "", "text": "x"}), 400),
    "lone surrogate in metadata": (
        "POST", "/documents", _raw(b'{"documents": [{"id": "s", "text": "x", "metadata": {"\\udc00": 1}}]}', AUTH), 400
    ),
    "delete nothing": ("DELETE", "/documents", {"json": {"ids": []}, "headers": AUTH}, 400),
    "delete unknown id": ("DELETE", "/documents", {"json": {"ids": ["no-such-id"]}, "headers": AUTH}, 400),
    "embeddings of nothing": ("POST", "/v1/embeddings", {"json": {"input": []}}, 400),
    "embeddings, unknown field": ("POST", "/v1/embeddings", {"json": {"input": "Bakı", "dimensions": 8}}, 422),
    "unknown endpoint": ("GET", "/nowhere", {}, 404),
    "wrong method": ("GET", "/search", {}, 405),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_input_is_a_one_line_4xx_and_the_server_keeps_serving(served, case):
    method, path, kwargs, status = BAD_REQUESTS[case]
    _assert_one_line_error(served.client.request(method, path, **kwargs), status)
    assert _search(served, TEXTS["lankaran"], k=1, exact=True)[0]["id"] == "lankaran"


def test_unicode_edge_cases_are_searched_and_stored_as_given(served):
    texts = {
        "emoji": "Bakı 🌊🇦🇿 Xəzər",
        "rtl": "باكو پایتخت آذربایجان",
        "combining": "Şəki" + "\u0307\u0301" + " sarayı",
        "zero-width": "Gən\u200bcə\u200d şəhəri\ufeff",
        "nul": "Quba\x00 alması",
        "cjk": "巴库是阿塞拜疆的首都",
    }
    docs = [{"id": f"u-{name}", "text": text, "metadata": {"name": name}} for name, text in texts.items()]
    assert served.client.post("/documents", json={"documents": docs}, headers=AUTH).status_code == 200
    for name, text in texts.items():
        hits = _search(served, text, k=1, subset=[f"u-{name}"])
        assert (hits[0]["text"], hits[0]["metadata"]) == (text, {"name": name})


def test_nan_or_infinity_in_metadata_is_refused_and_stored_ones_never_break_a_search(served):
    text = "Naxçıvan duz mağaraları ilə tanınır."
    for literal in (b"NaN", b"Infinity", b"-Infinity"):  # Python's JSON parser takes them; strict JSON has none
        body = b'{"documents": [{"id": "nan", "text": "x", "metadata": {"a": [1, ' + literal + b"]}}]}"
        refused = served.client.post("/documents", **_raw(body, AUTH))
        assert "NaN or Infinity" in _assert_one_line_error(refused, 400)

    # an index written before NaN was refused (or by the index class directly) may hold them: the search still
    # answers, in strict JSON (null)
    def store_nan(writer):
        payload = {"text": text, "metadata": {"x": float("nan")}}
        writer.index_store.add_documents(["nan-doc"], writer.encode_documents([text]), payloads=[payload])

    served.service.write(store_nan, True)
    try:
        response = served.client.post("/search", json={"queries": [text], "k": 1, "subset": ["nan-doc"]})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["hits"][0]["metadata"] == {"x": None}
    finally:
        served.service.write(lambda writer: writer.delete(["nan-doc"]), False)


def test_an_internal_error_is_one_line_500_without_traceback_and_the_server_keeps_serving(served, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /srv/index\nline two")

    monkeypatch.setattr(served.service, "search", broken)
    with caplog.at_level(logging.ERROR, logger="colbert_az_pylate.serve"):
        response = served.client.post("/search", json={"queries": ["Bakı"]})
    assert _assert_one_line_error(response, 500) == "internal error (logged on the server)"
    assert "secret" not in response.text and any(
        "secret internals" in r.getMessage() or r.exc_info for r in caplog.records
    )
    monkeypatch.undo()
    assert _search(served, TEXTS["baku"], k=1)[0]["id"] == "baku"


def test_the_access_log_names_requests_but_never_their_text(served, caplog):
    secret = "Gizli mətn: Naftalan neft vannaları"
    with caplog.at_level(logging.INFO, logger="colbert_az_pylate.serve.access"):
        served.client.post("/documents", json={"documents": [{"id": "log", "text": secret}]}, headers=AUTH)
        served.client.post("/search", json={"queries": [secret]})
        deadline = time.monotonic() + 5  # the line is written once the response is sent
        while time.monotonic() < deadline and not any("/search" in r.getMessage() for r in caplog.records):
            time.sleep(0.01)
    lines = [record.getMessage() for record in caplog.records if record.name == "colbert_az_pylate.serve.access"]
    assert any('"POST /documents" 200' in line for line in lines) and any(
        '"POST /search" 200' in line for line in lines
    ), lines
    assert not any("Naftalan" in line or "Gizli" in line for line in lines)


def test_a_path_with_an_encoded_newline_cannot_forge_an_access_log_line_or_split_an_error(served, caplog):
    forged = '/x%0A127.0.0.1%20"DELETE%20/documents"%20200'
    with caplog.at_level(logging.INFO, logger="colbert_az_pylate.serve.access"):
        refused = served.client.get(forged)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("/x" in r.getMessage() for r in caplog.records):
            time.sleep(0.01)
    assert "%0A" in _assert_one_line_error(refused, 404)
    access = [r.getMessage() for r in caplog.records if r.name == "colbert_az_pylate.serve.access"]
    lines = [line for line in access if "/x" in line]
    assert len(lines) == 1 and "\n" not in lines[0] and "%0A" in lines[0], lines


# ------------------------------------------------------------------------------------------------ the command
def test_serve_refuses_bad_settings_in_one_line_before_loading_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLBERT_AZ_API_KEY", raising=False)
    empty_key = tmp_path / "key"
    empty_key.write_text("\n")
    cases = [
        ([str(tmp_path / "missing")], "not an index folder"),
        ([str(tmp_path), "--api-key-file", str(empty_key)], "is empty"),
        ([str(tmp_path), "--api-key-file", str(tmp_path / "nokey")], "cannot read the API key file"),
        ([str(tmp_path), "--require-key-for-reads"], "needs a key"),
        ([str(tmp_path), "--max-k", "0"], "--max-k must be"),
        ([str(tmp_path), "--workers", "0"], "--workers must be"),
    ]
    for argv, message in cases:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    utf8_key = tmp_path / "utf8-key"
    utf8_key.write_text("açar-ğüşıöçə-0123456789\n", encoding="utf-8")
    monkeypatch.setenv("COLBERT_AZ_API_KEY", "two words")
    for argv, source in (([str(tmp_path), "--api-key-file", str(utf8_key)], str(utf8_key)), ([str(tmp_path)], "$")):
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "visible ASCII" in err and source in err and "açar" not in err and len(err.splitlines()) == 1, err
    monkeypatch.delenv("COLBERT_AZ_API_KEY")
    with pytest.raises(SystemExit) as exit_:  # a key on the command line is not taken for --api-key-file
        main(["serve", str(tmp_path), "--api-key", "x"])
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.slow
def test_served_index_keeps_its_last_commit_after_sigkill_during_a_write(model_folder, model, tmp_path):
    """The real command in a subprocess: killed with SIGKILL while a write is in flight, restarted, every
    acknowledged document is there and the index opens."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    _new_index(model, tmp_path / "index").index_store.close()
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)

    def start():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "colbert_az_pylate", "serve", str(tmp_path / "index"), "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--api-key-file", str(key_file)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                if client.get("/health").status_code == 200:
                    return process, client
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)

    process, client = start()
    acknowledged = []
    try:
        for batch in range(3):
            docs = [{"id": f"k{batch}-{n}", "text": f"Kəlbəcər {batch} {n} bulaqları"} for n in range(5)]
            assert client.post("/documents", json={"documents": docs}, headers=AUTH).status_code == 200
            acknowledged += docs
        big = [{"id": f"lost-{n}", "text": "Şuşa qalası " * 200 + str(n)} for n in range(20)]
        writer = threading.Thread(
            target=lambda: _ignore(lambda: client.post("/documents", json={"documents": big}, headers=AUTH))
        )
        writer.start()
        time.sleep(0.5)  # the big write is encoding or committing
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        writer.join(30)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    process, client = start()
    try:
        health = client.get("/health").json()
        assert health["documents"] in (len(TEXTS) + len(acknowledged), len(TEXTS) + len(acknowledged) + len(big))
        for doc in acknowledged:
            hits = client.post("/search", json={"queries": [doc["text"]], "k": 1, "subset": [doc["id"]]}).json()
            assert hits["results"][0]["hits"][0]["id"] == doc["id"]
        text = "Şuşa Cıdır düzü"
        assert client.post("/documents", json={"documents": [{"id": "after", "text": text}]}, headers=AUTH).is_success
    finally:
        client.close()
        process.kill()
        process.wait(30)
        process.stderr.close()


def _ignore(call) -> None:
    with contextlib.suppress(httpx.TransportError):
        call()


def test_a_key_that_cannot_travel_in_an_http_header_is_refused_when_the_app_is_built(served):
    # a non-ASCII key would be compared with the header's latin-1 reading and never match: refuse it up front
    for key in ("açar-ğüşıöçə-0123456789", "two words", " "):
        with pytest.raises(InvalidArgumentError) as error:
            create_app(served.service.reader, api_key=key, read_only=True)
        assert "açar" not in str(error.value) and len(str(error.value).splitlines()) == 1


# ------------------------------------------------------------------------------------------------ the micro-batcher
def _asyncio_for_batching(**replaced) -> types.ModuleType:
    """asyncio as batching.py sees it, with some names replaced (the real module is left alone)."""
    view = types.ModuleType("asyncio")
    view.__dict__.update({name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("__")})
    view.__dict__.update(replaced)
    return view


def _run_requests(batcher: MicroBatcher, *requests: list[str], timeout: float = 5.0) -> list:
    """Each request's result or exception; a request that hangs fails the test after ``timeout`` seconds."""

    async def all_of_them():
        try:
            calls = [batcher.encode(texts) for texts in requests]
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout)
        finally:
            await batcher.close()

    return asyncio.run(all_of_them())


def test_a_request_that_breaks_its_batch_fails_alone_and_the_others_get_their_own_rows():
    def lengths(texts):
        if any("bad" in text for text in texts):
            raise ValueError("cannot encode 'bad'")
        return [len(text) for text in texts]

    results = _run_requests(MicroBatcher(lengths, wait_ms=50), ["Bakı"], ["bad", "Şəki"], ["Gəncə", "Quba"])
    assert results[0] == [4] and results[2] == [5, 4]
    assert isinstance(results[1], ValueError)


def test_the_batch_wait_ends_on_asyncios_own_timeout_error_as_before_python_311(monkeypatch):
    class AsyncioTimeoutError(Exception):  # Python 3.10: asyncio.TimeoutError is not the builtin TimeoutError
        pass

    async def wait_for(awaitable, timeout):
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:  # the real one: the builtin from 3.11, asyncio's own class on 3.10
            raise AsyncioTimeoutError from None

    view = _asyncio_for_batching(TimeoutError=AsyncioTimeoutError, wait_for=wait_for)
    monkeypatch.setattr(batching, "asyncio", view)
    assert _run_requests(MicroBatcher(lambda texts: [len(t) for t in texts], wait_ms=5), ["Bakı"]) == [[4]]


def test_when_the_collector_fails_its_requests_hear_it_instead_of_hanging(monkeypatch):
    async def broken_wait_for(awaitable, timeout):
        awaitable.close()
        raise OSError("the collector broke")

    monkeypatch.setattr(batching, "asyncio", _asyncio_for_batching(wait_for=broken_wait_for))
    batcher = MicroBatcher(lambda texts: [len(t) for t in texts], wait_ms=5)
    (result,) = _run_requests(batcher, ["Bakı"])
    assert isinstance(result, RuntimeError) and "the query batcher stopped: OSError" in str(result)
    monkeypatch.undo()
    assert _run_requests(batcher, ["Şəki"]) == [[4]]  # a new collector serves the next request


def test_closing_the_batcher_cancels_the_requests_of_the_batch_being_encoded():
    entered, release = threading.Event(), threading.Event()

    def slow(texts):
        entered.set()
        release.wait(10)
        return [len(t) for t in texts]

    async def close_while_encoding():
        batcher = MicroBatcher(slow, wait_ms=5)
        requests = [asyncio.ensure_future(batcher.encode([text])) for text in ("Bakı", "Şəki")]
        while not entered.is_set():
            await asyncio.sleep(0.01)
        try:
            await batcher.close()
            return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 5)
        finally:
            release.set()  # the encoding thread may end (asyncio.run waits for it)

    results = asyncio.run(close_while_encoding())
    assert all(isinstance(result, asyncio.CancelledError) for result in results)


def test_an_index_is_served_with_an_exported_encoder_and_health_says_which(served, model):
    require_extra("onnxruntime", "onnx")
    reader = Searcher.open(served.service.folder, encoder="onnx", show_progress_bar=False)
    server = Server(create_app(reader))
    try:
        assert server.client.get("/health").json()["encoder"].startswith("onnx (onnxruntime")
        ours = server.client.post("/search", json={"queries": [TEXTS["baku"]], "k": 3}).json()["results"][0]["hits"]
        theirs = _search(served, TEXTS["baku"], k=3)
        assert [hit["id"] for hit in ours] == [hit["id"] for hit in theirs]
    finally:
        server.stop()
