"""colbert-az serve under load and abuse: concurrent searches, cheap work ahead of expensive work, clients that go
away, slow clients, foreign hosts, hostile metadata. Real uvicorn servers on free loopback ports, raw sockets
where the abuse is at the connection level."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from extras import require_extra

require_extra("fastapi", "serve")
require_extra("uvicorn", "serve")

import test_serving  # the fixtures and helpers of the main serving tests  # noqa: E402
from test_serving import AUTH, KEY, TEXTS, Server, _assert_one_line_error, _new_index, _search, _texts_in_chunks  # noqa: E402

from colbert_az_pylate.cli import main  # noqa: E402
from colbert_az_pylate.retrieval.searcher import Searcher  # noqa: E402
from colbert_az_pylate.serving import ServeLimits, create_app  # noqa: E402
from colbert_az_pylate.serving.concurrency import (  # noqa: E402
    BULK,
    QUERIES,
    WRITES,
    LeftBeforeTurnError,
    PriorityLock,
    ReadWriteLock,
    TurnLock,
)
from colbert_az_pylate.serving.protocol import uvicorn_options  # noqa: E402

model_folder, model = test_serving.model_folder, test_serving.model  # module-scoped fixtures, shared by name


@pytest.fixture(scope="module")
def writable(model, tmp_path_factory):
    """A writable index served with a key, the connection limits of `colbert-az serve` and small ones of its own."""
    searcher = _new_index(model, tmp_path_factory.mktemp("abuse") / "index")
    limits = ServeLimits(max_queries=8, max_body_bytes=200_000, max_metadata_bytes=2048, max_response_bytes=100_000)
    server = Server(
        create_app(searcher, api_key=KEY, limits=limits, batch_wait_ms=5, search_threads=2, body_timeout=1.0),
        **uvicorn_options(header_timeout=1.0, limit_concurrency=64),
    )
    yield server
    server.stop()
    searcher.index_store.close()


@pytest.fixture(scope="module")
def keyless(writable, model):
    """A read-only server without a key over the same index: anyone may ask it for document embeddings."""
    reader = Searcher.open(writable.service.folder, model=model, show_progress_bar=False)
    limits = ServeLimits(max_embedding_chars=10_000, max_response_bytes=1_000_000)
    server = Server(create_app(reader, limits=limits), **uvicorn_options(header_timeout=1.0))
    yield server
    server.stop()


def _raw_request(path: str, body: dict, host: str = "127.0.0.1") -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------ the locks
def test_the_readers_writer_lock_lets_readers_share_and_a_waiting_writer_go_first():
    lock, events = ReadWriteLock(), []
    first_in, release_first = threading.Event(), threading.Event()

    def reader(name: str, hold: threading.Event | None = None) -> None:
        with lock.read():
            events.append(f"{name} in")
            if hold is not None:
                first_in.set()
                hold.wait(5)
        events.append(f"{name} out")

    def writer() -> None:
        with lock.write():
            events.append("writer in")
            assert lock.readers == 0
        events.append("writer out")

    threads = [threading.Thread(target=reader, args=("r1", release_first))]
    threads[0].start()
    assert first_in.wait(5)
    with lock.read():  # a second reader shares the lock with the first
        assert lock.readers == 2
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    _wait_until(lambda: lock._writers_waiting == 1)
    threads.append(threading.Thread(target=reader, args=("r2",)))  # arrives after the writer: waits for it
    threads[2].start()
    time.sleep(0.05)
    assert "r2 in" not in events
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert events.index("writer out") < events.index("r2 in")


def test_the_model_lock_serves_waiting_queries_before_writes_and_bulk_work():
    lock, order = PriorityLock(), []
    holding, release = threading.Event(), threading.Event()

    def hold_first() -> None:
        with lock.hold(BULK):
            holding.set()
            release.wait(5)

    def take(level: int, name: str) -> None:
        with lock.hold(level):
            order.append(name)

    first = threading.Thread(target=hold_first)
    first.start()
    assert holding.wait(5)
    waiters = [threading.Thread(target=take, args=job) for job in ((BULK, "bulk"), (WRITES, "write"), (QUERIES, "q"))]
    for thread in waiters:
        thread.start()
        time.sleep(0.05)  # bulk waits longest, the query least
    release.set()
    for thread in [first, *waiters]:
        thread.join(5)
    assert order == ["q", "write", "bulk"]


def test_reranks_take_turns_in_arrival_order_and_a_waiter_whose_client_left_is_skipped():
    turns, order = TurnLock(), []
    stops = {2: threading.Event()}

    def take(number: int) -> None:
        try:
            with turns.hold(stops.get(number)):
                order.append(number)
        except LeftBeforeTurnError:
            order.append(f"left {number}")

    threads = []
    with turns.hold():
        for number in range(5):
            threads.append(threading.Thread(target=take, args=(number,)))
            threads[-1].start()
            _wait_until(lambda number=number: turns._next_ticket == number + 2)  # queued in this order
        stops[2].set()
        _wait_until(lambda: "left 2" in order)
    for thread in threads:
        thread.join(5)
    assert order == ["left 2", 0, 1, 3, 4]
    with turns.hold():  # the lock is free again
        assert turns.serving == 6


def test_bulk_work_steps_aside_while_searches_are_in_flight_but_is_never_starved():
    lock, busy = PriorityLock(), [True]
    threading.Timer(0.2, lambda: busy.__setitem__(0, False)).start()
    started = time.monotonic()
    with lock.hold(BULK, defer=lambda: busy[0], max_defer=5):
        waited = time.monotonic() - started
    assert 0.15 < waited < 2
    started = time.monotonic()
    with lock.hold(BULK, defer=lambda: True, max_defer=0.2):  # searches never stop: it goes after max_defer
        waited = time.monotonic() - started
    assert 0.15 < waited < 2


# ------------------------------------------------------------------------------------------------ concurrency
def test_searches_run_at_once_not_one_after_another(writable, monkeypatch):
    service, inside, most = writable.service, [0], [0]
    real = service.reader.search
    guard = threading.Lock()

    def slow_search(*args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(service.reader, "search", slow_search)
    queries = [TEXTS[name] for name in TEXTS][:4]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        hits = list(pool.map(lambda query: _search(writable, query, k=1, exact=True)[0]["text"], queries))
    assert hits == queries
    assert most[0] == 2  # as many at once as the pool has threads (search_threads=2)
    assert time.monotonic() - started < 4 * 0.3 + 0.5


def test_health_waits_for_no_lock_no_pool_and_no_model(writable, monkeypatch):
    service = writable.service
    entered, release = threading.Event(), threading.Event()
    real = service.reader.search

    def stuck_search(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.reader, "search", stuck_search)
    with ThreadPoolExecutor(3) as pool:
        searches = [pool.submit(_search, writable, TEXTS["baku"], k=1) for _ in range(2)]  # the whole pool
        try:
            assert entered.wait(10)
            held = threading.Event()

            def hold_the_rest() -> None:  # the model, and the index alone (a refresh)
                with service.model_lock.hold(QUERIES), service.refresh_lock:
                    held.set()
                    release.wait(10)

            pool.submit(hold_the_rest)
            assert held.wait(10)
            started = time.monotonic()
            health = writable.client.get("/health")
            assert health.status_code == 200 and time.monotonic() - started < 1.0
            assert health.json()["searches_in_flight"] == 2 and health.json()["documents"] >= len(TEXTS)
        finally:
            release.set()
        assert all(search.result()[0]["id"] == "baku" for search in searches)


def test_health_counts_a_commit_of_another_writer_without_a_search(writable, model):
    reader = Searcher.open(writable.service.folder, model=model, show_progress_bar=False)
    server = Server(create_app(reader))
    try:
        before = server.client.get("/health").json()["documents"]
        added = writable.client.post("/documents", json={"documents": [{"id": "h1", "text": "Xızı"}]}, headers=AUTH)
        assert added.status_code == 200
        _wait_until(lambda: server.client.get("/health").json()["documents"] == before + 1, timeout=5)
    finally:
        server.stop()
        writable.client.request("DELETE", "/documents", json={"ids": ["h1"]}, headers=AUTH)


def test_a_burst_of_writes_does_not_hold_searches_back(writable, monkeypatch):
    """A write encodes one chunk per model hold and commits without excluding searches: a search made while a
    long write is in progress is answered before that write ends."""
    import colbert_az_pylate.retrieval.searcher as searcher_module

    real, chunks = searcher_module.encode_document_vectors, []

    def slow_chunk(encoder, texts, *args, **kwargs):
        chunks.append(len(texts))
        time.sleep(0.08)
        return real(encoder, texts, *args, **kwargs)

    monkeypatch.setattr(searcher_module, "encode_document_vectors", slow_chunk)
    docs = [{"id": f"burst-{n}", "text": f"Sənəd {n}: Lerik uzunömürlüləri."} for n in range(40)]
    with ThreadPoolExecutor(1) as pool:
        write = pool.submit(writable.client.post, "/documents", json={"documents": docs}, headers=AUTH)
        _wait_until(lambda: len(chunks) >= 1)
        assert _search(writable, TEXTS["sheki"], k=1)[0]["id"] == "sheki"
        assert not write.done()  # the search did not wait for the write
        assert write.result().status_code == 200
    planned = [len(chunk) for chunk in writable.service.document_chunks([d["text"] for d in docs])]
    assert len(planned) > 1 and sorted(chunks) == sorted(planned)  # one model hold per planned chunk
    assert _search(writable, docs[7]["text"], k=1, subset=["burst-7"])[0]["id"] == "burst-7"
    writable.client.request("DELETE", "/documents", json={"ids": [d["id"] for d in docs]}, headers=AUTH)


# ------------------------------------------------------------------------------------------------ embeddings
def test_document_embeddings_need_the_key_where_there_is_one(writable):
    request = {"input": ["Quba alması"], "is_query": False}
    _assert_one_line_error(writable.client.post("/v1/embeddings", json=request), 401)
    assert writable.client.post("/v1/embeddings", json=request, headers=AUTH).status_code == 200
    assert writable.client.post("/v1/embeddings", json={"input": ["Quba"], "is_query": True}).status_code == 200


def test_document_embeddings_without_a_key_are_encoded_a_chunk_at_a_time_behind_queries(keyless, monkeypatch):
    service = keyless.service
    holds, real = [], service.reader.model.encode

    def recorded(texts, *args, **kwargs):
        holds.append((kwargs.get("is_query"), len(texts)))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(service.reader.model, "encode", recorded)
    monkeypatch.setattr(service, "document_budget", 128)  # a few chunks of these short texts
    texts = [f"Sənəd {n}: Qax, Zaqatala, Balakən." for n in range(20)]
    response = keyless.client.post("/v1/embeddings", json={"input": texts, "is_query": False})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 20
    documents = [size for is_query, size in holds if is_query is False]
    planned = [len(chunk) for chunk in service.document_chunks(texts)]
    assert sum(documents) == 20 and len(planned) > 1 and sorted(documents) == sorted(planned)


def test_embedding_requests_beyond_their_cost_or_answer_size_are_refused_naming_the_flag(keyless):
    texts = ["Bakı " * 300] * 8  # 12,000 characters: over --max-embedding-chars 10,000
    refused = keyless.client.post("/v1/embeddings", json={"input": texts, "is_query": False})
    assert "--max-embedding-chars" in _assert_one_line_error(refused, 413)
    texts = ["Şəki xan sarayı " * 60] * 8  # 8 x 256 tokens x 24 numbers: over --max-response-bytes 1,000,000
    refused = keyless.client.post("/v1/embeddings", json={"input": texts, "is_query": False})
    assert "--max-response-bytes" in _assert_one_line_error(refused, 413)
    assert keyless.client.post("/v1/embeddings", json={"input": texts[:1], "is_query": False}).status_code == 200


@pytest.mark.slow
def test_a_search_answer_beyond_the_response_limit_is_refused_and_the_server_keeps_serving(writable):
    long_text = "Göygöl milli parkı " * 400  # about 7.6 KB per hit
    docs = [{"id": f"long-{n}", "text": long_text + str(n)} for n in range(8)]
    assert writable.client.post("/documents", json={"documents": docs}, headers=AUTH).status_code == 200
    try:
        response = writable.client.post("/search", json={"queries": ["Göygöl"] * 8, "k": 50, "group_by": "passage"})
        assert "--max-response-bytes" in _assert_one_line_error(response, 413)
        assert _search(writable, TEXTS["quba"], k=1)[0]["id"] == "quba"
    finally:
        writable.client.request("DELETE", "/documents", json={"ids": [d["id"] for d in docs]}, headers=AUTH)


# ------------------------------------------------------------------------------------------------ clients that go
def test_a_search_whose_client_has_gone_never_reaches_the_model(writable, monkeypatch):
    batcher = writable.service.batcher
    encoded, entered, release = [], threading.Event(), threading.Event()
    real = batcher.encode_many

    def blocking_encode(texts):
        encoded.extend(texts)
        entered.set()
        release.wait(10)
        return real(texts)

    monkeypatch.setattr(batcher, "encode_many", blocking_encode)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_search, writable, "Birinci sorğu Bakı", k=1)
        try:
            assert entered.wait(10)
            gone = _connect(writable)
            gone.sendall(_raw_request("/search", {"queries": ["Tərk edilmiş sorğu"], "k": 1}))
            time.sleep(0.3)  # queued behind the first batch
            gone.close()
            time.sleep(0.3)
        finally:
            release.set()
        assert first.result()[0]["id"]
    assert _search(writable, TEXTS["lankaran"], k=1)[0]["id"] == "lankaran"
    assert "Tərk edilmiş sorğu" not in encoded


def test_a_search_queued_behind_busy_ones_is_dropped_when_its_client_goes(writable, monkeypatch):
    service, searched = writable.service, []
    entered, release = threading.Semaphore(0), threading.Event()
    real = service.reader.search

    def stuck_search(queries, *args, **kwargs):
        searched.extend(queries)
        entered.release()
        release.wait(10)
        return real(queries, *args, **kwargs)

    monkeypatch.setattr(service.reader, "search", stuck_search)
    with ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(_search, writable, text, k=1) for text in (TEXTS["baku"], TEXTS["sheki"])]
        try:
            assert entered.acquire(timeout=10) and entered.acquire(timeout=10)  # both search threads taken
            gone = _connect(writable)
            gone.sendall(_raw_request("/search", {"queries": ["Gözləyən sorğu"], "k": 1}))
            time.sleep(0.5)  # encoded, waiting for a search thread
            gone.close()
            time.sleep(0.3)
        finally:
            release.set()
        assert [future.result()[0]["id"] for future in busy] == ["baku", "sheki"]
    assert _search(writable, TEXTS["nizami"], k=1)[0]["id"] == "nizami"
    assert "Gözləyən sorğu" not in searched


# ------------------------------------------------------------------------------------------------ slow clients
def test_slow_clients_holding_connections_do_not_stop_a_new_client_and_are_cut_off(writable):
    slow = [_connect(writable) for _ in range(20)]
    try:
        for sock in slow:  # headers dribbled one byte at a time, never finished
            sock.sendall(b"P")
        stop = time.monotonic() + 0.6
        while time.monotonic() < stop:
            for sock in slow:
                sock.sendall(b"O")
            time.sleep(0.1)
            started = time.monotonic()
            assert _search(writable, TEXTS["quba"], k=1)[0]["id"] == "quba"  # a new client is served meanwhile
            assert time.monotonic() - started < 2
        silent = _connect(writable)  # one that sends nothing at all
        for sock in [*slow, silent]:
            sock.settimeout(5)
            answer = _read_all(sock)  # the header timeout (1 s) answers 408 and closes
            assert answer.startswith(b"HTTP/1.1 408") and b"--header-timeout" in answer, answer[:200]
        silent.close()
    finally:
        for sock in slow:
            sock.close()
    assert writable.client.get("/health").status_code == 200


def test_a_body_that_never_finishes_is_answered_408(writable):
    sock = _connect(writable)
    try:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        sock.sendall(b'Content-Length: 100\r\n\r\n{"queries": ["Ba')
        sock.settimeout(5)
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"--body-timeout" in answer, answer[:300]
    assert _search(writable, TEXTS["baku"], k=1)[0]["id"] == "baku"


def test_beyond_the_concurrency_limit_new_clients_hear_503_until_connections_free_up(writable, model):
    reader = Searcher.open(writable.service.folder, model=model, show_progress_bar=False)
    server = Server(create_app(reader), **uvicorn_options(header_timeout=1.0, limit_concurrency=4))
    idle = [_connect(server) for _ in range(4)]
    try:
        time.sleep(0.1)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            refused = client.post("/search", json={"queries": ["Bakı"], "k": 1})
            message = _assert_one_line_error(refused, 503)
            assert "--limit-concurrency" in message and refused.headers["retry-after"] == "1"
            time.sleep(1.5)  # the idle connections are cut by the header timeout
            assert client.post("/search", json={"queries": [TEXTS["baku"]], "k": 1}).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        server.stop()


# ------------------------------------------------------------------------------------------------ hosts
def test_a_foreign_host_header_is_refused_before_anything_else(writable):
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
        response = writable.client.post(
            "/documents", json={"documents": [{"id": "dns", "text": "x"}]}, headers={**AUTH, "Host": host}
        )
        assert "--allowed-host" in _assert_one_line_error(response, 400), host
    for host in (f"localhost:{writable.port}", "LOCALHOST", f"[::1]:{writable.port}", "127.0.0.1"):
        assert writable.client.get("/health", headers={"Host": host}).status_code == 200, host
    assert "dns" not in [hit["id"] for hit in _search(writable, "x", k=50, exact=True)]


def test_allowed_hosts_are_the_bound_address_localhost_and_the_named_ones(model, writable):
    reader = Searcher.open(writable.service.folder, model=model, show_progress_bar=False)
    named = Server(create_app(reader, allowed_hosts=["search.example.az", "*.corp.az"]))
    anyone = Server(create_app(reader, allowed_hosts=["*"]))
    try:
        for host, status in (("search.example.az", 200), ("a.corp.az", 200), ("corp.az", 400), ("localhost", 400)):
            assert named.client.get("/health", headers={"Host": host}).status_code == status, host
        assert anyone.client.get("/health", headers={"Host": "whatever.example"}).status_code == 200
    finally:
        named.stop()
        anyone.stop()


# ------------------------------------------------------------------------------------------------ metadata
def _nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_metadata_too_deep_too_large_or_not_json_is_refused_and_the_index_is_untouched(writable):
    before = writable.client.get("/health").json()["commit"]
    cases = [
        (_nested(260), 422, "--max-metadata-depth"),
        (_nested(33), 422, "--max-metadata-depth"),
        ({"blob": "ə" * 2000}, 413, "--max-metadata-bytes"),
    ]
    for metadata, status, flag in cases:
        body = {"documents": [{"id": "meta", "text": "Metadata sınağı", "metadata": metadata}]}
        message = _assert_one_line_error(writable.client.post("/documents", json=body, headers=AUTH), status)
        assert flag in message and "documents[0].metadata" in message
    assert writable.client.get("/health").json()["commit"] == before
    body = {"documents": [{"id": "meta", "text": "Metadata sınağı", "metadata": _nested(32)}]}
    assert writable.client.post("/documents", json=body, headers=AUTH).status_code == 200
    writable.client.request("DELETE", "/documents", json={"ids": ["meta"]}, headers=AUTH)


def test_a_stored_document_whose_metadata_cannot_be_sent_never_makes_a_search_fail(writable):
    text = "Ordubad qoz ağacları ilə məşhurdur."
    # written in process (no server check): nested deeper than any JSON serialiser goes
    writable.service.write(lambda writer: writer.add([text], ids=["deep"], metadata=[_nested(300)]), True)
    try:
        response = writable.client.post("/search", json={"queries": [text], "k": 3})
        assert response.status_code == 200, response.text
        hits = {hit["id"]: hit for hit in response.json()["results"][0]["hits"]}
        assert hits["deep"]["metadata"] is None and hits["deep"]["text"] == text
    finally:
        writable.service.write(lambda writer: writer.delete(["deep"]), False)


# ------------------------------------------------------------------------------------------------ the command
def test_serve_refuses_unsafe_or_impossible_connection_settings_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLBERT_AZ_API_KEY", raising=False)
    monkeypatch.delenv("NO_SUCH_QDRANT_KEY", raising=False)
    cases = [
        ([str(tmp_path), "--host", "0.0.0.0"], "--allowed-host"),
        ([str(tmp_path), "--host", "::"], "--allowed-host"),
        ([str(tmp_path), "--allowed-host", "a*b"], "must be a name"),
        ([str(tmp_path), "--header-timeout", "-1"], "--header-timeout must be"),
        ([str(tmp_path), "--body-timeout", "0"], "--body-timeout must be"),
        ([str(tmp_path), "--limit-concurrency", "0"], "--limit-concurrency must be"),
        ([str(tmp_path), "--max-metadata-depth", "0"], "--max-metadata-depth must be"),
        ([str(tmp_path), "--qdrant-api-key-env", "NO_SUCH_QDRANT_KEY"], "give its --url"),
        (["coll", "--url", "http://127.0.0.1:9", "--qdrant-api-key-env", "NO_SUCH_QDRANT_KEY"], "is not set"),
    ]
    for argv, message in cases:
        assert main(["serve", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_serve_url_names_a_qdrant_collection_and_an_unreachable_server_is_one_line(capsys, monkeypatch):
    require_extra("qdrant_client", "qdrant")
    from colbert_az_pylate.cli import serve as serve_cli

    opened = {}

    def fake_open(settings):  # the plumbing: what the server would open
        opened.update(settings)
        raise SystemExit(0)

    monkeypatch.setenv("MY_QDRANT_KEY", "qdrant-secret")
    monkeypatch.setattr(serve_cli, "build_app", lambda settings: fake_open(settings))
    with pytest.raises(SystemExit):
        main(
            [
                "serve",
                "colbert-az-docs",
                "--url",
                "http://qdrant.internal:6333",
                "--qdrant-api-key-env",
                "MY_QDRANT_KEY",
            ]
        )
    assert opened["index"] == "colbert-az-docs" and opened["url"] == "http://qdrant.internal:6333"
    assert opened["qdrant_api_key_env"] == "MY_QDRANT_KEY" and "qdrant-secret" not in json.dumps(opened)
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["serve", "colbert-az-docs", "--url", "http://127.0.0.1:9"]) == 2  # nothing listens there
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and "cannot reach the Qdrant server" in err[-1], err


# ------------------------------------------------------------------------------------------------ scale-out
def _await_health(process, client: httpx.Client, timeout: float = 120) -> None:
    """Poll ``/health`` until the served command answers; if it exits first, fail with the tail of its stderr."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_worker_processes_answer_every_request_of_concurrent_clients_correctly(model, tmp_path):
    """The real command with ``--workers 2`` (each worker its own model and read-only view of the index): eight
    clients at once, every answer the in-process Searcher's."""
    import os
    import subprocess
    import sys

    local = _new_index(model, tmp_path / "index")
    queries = [TEXTS[name] for name in TEXTS] + ["Bakı", "saray", "poema", "çay", "alma", "dəniz"]
    expected = {query: [hit.id for hit in local.search(query, k=3)] for query in queries}
    local.index_store.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "colbert_az_pylate", "serve", str(tmp_path / "index"), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", "2", "--header-timeout", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            _await_health(process, client)

            def client_loop(number: int) -> list[str]:
                problems = []
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as own:
                    for step in range(8):
                        query = queries[(number + step) % len(queries)]
                        response = own.post("/search", json={"queries": [query], "k": 3})
                        if response.status_code != 200:
                            problems.append(f"{response.status_code} {response.text}")
                        elif [hit["id"] for hit in response.json()["results"][0]["hits"]] != expected[query]:
                            problems.append(f"wrong hits for {query!r}")
                return problems

            with ThreadPoolExecutor(8) as pool:
                problems = [problem for found in pool.map(client_loop, range(8)) for problem in found]
            assert not problems, problems[:5]
            health = client.get("/health").json()
            assert health["writable"] is False and health["documents"] == len(TEXTS)
            refused = client.post("/documents", json={"documents": [{"id": "w", "text": "Wörter"}]})
            _assert_one_line_error(refused, 403)
            silent = socket.create_connection(("127.0.0.1", port), timeout=10)  # each worker has the header timeout
            try:
                started = time.monotonic()
                answer = _read_all(silent)
                assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 8, answer[:200]
            finally:
                silent.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        process.stderr.close()


