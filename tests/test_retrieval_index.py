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

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, IndexLockedError, OutputExistsError
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
    assert sorted(index.doc_ids) == sorted(f"{batch}-{i}" for batch in batches for i in range(40))
    for doc_id in index.doc_ids[::7]:
        vectors = index.document_embeddings(doc_id)
        assert vectors.shape == (4, 16)
        np.testing.assert_allclose(vectors, np.full_like(vectors, 0.25), atol=0.01)  # 16 equal components, unit norm
    if len(index):  # the graph answers, from the documents that are there
        hits = index.search([np.ones((2, 16), np.float32)], k=3)[0]
        assert len(hits) == 3 and {hit["id"] for hit in hits} <= set(index.doc_ids)
    return len(batches)


# os.replace calls per commit: docs, ids, graph, manifest; the first commit creates the empty index.
@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    # one build thread: a graph of identical vectors built by several threads depends on their timing (under load
    # it once linked only 4 live documents for this query), so the test would measure the scheduler, not the index
    index = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, M=4, ef_construction=8, num_threads=1)
    index.add_documents([f"d{i}" for i in range(60)], identical)
    index.remove_documents([f"d{i}" for i in range(0, 60, 2)])
    hits = index.search([np.ones((2, DIM), np.float32)], k=5, k_token=200)[0]
    assert len(hits) == 5 and all(int(h["id"][1:]) % 2 == 1 for h in hits)


def test_a_graph_that_finds_nothing_falls_back_to_the_exact_token_neighbours(index, documents, queries):
    """Seen on a real model: after every document was upserted, HNSW found 0 of 1 neighbours (voyager's
    RecallError, once an internal error); the index answers with the exact neighbours instead."""
    from voyager import RecallError

    class GraphFindingNothing:
        def query(self, *args, **kwargs):
            raise RecallError("Only found 0 of 1 neighbours")

    index.remove_documents(["d0", "d1"])
    index.graph = GraphFindingNothing()
    for query, hits in zip(queries, index.search(queries, k=5, k_token=400), strict=True):
        expected = [f"d{i}" for i in brute_force(query, documents, 7) if i > 1][:5]
        assert [h["id"] for h in hits] == expected
    neighbours = index(queries[:1], k=3)
    stored = np.concatenate([normalized(d) for d in documents[2:]])
    similarity = normalized(queries[0]) @ stored.T
    assert np.allclose(1 - np.sort(similarity, axis=1)[:, ::-1][:, :3], neighbours["distances"][0], atol=2e-3)
    assert not {"d0", "d1"} & {i for row in neighbours["documents_ids"][0] for i in row}


# ---------------------------------------------------------------------------------------- override, folders, locks
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def test_override_keeps_the_old_index_until_the_new_one_commits_and_never_deletes_unrelated_files(
    index, tmp_path, documents
):
    folder = tmp_path / "idx"
    (folder / "notes.txt").write_text("mine")
    before = _files(folder)
    fresh = VoyagerIndex(str(tmp_path), "idx", override=True, embedding_size=DIM)
    assert len(fresh) == 0 and _files(folder) == before  # nothing written yet
    with pytest.raises(ColbertAzError, match="duplicate document ids"):
        fresh.add_documents(["x", "x"], documents[:2])
    reader = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)
    assert len(reader) == 120 and _files(folder) == before  # a bad corpus leaves the old index as it was
    fresh.add_documents(["x", "y"], documents[:2])
    assert VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True).doc_ids == ["x", "y"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert not set(before) & set(_files(folder)) - {"notes.txt", MANIFEST}  # the old files of ours are gone
    assert reader.search([documents[5]], k=1)[0][0]["id"] == "d5"  # an open reader keeps its snapshot


def test_override_in_a_batch_replaces_once_at_the_end_and_not_at_all_when_it_fails(index, tmp_path, documents):
    fresh = VoyagerIndex(str(tmp_path), "idx", override=True, embedding_size=DIM)
    with pytest.raises(ColbertAzError, match="NaN"), fresh.batch():
        fresh.add_documents(["x"], documents[:1])
        assert len(VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)) == 120
        fresh.add_documents(["y"], [np.full((2, DIM), np.nan, np.float32)])
    assert len(VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)) == 120
    with fresh.batch():
        fresh.add_documents(["x"], documents[:1])
        fresh.add_documents(["y"], documents[1:2])
        assert len(VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)) == 120
    assert VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True).doc_ids == ["x", "y"]


def test_objects_of_one_process_share_the_writer_lock_and_an_override_in_progress_excludes_the_others(
    index, tmp_path, documents
):
    second = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)  # used to raise IndexLockedError
    second.add_documents(["new"], documents[:1])
    index.add_documents(["newer"], documents[1:2])  # the first object sees the second's commit first
    assert len(VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)) == 122
    replacing = VoyagerIndex(str(tmp_path), "idx", override=True, embedding_size=DIM)
    with pytest.raises(IndexLockedError, match="this process is replacing") as error:
        index.add_documents(["late"], documents[2:3])
    assert "another process" not in str(error.value)
    replacing.add_documents(["only"], documents[:1])
    index.add_documents(["late"], documents[2:3])  # after the override committed, the others write again
    assert VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True).doc_ids == ["only", "late"]


