"""QdrantIndex on the embedded client: MaxSim scores, ids, payloads, upserts, deletes, signatures, server errors."""

from __future__ import annotations

import http.server
import itertools
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from extras import require_extra

require_extra("qdrant_client", "qdrant")

from colbert_az_pylate.errors import (  # noqa: E402
    ColbertAzError,
    IndexFormatError,
    InvalidArgumentError,
    OutputExistsError,
)
from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex, point_id  # noqa: E402
from colbert_az_pylate.retrieval.voyager_index import ModelSignature, VoyagerIndex  # noqa: E402
from colbert_az_pylate.scores import packed_maxsim_scores  # noqa: E402

DIM = 16


def _documents(count=40, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(3, 12)), DIM)).astype("float32") for _ in range(count)]


def _unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _maxsim(query, documents):
    packed = np.concatenate([_unit(d) for d in documents])
    starts = np.cumsum([0] + [len(d) for d in documents[:-1]])
    return packed_maxsim_scores(_unit(query), packed, starts)


@pytest.fixture
def index(tmp_path):
    opened = QdrantIndex(tmp_path, "qdrant", embedding_size=DIM)
    yield opened
    opened.close()


def test_scores_are_maxsim_over_normalised_vectors_in_exact_order(index):
    documents = _documents()
    ids = [f"doc {i} · Şəki" for i in range(len(documents))]
    index.add_documents(ids, documents)
    queries = _documents(5, seed=1)
    for query, hits in zip(queries, index(queries, k=len(ids)), strict=True):
        expected = dict(zip(ids, _maxsim(query, documents).tolist(), strict=True))
        assert {hit["id"] for hit in hits} == set(ids)
        for hit in hits:
            assert abs(hit["score"] - expected[hit["id"]]) < 1e-4
        ranked = [expected[hit["id"]] for hit in hits]
        assert all(a >= b - 1e-5 for a, b in itertools.pairwise(ranked))  # best first, by the exact scores


def test_scores_equal_the_model_cards_code(tmp_path):
    from tiny_checkpoints import build_checkpoint

    from colbert_az_pylate import ReferenceColBERT, convert, load

    raw = build_checkpoint(tmp_path / "raw", "gemma", embedding_dim=DIM)
    convert(raw, tmp_path / "model", verify=False)
    model = load(tmp_path / "model")
    corpus = ["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı XVIII əsrdə tikilib.", "Xəzər dənizi böyükdür."]
    queries = ["Azərbaycanın paytaxtı hansı şəhərdir?", "Şəki sarayı"]
    index = QdrantIndex(tmp_path, "q", model=ModelSignature.of_model(model))
    index.add_documents(["0", "1", "2"], model.encode(corpus, is_query=False, show_progress_bar=False))
    hits = index(model.encode(queries, is_query=True, show_progress_bar=False), k=3)
    expected = ReferenceColBERT.from_pretrained(raw).score(queries, corpus)
    for row, query_hits in enumerate(hits):
        for hit in query_hits:
            reference = float(expected[row][int(hit["id"])])
            assert abs(hit["score"] - reference) <= 1e-4 * max(abs(reference), 1)
    index.close()


def test_any_string_id_round_trips_and_stored_vectors_are_the_normalised_input(index):
    documents = _documents(3)
    ids = ["a", "Azərbaycan / 1 ? #x", "x" * 500]
    index.add_documents(ids, documents, payloads=[{"text": "bir"}, {"text": "iki", "metadata": {"n": 2}}, {}])
    assert index.payload(ids[1]) == {"text": "iki", "metadata": {"n": 2}}
    assert [ids[1] in index, "b" in index, len(index)] == [True, False, 3]
    stored = index.get_documents_embeddings([[ids[2], ids[0]], [ids[1]]])
    assert np.abs(stored[0][0] - _unit(documents[2])).max() < 1e-6
    assert [len(group) for group in stored] == [2, 1]
    assert point_id(ids[1]) == point_id("Azərbaycan / 1 ? #x") != point_id("a")