@pytest.mark.slow
def test_a_server_whose_stderr_nobody_reads_keeps_answering_and_its_log_is_not_lost(model, tmp_path):
    """The access log goes through a writer thread: with stderr a pipe that nobody reads (it fills at 64 KiB, about
    600 access lines), requests are still answered; once the pipe is read, every line is there."""
    import os
    import subprocess
    import sys

    _new_index(model, tmp_path / "index").index_store.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "colbert_az_pylate", "serve", str(tmp_path / "index"), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    requests = 2000  # about 200 KB of access lines: three times what the pipe holds
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            _await_health(process, client)
            statuses = [client.get("/health").status_code for _ in range(requests)]  # a 20 s timeout each
            assert statuses == [200] * requests
            assert client.post("/search", json={"queries": ["Bakı"], "k": 1}).status_code == 200
    finally:
        process.terminate()
        _, log = process.communicate(timeout=60)  # the pipe is read at last: the writer thread finishes
    lines = log.decode().splitlines()
    assert sum('"GET /health" 200' in line for line in lines) >= requests, lines[-5:]
    assert any('"POST /search" 200' in line for line in lines)
    assert not any("dropped" in line for line in lines)


def test_a_qdrant_index_takes_concurrent_writes_and_searches_and_loses_nothing(model, tmp_path):
    """A store the searches share (embedded Qdrant): its writes, not their encodings, exclude the searches."""
    require_extra("qdrant_client", "qdrant")
    searcher = Searcher(model, tmp_path / "qdrant", backend="qdrant", show_progress_bar=False)
    searcher.index(list(TEXTS.values()), ids=list(TEXTS))
    server = Server(create_app(searcher, api_key=KEY, batch_wait_ms=5))
    failures, acknowledged = [], []
    try:

        def write(worker: int) -> None:
            for batch in range(2):
                docs = [
                    {"id": f"q{worker}-{batch}-{n}", "text": f"Qdrant {worker} {batch} {n}: Şamaxı"} for n in range(3)
                ]
                response = server.client.post("/documents", json={"documents": docs}, headers=AUTH)
                if response.status_code == 200:
                    acknowledged.extend(docs)
                else:
                    failures.append(response.text)

        def read(_: int) -> None:
            for _ in range(4):
                response = server.client.post("/search", json={"queries": ["Şamaxı"], "k": 5})
                if response.status_code != 200:
                    failures.append(response.text)

        with ThreadPoolExecutor(6) as pool:
            jobs = [(write, w) for w in range(3)] + [(read, r) for r in range(3)]
            list(pool.map(lambda job: job[0](job[1]), jobs))
        assert not failures, failures[:3]
        assert len(acknowledged) == 18
        for doc in acknowledged:
            hits = _search(server, doc["text"], k=1, subset=[doc["id"]])
            assert hits and hits[0]["id"] == doc["id"]
        _wait_until(lambda: server.client.get("/health").json()["documents"] == len(TEXTS) + 18, timeout=5)
    finally:
        server.stop()
        searcher.index_store.close()


