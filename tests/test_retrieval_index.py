"""VoyagerIndex: pylate's interface, exact rerank, persistence, deletes/upserts, bad input, crash safety."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, IndexLockedError
from colbert_az_pylate.retrieval.voyager_index import MANIFEST, ModelSignature, VoyagerIndex
from colbert_az_pylate.scores import packed_maxsim_scores

DIM = 16


def random_documents(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(3, 12)), DIM)).astype(np.float32) for _ in range(count)]


def normalized(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def brute_force(query: np.ndarray, documents: list[np.ndarray], k: int) -> list[int]:
    stored = [normalized(d).astype(np.float16).astype(np.float32) for d in documents]
    starts = np.cumsum([0] + [len(d) for d in stored[:-1]])
    scores = packed_maxsim_scores(query, np.concatenate(stored), starts)
    return np.argsort(-scores, kind="stable")[:k].tolist()


@pytest.fixture
def documents():
    return random_documents(120)


@pytest.fixture
def index(tmp_path, documents):
    built = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, M=16, ef_construction=100, storage="float32")
    built.add_documents([f"d{i}" for i in range(len(documents))], documents)
    return built


@pytest.fixture
def queries():
    rng = np.random.default_rng(1)
    return [normalized(rng.standard_normal((6, DIM)).astype(np.float32)) for _ in range(8)]


def test_search_finds_the_exact_maxsim_top_k_on_a_small_corpus(index, documents, queries):
    for query, hits in zip(queries, index.search(queries, k=5, k_token=200), strict=True):
        assert [h["id"] for h in hits] == [f"d{i}" for i in brute_force(query, documents, 5)]


def test_exact_search_equals_brute_force_maxsim(index, documents, queries):
    hits = index.exact_search(queries, k=7)
    for query, ranked in zip(queries, hits, strict=True):
        assert [h["id"] for h in ranked] == [f"d{i}" for i in brute_force(query, documents, 7)]


def test_pylate_retrieve_colbert_works_unchanged_with_the_index(index, documents, queries):
    from pylate.retrieve import ColBERT

    results = ColBERT(index=index).retrieve(queries, k=5, k_token=200)
    for query, hits in zip(queries, results, strict=True):
        assert [h["id"] for h in hits] == [f"d{i}" for i in brute_force(query, documents, 5)]
    tokens = index(queries[:2], k=3)
    assert len(tokens["documents_ids"]) == 2 and len(tokens["documents_ids"][0]) == 6
    assert all(len(neighbours) == 3 for neighbours in tokens["documents_ids"][0])


def test_reopening_restores_ids_vectors_payloads_and_results(tmp_path, documents, queries):
    first = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    first.add_documents(["a", "b"], documents[:2], payloads=[{"text": "bir"}, {"text": "iki"}])
    first.add_documents([f"d{i}" for i in range(2, 50)], documents[2:50])
    expected = first.search(queries, k=5)
    first.close()
    reopened = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    assert len(reopened) == 50 and reopened.payload("b") == {"text": "iki"}
    np.testing.assert_allclose(reopened.document_embeddings("a"), normalized(documents[0]), atol=2e-3)
    assert reopened.search(queries, k=5) == expected
    assert not list(Path(tmp_path, "idx").glob("*.pkl"))


def test_removed_documents_leave_results_and_the_store(index, queries, tmp_path):
    winners = {hits[0]["id"] for hits in index.search(queries, k=1)}
    index.remove_documents(sorted(winners))
    for hits in index.search(queries, k=10) + index.exact_search(queries, k=10):
        assert not winners & {h["id"] for h in hits}
    rows_before = index.rows
    index.compact()
    assert index.rows < rows_before and len(index) == 120 - len(winners)
    reopened = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)
    assert all(w not in reopened for w in winners)
    assert not winners & {h["id"] for hits in reopened.search(queries, k=10) for h in hits}


def test_re_adding_an_id_errors_unless_upsert(index, documents):
    with pytest.raises(ColbertAzError, match="upsert=True"):
        index.add_documents(["d3"], [documents[0]])
    index.add_documents(["d3"], [documents[0]], upsert=True)
    np.testing.assert_allclose(index.document_embeddings("d3"), normalized(documents[0]), atol=2e-3)
    assert len(index) == 120


def test_subset_restricts_results(index, queries):
    hits = index.search(queries[:1], k=5, k_token=200, subset=["d7", "d9", "nope"])[0]
    assert {h["id"] for h in hits} <= {"d7", "d9"} and hits


def test_k_larger_than_the_corpus_returns_every_document(tmp_path, documents, queries):
    small = VoyagerIndex(str(tmp_path), "small", embedding_size=DIM)
    small.add_documents(["x", "y", "z"], documents[:3])
    assert len(small.search(queries[:1], k=50)[0]) == 3
    assert len(small(queries[:1], k=500)["documents_ids"][0][0]) == sum(len(d) for d in documents[:3])


@pytest.mark.parametrize(
    ("ids", "embeddings", "message"),
    [
        ([], [], "no document ids"),
        (["a", "a"], random_documents(2), "duplicate document ids"),
        ([1, 2], random_documents(2), "not a non-empty string"),
        (["a"], [np.ones((3, DIM + 1), np.float32)], "dimension 17"),
        (["a"], [np.ones((0, DIM), np.float32)], "non-empty"),
        (["a"], [np.full((2, DIM), np.nan, np.float32)], "NaN"),
        (["a", "b"], random_documents(1), "2 ids but 1"),
    ],
)
def test_bad_documents_get_one_line_errors_and_change_nothing(tmp_path, ids, embeddings, message):
    empty = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    with pytest.raises(ColbertAzError, match=message) as error:
        empty.add_documents(ids, embeddings)
    assert "\n" not in str(error.value) and len(empty) == 0


def test_querying_an_empty_index_is_a_clear_error(tmp_path, queries):
    empty = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    with pytest.raises(ColbertAzError, match="empty"):
        empty.search(queries[:1])
    with pytest.raises(ColbertAzError, match="dimension"):
        empty.search([np.ones((2, DIM + 3), np.float32)])


def test_another_model_or_a_newer_format_is_refused(tmp_path, documents):
    signature = ModelSignature("colbert-az", DIM, "aaaa")
    VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, model=signature).add_documents(["a"], documents[:1])
    with pytest.raises(IndexFormatError, match="fingerprint bbbb"):
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, model=ModelSignature("colbert-az", DIM, "bbbb"))
    manifest = tmp_path / "idx" / MANIFEST
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(IndexFormatError, match="upgrade colbert-az-pylate"):
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)


def test_corrupted_truncated_or_pickled_files_are_refused_without_running_code(index, tmp_path):
    folder = tmp_path / "idx"
    graph = next(folder.glob("hnsw.*.voyager"))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupted"):
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)

    sentinel = tmp_path / "pwned"
    docs = next(folder.glob("docs.*.npz"))
    docs.write_bytes(pickle.dumps(_Exploit(str(sentinel))))
    with pytest.raises(IndexFormatError):
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    assert not sentinel.exists()


def test_a_truncated_vector_store_is_refused(index, tmp_path):
    store = next((tmp_path / "idx").glob("vectors.*.f16"))
    with open(store, "r+b") as handle:
        handle.truncate(store.stat().st_size // 2)
    with pytest.raises(IndexFormatError, match="truncated"):
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)


def test_one_writer_at_a_time_and_read_only_cannot_write(index, tmp_path, documents):
    reader = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)
    with pytest.raises(ColbertAzError, match="read_only"):
        reader.add_documents(["new"], documents[:1])
    code = f"""