def test_an_existing_id_is_refused_without_upsert_and_replaced_with_it(index):
    documents = _documents(3)
    index.add_documents(["a", "b"], documents[:2], payloads=[{"text": "old"}, {}])
    with pytest.raises(InvalidArgumentError, match="already in the index"):
        index.add_documents(["c", "a"], documents[1:3])
    assert "c" not in index  # nothing was added
    index.add_documents(["a"], documents[2:3], upsert=True, payloads=[{"text": "new"}])
    assert len(index) == 2 and index.payload("a") == {"text": "new"}
    assert np.abs(index.document_embeddings("a") - _unit(documents[2])).max() < 1e-6
    assert index([documents[2]], k=1)[0][0]["id"] == "a"


def test_removing_deletes_and_an_unknown_id_removes_nothing(index):
    index.add_documents(["a", "b", "c"], _documents(3))
    with pytest.raises(InvalidArgumentError, match="not in the index"):
        index.remove_documents(["a", "zzz"])
    assert len(index) == 3
    index.remove_documents("a")
    assert len(index) == 2 and "a" not in index
    assert {hit["id"] for hit in index(_documents(1, seed=3), k=10)[0]} == {"b", "c"}


def test_uploads_go_in_batches_and_bad_input_is_refused_before_any_upload(index, monkeypatch):
    calls = []
    upsert = index.client.upsert
    monkeypatch.setattr(index.client, "upsert", lambda *a, **kw: calls.append(len(kw["points"])) or upsert(*a, **kw))
    index.add_documents([str(i) for i in range(5)], _documents(5), batch_size=2)
    assert calls == [2, 2, 1]
    bad = _documents(2)
    bad[1][0] = np.nan
    for ids, docs, kwargs, message in [
        (["x", "y"], bad, {}, "NaN"),
        (["x", "y"], [np.ones((2, DIM + 1), "f4")] * 2, {}, "dimension"),
        (["x", "y"], _documents(2), {"payloads": [{"document_id": 1}, {}]}, "reserved"),
        (["x", "y"], _documents(2), {"payloads": [{"v": {1, 2}}, {}]}, "JSON"),
        (["x", "x"], _documents(2), {}, "duplicate"),
        (["x", "y"], [np.zeros((2, DIM), "f4")] * 2, {}, "all-zero"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            index.add_documents(ids, docs, **kwargs)
    assert calls == [2, 2, 1] and len(index) == 5


def test_first_stage_and_subsets(index):
    documents = _documents(30)
    ids = [f"d{i}" for i in range(30)]
    index.add_documents(ids, documents)
    queries = [d[:3] for d in documents[:4]]
    exact = index.search(queries, k=5)
    everything = index.search(queries, k=5, first_stage=30)  # a first stage that keeps everything changes nothing
    assert [[h["id"] for h in hits] for hits in everything] == [[h["id"] for h in hits] for hits in exact]
    assert np.allclose(
        [[h["score"] for h in hits] for hits in everything], [[h["score"] for h in hits] for hits in exact]
    )
    staged = index.search(queries, k=5, first_stage=8)
    assert all(len(hits) == 5 for hits in staged)
    assert [hits[0]["id"] for hits in staged] == ids[:4]  # each query is part of its own document
    per_query = index(queries[:2], k=5, subset=[["d5", "d6"], ["d7"]])
    assert [{h["id"] for h in hits} for hits in per_query] == [{"d5", "d6"}, {"d7"}]
    with pytest.raises(InvalidArgumentError, match="one list per query"):
        index(queries[:2], k=5, subset=[["d5"]])


def test_an_empty_index_cannot_be_searched(index):
    with pytest.raises(ColbertAzError, match="empty"):
        index(_documents(1), k=3)


def test_the_model_signature_is_stored_and_checked_on_open(tmp_path):
    model = ModelSignature("colbert-az", DIM, "aaaa")
    QdrantIndex(tmp_path, "q", model=model).add_documents(["a"], _documents(1)).close()
    reopened = QdrantIndex(tmp_path, "q", model=model)  # embedding_size from the signature
    assert reopened.embedding_size == DIM and reopened.model == model.to_dict() and len(reopened) == 1
    reopened.close()
    for other, message in [
        (ModelSignature("other", DIM, "bbbb"), "was built with colbert-az"),
        (ModelSignature("colbert-az", DIM * 2, "aaaa"), "was built with colbert-az"),
    ]:
        with pytest.raises(IndexFormatError, match=message) as error:
            QdrantIndex(tmp_path, "q", model=other)
        assert "\n" not in str(error.value)
    with pytest.raises(IndexFormatError, match=f"holds dimension {DIM}, not 128"):
        QdrantIndex(tmp_path, "q")
    replaced = QdrantIndex(tmp_path, "q", override=True, model=ModelSignature("other", 8, "bbbb"))
    assert len(replaced) == 0 and replaced.embedding_size == 8
    replaced.close()


def test_a_collection_not_made_by_us_is_refused(tmp_path):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("colbert", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    client.close()
    with pytest.raises(OutputExistsError, match="not created by colbert-az-pylate"):
        QdrantIndex(tmp_path, "q", embedding_size=DIM)
    QdrantIndex(tmp_path, "q", embedding_size=DIM, override=True).close()


def test_folders_that_are_not_qdrant_indexes_are_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a Qdrant index"):
        QdrantIndex(tmp_path, "mine", embedding_size=DIM)
    VoyagerIndex(tmp_path, "voyager", embedding_size=DIM).add_documents(["a"], _documents(1)).close()
    with pytest.raises(OutputExistsError, match="Voyager or PLAID"):
        QdrantIndex(tmp_path, "voyager", embedding_size=DIM)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        QdrantIndex(tmp_path / "file", "q", embedding_size=DIM)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_two_objects_of_one_process_share_the_folder_and_another_process_is_refused(tmp_path):
    first = QdrantIndex(tmp_path, "q", embedding_size=DIM).add_documents(["a"], _documents(1))
    second = QdrantIndex(tmp_path, "q", embedding_size=DIM)
    assert len(second) == 1
    script = textwrap.dedent(
        f"""
        from colbert_az_pylate.errors import IndexLockedError
        from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex
        try:
            QdrantIndex({str(tmp_path)!r}, "q", embedding_size={DIM})
        except IndexLockedError as error:
            print("LOCKED", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "LOCKED another process has the Qdrant index" in result.stdout, result.stderr
    first.close()
    second.close()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "LOCKED" not in result.stdout and result.returncode == 0, result.stderr


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_is_one_line_after_the_retries():
    started = time.monotonic()
    with pytest.raises(ColbertAzError) as error:
        QdrantIndex(url=f"http://127.0.0.1:{_unused_port()}", retries=2, timeout=5)
    message = str(error.value)
    assert message.startswith("cannot reach the Qdrant server at http://127.0.0.1:") and "\n" not in message
    assert "after 2 tries" in message and time.monotonic() - started < 30


@pytest.fixture
def fake_server():
    """An HTTP server answering every request with one status (what a Qdrant behind a key or in trouble says)."""
    answers = {"status": 401, "body": b"Must provide an API key or an Authorization bearer token", "count": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            answers["count"] += 1
            self.send_response(answers["status"])
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answers["body"])))
            self.end_headers()
            self.wfile.write(answers["body"])

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer  # noqa: N815 - http.server names

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def test_a_wrong_api_key_is_one_line_and_not_retried(fake_server):
    url, answers = fake_server
    with pytest.raises(ColbertAzError) as error:
        QdrantIndex(url=url, api_key="wrong", collection="docs")
    assert str(error.value).startswith(f"the Qdrant server at {url} refused the API key (401")
    assert "\n" not in str(error.value) and answers["count"] == 1


def test_server_errors_are_retried_then_reported_in_one_line(fake_server):
    url, answers = fake_server
    answers.update(status=503, body=b'{"status": {"error": "Service temporarily unavailable"}}')
    with pytest.raises(ColbertAzError) as error:
        QdrantIndex(url=url, collection="docs", retries=3)
    assert answers["count"] == 3
    assert str(error.value) == (
        f"the Qdrant server at {url} failed checking the collection after 3 tries: 503 Service temporarily unavailable"
    )


def test_a_transient_server_error_during_upload_is_retried(index, monkeypatch):
    from qdrant_client.http.exceptions import UnexpectedResponse

    failures, upsert = [], index.client.upsert

    def flaky(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise UnexpectedResponse(503, "Service Unavailable", b"", {})
        return upsert(*args, **kwargs)

    monkeypatch.setattr(index.client, "upsert", flaky)
    index.add_documents(["a", "b"], _documents(2))
    assert len(failures) == 2 and len(index) == 2


def test_without_qdrant_client_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(ColbertAzError, match=r'pip install "colbert-az-pylate\[qdrant\]"'):
        QdrantIndex(tmp_path, "q")


def test_the_package_imports_no_qdrant_client():
    code = (
        "import sys, colbert_az_pylate, colbert_az_pylate.retrieval, colbert_az_pylate.retrieval.qdrant_index, "
        "colbert_az_pylate.cli; print('qdrant_client' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_voyager_refuses_a_qdrant_folder_in_one_line_and_the_searcher_finds_its_backend(tmp_path):
    from colbert_az_pylate.retrieval.folders import check_backend

    QdrantIndex(tmp_path, "q", embedding_size=DIM).add_documents(["a"], _documents(1)).close()
    with pytest.raises(OutputExistsError, match="holds an embedded Qdrant index: open it with"):
        VoyagerIndex(tmp_path, "q", embedding_size=DIM)
    assert check_backend(tmp_path / "q", None) == "qdrant"
    with pytest.raises(OutputExistsError, match="holds a Qdrant index, not a PLAID one"):
        check_backend(tmp_path / "q", "plaid")
    reopened = QdrantIndex(tmp_path, "q", embedding_size=DIM)
    assert len(reopened) == 1
    reopened.close()


class _Planted:
    """A pickle that would run code when loaded: it creates the marker file."""

    def __init__(self, reduce_to):
        self.reduce_to = reduce_to

    def __reduce__(self):
        return self.reduce_to


def _plant(folder, blob, key=None):
    """Put ``blob`` into the embedded collection's SQLite storage: over an existing row, or as a new one."""
    import sqlite3

    (storage,) = folder.glob("collection/*/storage.sqlite")
    with sqlite3.connect(storage) as connection:
        if key is None:
            connection.execute("UPDATE points SET point = ?", (blob,))
        else:
            connection.execute("INSERT INTO points VALUES (?, ?)", (key, blob))
    connection.close()


@pytest.mark.parametrize(
    "planted",
    [
        lambda marker: _Planted((os.system, (f"touch {marker}",))),
        lambda marker: _Planted((exec, (f"open({str(marker)!r}, 'w').close()",))),
        lambda marker: [{"vector": _Planted((exec, (f"open({str(marker)!r}, 'w').close()",)))}],
        lambda marker: _Planted((eval, (f"open({str(marker)!r}, 'w')",))),
    ],
    ids=["os.system", "builtins.exec", "nested", "builtins.eval"],
)
@pytest.mark.parametrize("where", ["over a stored point", "as a new row"])
def test_a_planted_pickle_in_the_embedded_storage_is_refused_and_never_runs(tmp_path, planted, where):
    import pickle

    from qdrant_client.local import persistence

    documents = _documents(3)
    QdrantIndex(tmp_path, "q", embedding_size=DIM).add_documents(["a", "b", "c"], documents).close()
    marker = tmp_path / "marker"
    blob = pickle.dumps(planted(marker))
    _plant(tmp_path / "q", blob, key=None if where == "over a stored point" else "planted")
    with pytest.raises(IndexFormatError) as refused:
        QdrantIndex(tmp_path, "q", embedding_size=DIM)
    message = str(refused.value)
    assert "\n" not in message and "holds a stored point that would build" in message
    assert str(tmp_path / "q") in message
    assert not marker.exists()
    assert persistence.pickle is pickle  # qdrant-client's module is as it was once our call is over


def test_a_damaged_stored_point_is_one_line(tmp_path):
    QdrantIndex(tmp_path, "q", embedding_size=DIM).add_documents(["a"], _documents(1)).close()
    _plant(tmp_path / "q", b"\x80\x04\x95garbage")
    with pytest.raises(IndexFormatError, match="holds a damaged stored point") as refused:
        QdrantIndex(tmp_path, "q", embedding_size=DIM)
    assert "\n" not in str(refused.value)


def test_a_planted_storage_in_a_new_collections_folder_is_refused(tmp_path):
    """Creating a collection loads any storage already in its folder: that load is guarded too."""
    import pickle
    import shutil

    QdrantIndex(tmp_path, "donor", embedding_size=DIM).add_documents(["a"], _documents(1)).close()
    marker = tmp_path / "marker"
    _plant(tmp_path / "donor", pickle.dumps(_Planted((os.system, (f"touch {marker}",)))))
    target = tmp_path / "fresh" / "collection" / "colbert"
    target.mkdir(parents=True)
    shutil.copy(next((tmp_path / "donor").glob("collection/*/storage.sqlite")), target / "storage.sqlite")
    with pytest.raises(IndexFormatError, match=r"would build (posix|os)\.system"):
        QdrantIndex(tmp_path, "fresh", embedding_size=DIM)
    assert not marker.exists()


def test_guarded_reopen_searches_as_before_and_other_qdrant_use_is_untouched(tmp_path):
    import pickle

    from qdrant_client.local import persistence

    documents = _documents(6)
    ids = list("abcdef")
    payloads = [{"text": f"mətn {i}", "metadata": {"n": i, "tags": ["x", None, 1.5, True]}} for i in range(6)]
    QdrantIndex(tmp_path, "q", embedding_size=DIM).add_documents(ids, documents, payloads=payloads).close()
    reopened = QdrantIndex(tmp_path, "q", embedding_size=DIM)
    assert len(reopened) == 6 and reopened.payload("d") == payloads[3]
    assert reopened([documents[4]], k=1)[0][0]["id"] == "e"
    reopened.close()
    assert persistence.pickle is pickle
    # inside a guarded call, a thread that is not ours still unpickles with the ordinary pickle
    from colbert_az_pylate.retrieval.qdrant_guard import guarded

    seen = []
    with guarded(tmp_path / "q"):
        assert persistence.pickle is not pickle
        worker = threading.Thread(target=lambda: seen.append(persistence.pickle.loads(pickle.dumps({1, 2}))))
        worker.start()
        worker.join()
        with pytest.raises(IndexFormatError):
            persistence.pickle.loads(pickle.dumps(_Planted((os.system, ("true",)))))
    assert seen == [{1, 2}] and persistence.pickle is pickle


def _interrupt_upload(index, monkeypatch, after: int) -> list[int]:
    """Make the index's upload request number ``after + 1`` raise KeyboardInterrupt (as Ctrl-C would)."""
    upsert, sent = index.client.upsert, []

    def interrupted(*args, **kwargs):
        if len(sent) == after:
            raise KeyboardInterrupt
        sent.append(len(kwargs["points"]))
        return upsert(*args, **kwargs)

    monkeypatch.setattr(index.client, "upsert", interrupted)
    return sent


def test_ctrl_c_during_add_documents_removes_what_the_call_added_and_the_rerun_works(index, monkeypatch):
    index.add_documents(["kept"], _documents(1, seed=9), payloads=[{"v": 1}])
    ids, documents = [f"d{i}" for i in range(10)], _documents(10)
    sent = _interrupt_upload(index, monkeypatch, after=3)
    with pytest.raises(KeyboardInterrupt):
        index.add_documents(ids, documents, batch_size=2)
    assert sent == [2, 2, 2] and len(index) == 1 and "kept" in index  # 6 points were written, all removed
    monkeypatch.undo()
    index.add_documents(ids, documents, batch_size=2)  # the rerun is not refused
    assert len(index) == 11


def test_ctrl_c_during_an_upsert_removes_only_new_documents(index, monkeypatch):
    index.add_documents(["a", "b"], _documents(2, seed=9))
    sent = _interrupt_upload(index, monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        index.add_documents(["a", "n1", "n2", "n3"], _documents(4), batch_size=2, upsert=True)
    assert sent == [2] and len(index) == 2 and "a" in index and "b" in index and "n1" not in index


def test_ctrl_c_inside_a_batch_removes_every_write_of_the_batch(index, monkeypatch):
    sent = _interrupt_upload(index, monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt), index.batch():
        index.write_entries(["a", "b"], _documents(2), [{}, {}], upsert=False, stale=[])
        index.write_entries(["c", "d"], _documents(2, seed=2), [{}, {}], upsert=False, stale=[])
        index.write_entries(["e", "f"], _documents(2, seed=3), [{}, {}], upsert=False, stale=[])
    assert sent == [2, 2] and len(index) == 0
    monkeypatch.undo()
    with index.batch():
        index.write_entries(["a", "b"], _documents(2), [{}, {}], upsert=False, stale=[])
    assert len(index) == 2