def test_a_lone_query_does_not_wait_for_company_and_concurrent_ones_still_share_a_pass():
    import asyncio

    from colbert_az_pylate.serving import MicroBatcher

    calls, others = [], [False]

    def lengths(texts):
        calls.append(len(texts))
        return [len(text) for text in texts]

    async def run():
        batcher = MicroBatcher(lengths, wait_ms=300, company=lambda: others[0])
        try:
            began = asyncio.get_running_loop().time()
            assert await batcher.encode(["Bakı"]) == [4]
            alone = asyncio.get_running_loop().time() - began
            others[0] = True
            together = await asyncio.gather(batcher.encode(["Şəki"]), batcher.encode(["Quba", "Gəncə"]))
            return alone, together
        finally:
            await batcher.close()

    alone, together = asyncio.run(run())
    assert alone < 0.2 and together == [[4], [4, 5]] and calls == [1, 3]


def test_document_embeddings_stop_at_the_next_chunk_when_their_client_goes(keyless, monkeypatch):
    service, chunks, started = keyless.service, [], threading.Event()
    real = service.reader.model.encode

    def slow(texts, *args, **kwargs):
        if kwargs.get("is_query") is False:
            chunks.append(len(texts))
            started.set()
            time.sleep(0.2)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(service.reader.model, "encode", slow)
    monkeypatch.setattr(service, "document_budget", 64)  # eight small chunks: within --max-response-bytes
    texts = _texts_in_chunks(service, 8)
    gone = _connect(keyless)
    gone.sendall(_raw_request("/v1/embeddings", {"input": texts, "is_query": False}))
    assert started.wait(10)
    gone.close()
    _wait_until(lambda: not service.bulk_slot.locked(), timeout=10)  # the slot is free again
    assert len(chunks) < 8
    answer = keyless.client.post("/v1/embeddings", json={"input": texts[:2], "is_query": False})
    assert answer.status_code == 200 and len(answer.json()["data"]) == 2
