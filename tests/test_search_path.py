"""The search path: exact search where it is cheaper, the index half on its own, concurrent readers, one thread
policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import torch
from tiny_checkpoints import CORPUS

from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.retrieval import voyager_index
from colbert_az_pylate.retrieval.searcher import Searcher
from colbert_az_pylate.scores import document_blocks, maxsim_scores, maxsim_top_k, pad_documents

QUERIES = ["Bakı haradadır?", "Nizami kimdir?", "late interaction search", "Şəki xan sarayı"]


def _random_documents(rng, count: int, longest: int = 40, dim: int = 16) -> list[np.ndarray]:
    return [rng.standard_normal((int(rng.integers(1, longest)), dim)).astype(np.float32) for _ in range(count)]


def _padded_scores(queries: np.ndarray, documents: list[np.ndarray]) -> np.ndarray:
    padded, mask = pad_documents([torch.from_numpy(d) for d in documents])
    return maxsim_scores(torch.from_numpy(queries), padded, mask).numpy()


@pytest.mark.parametrize("block_elements", [1, 97, 1 << 22])
def test_blocked_top_k_equals_padded_maxsim_whatever_the_block_size(block_elements):
    rng = np.random.default_rng(block_elements)
    documents = _random_documents(rng, 300)
    queries = rng.standard_normal((7, 5, 16)).astype(np.float32)
    lengths = np.array([len(d) for d in documents])
    found, scores = maxsim_top_k(
        queries, np.concatenate(documents), np.cumsum(lengths) - lengths, 10, block_elements=block_elements
    )
    expected = _padded_scores(queries, documents)
    np.testing.assert_array_equal(found, np.argsort(-expected, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(expected, found, 1), rtol=1e-5, atol=1e-5)


def test_blocked_top_k_keeps_only_allowed_documents_and_ranks_ties_by_number():
    rng = np.random.default_rng(0)
    documents = _random_documents(rng, 50)
    documents[30] = documents[7].copy()  # a tie: the lower number first
    lengths = np.array([len(d) for d in documents])
    queries = rng.standard_normal((3, 4, 16)).astype(np.float32)
    allowed = np.zeros(50, bool)
    allowed[[7, 30, 41]] = True
    found, scores = maxsim_top_k(
        queries, np.concatenate(documents), np.cumsum(lengths) - lengths, 10, allowed=allowed, block_elements=64
    )
    assert found.shape == (3, 3) and set(found.ravel()) == {7, 30, 41}
    for row in found.tolist():
        assert row.index(7) == row.index(30) - 1  # tied, adjacent, 7 first
    assert np.isfinite(scores).all()


def test_queries_of_different_lengths_are_padded_with_rows_that_add_nothing():
    rng = np.random.default_rng(1)
    documents = _random_documents(rng, 20)
    lengths = np.array([len(d) for d in documents])
    short, long = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal((6, 16)).astype(np.float32)
    found, scores = maxsim_top_k([short, long], np.concatenate(documents), np.cumsum(lengths) - lengths, 20)
    for query, row_found, row_scores in zip([short, long], found, scores, strict=True):
        expected = _padded_scores(query[None], documents)[0]
        np.testing.assert_allclose(row_scores, expected[row_found], rtol=1e-5, atol=1e-5)


def test_document_blocks_hold_whole_documents_within_the_row_budget():
    starts = np.array([0, 3, 5, 9, 30])
    blocks = document_blocks(starts, 31, 6)
    assert blocks == [(0, 2), (2, 3), (3, 4), (4, 5)]  # document 3 (21 rows) alone: it cannot be cut


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


@pytest.fixture
def searcher(gemma_model, tmp_path):
    built = Searcher(gemma_model, tmp_path / "index", show_progress_bar=False)
    built.index(CORPUS, ids=[f"doc{i}" for i in range(len(CORPUS))])
    return built


def _ids(hits):
    return [[hit.id for hit in row] for row in hits]


def test_small_indexes_are_searched_exactly_and_large_ones_through_the_graph(searcher, monkeypatch):
    calls = []
    store = searcher.index_store
    for name in ("exact_search", "search"):
        original = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _o=original, _n=name, **kw: calls.append(_n) or _o(*a, **kw))
    assert store.exact_is_faster  # a handful of documents
    auto = searcher.search(QUERIES, k=5)
    assert calls == ["exact_search"]
    assert _ids(auto) == _ids(searcher.search(QUERIES, k=5, exact=True))
    monkeypatch.setattr(voyager_index, "EXACT_SEARCH_MAX_VECTORS", 0)
    calls.clear()
    searcher.search(QUERIES, k=5)
    searcher.search(QUERIES, k=5, exact=True)
    assert calls == ["search", "exact_search"]


def test_exact_search_scores_equal_the_packed_reference_and_honour_subset(searcher):
    from colbert_az_pylate.scores import packed_maxsim_scores

    store = searcher.index_store
    ids = [f"doc{i}" for i in range(len(CORPUS))]
    vectors = [store.document_embeddings(i) for i in ids]
    lengths = np.array([len(v) for v in vectors])
    for query, hits in zip(QUERIES, searcher.search(QUERIES, k=len(CORPUS), exact=True), strict=True):
        expected = packed_maxsim_scores(
            searcher.encode_queries([query])[0], np.concatenate(vectors), np.cumsum(lengths) - lengths
        )
        assert [hit.id for hit in hits] == [ids[i] for i in np.argsort(-expected, kind="stable")]
        np.testing.assert_allclose([hit.score for hit in hits], np.sort(expected)[::-1], rtol=1e-5)
    subset = ["doc1", "doc3", "missing"]
    assert {hit.id for hit in searcher.search(QUERIES[0], k=10, exact=True, subset=subset)} == {"doc1", "doc3"}


def test_deleted_documents_never_come_back_from_exact_search(searcher):
    searcher.delete(["doc0", "doc2"])
    for row in searcher.search(QUERIES, k=len(CORPUS), exact=True):
        assert {"doc0", "doc2"}.isdisjoint(hit.id for hit in row)
        assert len(row) == len(CORPUS) - 2


def test_search_is_encoding_then_search_encoded(searcher):
    embeddings = searcher.encode_queries(QUERIES)
    for exact in (None, True, False):
        assert _ids(searcher.search_encoded(embeddings, k=4, exact=exact)) == _ids(
            searcher.search(QUERIES, k=4, exact=exact)
        )
    with pytest.raises(InvalidArgumentError, match="exact must be True, False or None"):
        searcher.search(QUERIES, exact="yes")


def test_concurrent_searches_share_one_searcher_and_answer_as_one_at_a_time(searcher):
    searcher.index_store.refresh()  # a fresh snapshot: payload chunks not yet verified, read by many threads at once
    expected = {exact: _ids(searcher.search(QUERIES, k=5, exact=exact)) for exact in (True, False)}
    searcher.index_store.refresh()
    failures, answers = [], []

    def work(exact: bool) -> None:
        try:
            for _ in range(5):
                answers.append((exact, _ids(searcher.search(QUERIES, k=5, exact=exact))))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(answers) == 40 and all(ids == expected[exact] for exact, ids in answers)


def _policy_in_a_fresh_process(code: str, environment: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | environment
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    ("code", "environment", "expected"),
    [
        ("import colbert_az_pylate", {}, ("PASSIVE", "PASSIVE")),
        ("import torch, colbert_az_pylate", {}, (None, "ACTIVE")),
        ("import colbert_az_pylate", {"OMP_WAIT_POLICY": "ACTIVE"}, ("ACTIVE", "set by the user: ACTIVE")),
    ],
)
def test_openmp_threads_sleep_when_the_package_is_imported_before_torch(code, environment, expected):
    answer = _policy_in_a_fresh_process(
        code + "; import os, json; from colbert_az_pylate.threads import thread_policy; "
        "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), thread_policy()['openmp_wait_policy']]))",
        environment,
    )
    assert tuple(answer) == expected


def test_reranks_batch_size_is_the_fastest_measured_and_stored(monkeypatch):
    """RERANK_BATCH_SIZE is the batch size benchmarks/rerank_speed.py found fastest, and rerank uses it on a CPU
    (32 on an accelerator) unless given one."""
    from pathlib import Path

    from colbert_az_pylate.retrieval import hits

    stored = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "rerank-speed.json"
    record = json.loads(stored.read_text(encoding="utf-8"))["batch_sizes"]
    assert record["fastest"] == hits.RERANK_BATCH_SIZE and record["same_top10"]
    assert record["p50_ms"][str(record["fastest"])] == min(record["p50_ms"].values())
    seen: list[int] = []

    class Model:
        device = types.SimpleNamespace(type="cpu")

        def encode(self, texts, is_query, batch_size, show_progress_bar):
            seen.append(batch_size)
            return [np.ones((3, 4), dtype=np.float32) for _ in texts]

    monkeypatch.setattr(hits, "resolve_model", lambda model: (model, None))
    model = Model()
    hits.rerank(model, "Bakı", ["a", "b"])
    model.device = types.SimpleNamespace(type="cuda")
    hits.rerank(model, "Bakı", ["a", "b"])
    hits.rerank(model, "Bakı", ["a", "b"], batch_size=5)
    assert seen == [hits.RERANK_BATCH_SIZE] * 2 + [32] * 2 + [5] * 2


def test_the_exact_search_crossover_is_the_one_measured_and_stored():
    from pathlib import Path

    stored = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "exact-crossover.json"
    record = json.loads(stored.read_text(encoding="utf-8"))
    assert voyager_index.EXACT_SEARCH_MAX_VECTORS == record["crossover_vectors"] > 0
    below = [row for row in record["results"] if row["vectors"] <= record["crossover_vectors"]]
    above = [row for row in record["results"] if row["vectors"] > record["crossover_vectors_measured"]]
    assert all(row["exact_p50_ms"] <= row["graph_p50_ms"] for row in below)
    assert all(row["exact_p50_ms"] > row["graph_p50_ms"] for row in above)