def test_a_folder_that_is_not_an_index_is_never_written(tmp_path, documents):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    for override in (False, True):
        with pytest.raises(OutputExistsError, match="not an index") as error:
            VoyagerIndex(str(tmp_path), "mine", override=override, embedding_size=DIM)
        assert "\n" not in str(error.value)
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    (folder / "manifest.json").write_text('{"name": "a web extension"}')
    with pytest.raises(OutputExistsError, match="not an index manifest of ours"):
        VoyagerIndex(str(tmp_path), "mine", override=True, embedding_size=DIM)


def test_an_index_whose_manifest_was_lost_is_refused_with_what_to_do(index, tmp_path):
    folder = tmp_path / "idx"
    (folder / MANIFEST).unlink()
    before = _files(folder)
    for override in (False, True):
        with pytest.raises(IndexFormatError, match=r"no manifest.*restore the manifest from a backup, or delete"):
            VoyagerIndex(str(tmp_path), "idx", override=override, embedding_size=DIM)
    assert _files(folder) == before


@pytest.mark.parametrize("store", ["vectors", "payloads"])
def test_same_size_edits_of_the_stores_are_refused_when_read(tmp_path, documents, queries, store):
    index = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    index.add_documents([f"d{i}" for i in range(60)], documents[:60], payloads=[{"n": i} for i in range(60)])
    index.close()
    path = next((tmp_path / "idx").glob(f"{store}.*"))
    data = bytearray(path.read_bytes())
    if store == "vectors":
        data[1] ^= 0x01  # one bit of the first document's first vector
    else:
        data[data.index(b'"n": 7') + 5] = ord("8")  # {"n": 7} -> {"n": 8}
    path.write_bytes(bytes(data))
    reopened = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)  # opening reads no store chunk
    with pytest.raises(IndexFormatError, match="does not match its checksum") as error:
        reopened.document_embeddings("d0") if store == "vectors" else reopened.payload("d7")
    assert "\n" not in str(error.value)
    with pytest.raises(IndexFormatError, match="checksum"):
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True).verify()
    if store == "vectors":
        with pytest.raises(IndexFormatError, match="checksum"):
            VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True).exact_search(queries[:1])


def test_store_checksums_grow_with_appends_and_survive_compaction_and_reopening(tmp_path, documents):
    index = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM)
    for start in range(0, 120, 7):  # many small appends: the last chunk is partial and re-hashed each time
        index.add_documents([f"d{i}" for i in range(start, min(start + 7, 120))], documents[start : start + 7])
    index.remove_documents(["d3", "d4"])
    index.compact()
    index.add_documents(["late"], documents[:1])
    reopened = VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)
    assert reopened.verify() == reopened.rows * DIM * 2 + reopened.payload_bytes > 0
    assert len(reopened.vector_sums) == -(-reopened.rows * DIM * 2 // (1 << 16))


def test_a_missing_generation_file_is_a_one_line_error_without_waiting(index, tmp_path):
    next((tmp_path / "idx").glob("docs.*.npz")).unlink()
    began = time.perf_counter()
    with pytest.raises(IndexFormatError, match=r"docs\.\d+\.npz is missing.*rebuild") as error:
        VoyagerIndex(str(tmp_path), "idx", embedding_size=DIM, read_only=True)
    assert "\n" not in str(error.value) and time.perf_counter() - began < 1


def test_an_index_folder_naming_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    for folder, name in ((tmp_path, "plain.txt"), (tmp_path / "plain.txt", "idx")):
        with pytest.raises(OutputExistsError, match="is a file, not a folder"):
            VoyagerIndex(str(folder), name, embedding_size=DIM)
    assert (tmp_path / "plain.txt").read_text() == "x"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda index: index.search([np.ones((2, DIM), np.float32)], k=2.5), "k must be a whole number"),
        (lambda index: index.search([np.ones((2, DIM), np.float32)], k="3"), "k must be a whole number"),
        (lambda index: index([np.ones((2, DIM), np.float32)], k=0), "k must be a whole number"),
        (lambda index: index.search([np.ones((2, DIM), np.float32)], subset="d1"), "not one id"),
        (lambda index: index.payload("nope"), "not in the index"),
        (lambda index: index.document_embeddings(None), "not in the index"),
        (lambda index: index.add_documents(["z"], [np.ones((2, DIM))], payloads=[{"s": {1}}]), "JSON"),
        (lambda index: index.add_documents(["z"], "text"), "list of"),
    ],
)
def test_bad_arguments_are_one_line_errors_of_ours(index, call, message):
    with pytest.raises(ColbertAzError, match=message) as error:
        call(index)
    assert "\n" not in str(error.value) and len(index) == 120