from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex
import numpy as np
VoyagerIndex({str(tmp_path)!r}, "idx", embedding_size={DIM}).add_documents(["new"], [np.ones((2, {DIM}), "float32")])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "IndexLockedError" in result.stderr and "another process" in result.stderr
    assert IndexLockedError.__name__ in result.stderr


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from colbert_az_pylate.retrieval import voyager_index as module

    folder, mode, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = {"replace": 0, "cleanup": 0}
    real_replace = os.replace

    def replace_then_maybe_die(source, target):
        calls["replace"] += 1
        if mode == "before-rename" and calls["replace"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)

    def die_on_second_cleanup(self):  # the first cleanup follows the creation of the empty index
        calls["cleanup"] += 1
        if calls["cleanup"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    module.os.replace = replace_then_maybe_die
    if mode == "after-commit":
        module.VoyagerIndex._remove_stale = die_on_second_cleanup
    rng = np.random.default_rng(0)
    index = module.VoyagerIndex(folder, "idx", embedding_size=16)
    batch = len(index) // 40
    for _ in range(200):  # bounded: a writer that is never killed must end (and fail the test), not fill the disk
        ids = [f"b{batch}-{i}" for i in range(40)]
        vectors = [np.full((4, 16), batch + 1, np.float32) + rng.standard_normal((4, 16)).astype(np.float32) * 0.01
                   for _ in ids]
        index.add_documents(ids, vectors)
        print(batch, flush=True)
        batch += 1
    """
)


def _check_whole_batches(folder: Path) -> int:
    index = VoyagerIndex(str(folder), "idx", embedding_size=16)
    batches = {doc_id.split("-")[0] for doc_id in index.doc_ids}
    assert len(index) == 40 * len(batches)
    assert batches == {f"b{i}" for i in range(len(batches))}
    for doc_id in index.doc_ids[::7]:
        batch = int(doc_id.split("-")[0][1:])
        vectors = index.document_embeddings(doc_id)
        np.testing.assert_allclose(vectors, np.full_like(vectors, 0.25), atol=0.01)  # 16 equal components, unit norm
        assert batch >= 0
    if len(index):
        index.search([np.ones((2, 16), np.float32)], k=3)
    return len(batches)


# os.replace calls per commit: docs, ids, graph, manifest; the first commit creates the empty index.
@pytest.mark.parametrize(
    ("mode", "at"),
    [("before-rename", 2), ("before-rename", 8), ("before-rename", 10), ("before-rename", 16), ("after-commit", 0)],
)
def test_a_writer_killed_at_each_commit_phase_leaves_the_last_commit(tmp_path, mode, at):
    run = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path), mode, str(at)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == -signal.SIGKILL
    committed = len(run.stdout.split())
    found = _check_whole_batches(tmp_path)
    # killed before the manifest rename: the batch in flight is lost; after it: the batch is there
    assert found == (committed + 1 if mode == "after-commit" else committed)


def test_a_writer_killed_at_random_moments_never_loses_committed_batches(tmp_path):
    for delay in (1.5, 2.3, 3.1):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), "none", "0"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        printed = len(writer.communicate(timeout=120)[0].split())
        found = _check_whole_batches(tmp_path)
        assert found >= printed  # every batch it reported committed is there, and nothing half-written


READER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex
    index = VoyagerIndex(sys.argv[1], "idx", embedding_size=16, read_only=True)
    seen = []
    deadline = time.time() + float(sys.argv[2])
    while time.time() < deadline:
        index.refresh()
        hits = index.search([np.ones((2, 16), np.float32)], k=5)[0]
        assert all(h["id"] in index for h in hits)
        seen.append(len(index))
    print(min(seen), max(seen), len(seen))
    """
)