def test_document_ids_follow_one_rule_in_every_index(tmp_path, documents):
    from colbert_az_pylate.retrieval.ids import check_document_ids
    from colbert_az_pylate.retrieval.plaid_index import PlaidIndex

    for ids in (["a", "b", "a"], ["a", ""], ["a", 3], []):
        with pytest.raises(ColbertAzError) as expected:
            check_document_ids(ids)
        with pytest.raises(ColbertAzError) as voyager:
            VoyagerIndex(str(tmp_path), "v", embedding_size=DIM).add_documents(ids, documents[: len(ids)])
        with pytest.raises(ColbertAzError) as plaid:
            PlaidIndex.build(tmp_path / "p", ids, documents[: len(ids)], show_progress=False)
        assert str(voyager.value) == str(plaid.value) == str(expected.value)
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------------------------------- PlaidIndex
def _plaid(folder: Path, count: int = 40, prefix: str = "d", **kwargs):
    from colbert_az_pylate.retrieval.plaid_index import PlaidIndex

    ids = [f"{prefix}{i}" for i in range(count)]
    return PlaidIndex.build(folder, ids, random_documents(count, seed=len(prefix)), show_progress=False, **kwargs)


@pytest.mark.slow
def test_plaid_rebuild_keeps_the_old_index_on_a_bad_corpus_and_never_deletes_unrelated_files(tmp_path):
    from colbert_az_pylate.retrieval.plaid_index import PlaidIndex

    folder = tmp_path / "plaid"
    _plaid(folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"built once.*override=True"):
        _plaid(folder)
    with pytest.raises(ColbertAzError, match="duplicate"):
        PlaidIndex.build(folder, ["a", "a"], random_documents(2), override=True, show_progress=False)
    assert PlaidIndex(folder).doc_ids[:2] == ["d0", "d1"]
    rebuilt = _plaid(folder, prefix="new", override=True)
    assert rebuilt.doc_ids[0] == "new0" and PlaidIndex(folder).doc_ids[0] == "new0"
    assert (folder / "notes.txt").read_text() == "mine"
    _plaid(folder, prefix="third", override=True)
    builds = sorted(p.name for p in folder.iterdir() if p.name.startswith("plaid"))
    assert builds == ["plaid-manifest.json", "plaid.2", "plaid.3"]  # the one just replaced stays for open readers


def test_plaid_same_size_edit_of_any_file_is_refused(tmp_path):
    from colbert_az_pylate.retrieval.plaid_index import PlaidIndex

    folder = tmp_path / "plaid"
    _plaid(folder)
    residuals = next(folder.glob("plaid.*/fast_plaid/*residuals.npy"))
    data = bytearray(residuals.read_bytes())
    data[-1] ^= 0xFF
    residuals.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="does not match its checksum"):
        PlaidIndex(folder)


@pytest.mark.slow
def test_plaid_refuses_other_folders_and_a_killed_build_is_not_a_lost_index(tmp_path, index):
    from colbert_az_pylate.retrieval.folders import index_backend

    with pytest.raises(OutputExistsError, match="holds a Voyager index"):
        _plaid(tmp_path / "idx", override=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not an index"):
        _plaid(tmp_path / "mine", override=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["a.txt"]
    killed = tmp_path / "killed"
    (killed / "plaid.1" / "fast_plaid").mkdir(parents=True)
    (killed / "plaid.1" / ".building").touch()
    assert index_backend(killed) is None
    _plaid(killed)
    assert not (killed / "plaid.1").exists() and (killed / "plaid.2").is_dir()
    lost = tmp_path / "lost"
    _plaid(lost)
    (lost / "plaid-manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="no manifest"):
        _plaid(lost, override=True)


@pytest.mark.slow
def test_plaid_reads_indexes_of_format_1(tmp_path):
    from colbert_az_pylate.retrieval.plaid_index import MANIFEST, PlaidIndex

    folder = tmp_path / "plaid"
    _plaid(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    build = manifest["engine"].split("/")[0]
    for child in (folder / build).iterdir():
        child.rename(folder / child.name)
    files = {name.split("/", 1)[1]: digest for name, digest in manifest["files"].items()}
    old = {key: manifest[key] for key in ("model", "embedding_size", "settings", "documents")}
    old |= {"format_version": 1, "files": {name: files[name] for name in ("ids.json", "payloads.json")}}
    (folder / MANIFEST).write_text(json.dumps(old))
    assert PlaidIndex(folder).search([random_documents(40, seed=1)[3]], k=1)[0][0]["id"] == "d3"
    _plaid(folder, prefix="v2-", override=True)  # a rebuild writes format 2; format 1's files stay one build
    assert PlaidIndex(folder).doc_ids[0] == "v2-0" and (folder / "ids.json").exists()
    _plaid(folder, prefix="again-", override=True)
    assert not any((folder / name).exists() for name in ("ids.json", "payloads.json", "fast_plaid"))