def test_two_readers_search_while_a_third_process_adds(tmp_path):
    seed = VoyagerIndex(str(tmp_path), "idx", embedding_size=16)
    seed.add_documents(["seed"], [np.ones((3, 16), np.float32)])
    seed.close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "none", "0"], stdout=subprocess.PIPE)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), "4"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [reader.communicate(timeout=60) for reader in readers]
    writer.kill()
    writer.communicate(timeout=120)
    for reader, (stdout, _) in zip(readers, outputs, strict=True):
        assert reader.returncode == 0
        low, high, searches = map(int, stdout.split())
        assert searches > 1 and high >= low >= 1
    assert json.loads((tmp_path / "idx" / MANIFEST).read_text())["documents"] >= 1


def test_a_reader_keeps_its_snapshot_while_a_writer_compacts(tmp_path, documents, queries):
    writer = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    writer.add_documents([f"d{i}" for i in range(30)], documents[:30], payloads=[{"n": i} for i in range(30)])
    reader = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)
    before = reader.search(queries, k=3)
    writer.remove_documents(["d0", "d1"])
    writer.compact()
    assert reader.search(queries, k=3) == before and reader.payload("d0") == {"n": 0}
    reader.refresh()
    assert "d0" not in reader and len(reader) == 28 and reader.payload("d29") == {"n": 29}


def test_a_degenerate_graph_still_answers_instead_of_raising_voyagers_recall_error(tmp_path):
    identical = [np.ones((4, DIM), np.float32) for _ in range(60)]
    index = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, M=4, ef_construction=8)
    index.add_documents([f"d{i}" for i in range(60)], identical)
    index.remove_documents([f"d{i}" for i in range(0, 60, 2)])
    hits = index.search([np.ones((2, DIM), np.float32)], k=5, k_token=200)[0]
    assert len(hits) == 5 and all(int(h["id"][1:]) % 2 == 1 for h in hits)
