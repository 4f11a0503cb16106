"""exact_run at scale: blocked scoring equals the padded MaxSim, memory is bounded whatever the
number of queries, and document encodings are cached, resumed and reused only for the same model and corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colbert_az_pylate import load, scores
from colbert_az_pylate.evaluation import retrieval
from colbert_az_pylate.evaluation.retrieval import exact_run
from colbert_az_pylate.scores import maxsim_scores, pad_documents

DIM = 8


class TableModel:
    """A stand-in encoder: every text's token vectors are looked up in a table; counts what it encodes."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.encoded = {True: 0, False: 0}

    def encode(self, texts, is_query, **kwargs):
        self.encoded[is_query] += len(texts)
        return [self.table[text] for text in texts]


def _random_data(seed: int, n_queries: int, n_documents: int, integers: bool = False):
    rng = np.random.default_rng(seed)

    def draw(rows: int) -> np.ndarray:
        if integers:  # small integers: every sum is exact in float32, so ties are exact too
            return rng.integers(0, 2, size=(rows, DIM)).astype(np.float32)
        return rng.standard_normal((rows, DIM)).astype(np.float32)

    queries = {f"q{i}": draw(int(rng.integers(3, 9))) for i in range(n_queries)}
    lengths = [int(rng.integers(1, 40)) for _ in range(n_documents)]
    lengths[n_documents // 2] = 300  # longer than any block below
    documents = {f"d{j}": draw(length) for j, length in enumerate(lengths)}
    return queries, documents


def _padded_reference(queries: dict, documents: dict, k: int) -> dict[str, list[tuple[str, float]]]:
    """The previous implementation's scores (padded einsum MaxSim over every pair), ranked best first, ties by
    corpus order."""
    length = max(len(v) for v in queries.values())
    stacked = torch.zeros(len(queries), length, DIM)
    for row, vectors in enumerate(queries.values()):
        stacked[row, : len(vectors)] = torch.from_numpy(vectors)
    matrix = maxsim_scores(stacked, *pad_documents([torch.from_numpy(v) for v in documents.values()])).numpy()
    ids = list(documents)
    reference = {}
    for query, row in zip(queries, matrix, strict=True):
        order = np.lexsort((np.arange(len(ids)), -row))[:k]
        reference[query] = [(ids[j], float(row[j])) for j in order]
    return reference


@pytest.fixture
def small_pieces(monkeypatch):
    """Documents packed 16 at a time, encoded 8 at a time: several pieces and chunks on small data."""
    monkeypatch.setattr(retrieval, "CACHE_SHARD_SIZE", 16)
    monkeypatch.setattr(retrieval, "ENCODE_CHUNK", 8)


def test_blocked_scoring_equals_the_padded_maxsim_on_random_data(small_pieces):
    queries, documents = _random_data(0, n_queries=70, n_documents=45)
    model = TableModel({**queries, **documents})
    run = exact_run(
        model,
        {q: q for q in queries},
        {d: d for d in documents},
        k=10,
        show_progress_bar=False,
        block_elements=64,
        query_block=9,
    )
    reference = _padded_reference(queries, documents, 10)
    assert list(run) == list(queries)
    for query, expected in reference.items():
        assert list(run[query]) == [doc for doc, _ in expected]
        assert list(run[query].values()) == pytest.approx([score for _, score in expected], rel=1e-5, abs=1e-5)
    assert model.encoded == {True: 70, False: 45}  # every text encoded once, queries block by block


def test_ties_keep_corpus_order_exactly(small_pieces):
    queries, documents = _random_data(1, n_queries=40, n_documents=50, integers=True)
    model = TableModel({**queries, **documents})
    run = exact_run(
        model, {q: q for q in queries}, {d: d for d in documents}, k=50, show_progress_bar=False, block_elements=100
    )
    reference = _padded_reference(queries, documents, 50)
    assert {q: list(hits.items()) for q, hits in run.items()} == reference  # same documents, order and scores
    assert any(len(set(hits.values())) < len(hits) for hits in run.values())  # there were ties to order


def test_k_above_the_corpus_size_returns_every_document_and_no_queries_return_nothing():
    model = TableModel({"q": np.eye(2, dtype=np.float32), "a": np.eye(2, dtype=np.float32)[:1]})
    assert exact_run(model, {"q": "q"}, {"a": "a"}, k=5, show_progress_bar=False) == {"q": {"a": 1.0}}
    assert exact_run(model, {}, {"a": "a"}, show_progress_bar=False) == {}


class _RecordingNumpy:
    """numpy, except that ``maximum.reduceat`` records the shape of each similarity matrix it reduces."""

    def __init__(self) -> None:
        self.similarities: list[tuple[int, int, int]] = []  # rows, columns, documents in the block
        recorded = self.similarities

        class Maximum:
            def reduceat(self, array, indices, axis=0):
                recorded.append((array.shape[0], array.shape[1], len(indices)))
                return np.maximum.reduceat(array, indices, axis=axis)

            def __getattr__(self, name):
                return getattr(np.maximum, name)

        self.maximum = Maximum()

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("n_queries", [12, 120])
def test_similarities_held_at_once_stay_within_block_elements_whatever_the_number_of_queries(
    monkeypatch, small_pieces, n_queries
):
    queries, documents = _random_data(2, n_queries=n_queries, n_documents=60)
    recording = _RecordingNumpy()
    monkeypatch.setattr(scores, "np", recording)
    calls = []
    top_k = retrieval.maxsim_top_k

    def counting_top_k(query_vectors, vectors, starts, k, **kwargs):
        calls.append((len(query_vectors), len(starts), kwargs["block_elements"]))
        return top_k(query_vectors, vectors, starts, k, **kwargs)

    monkeypatch.setattr(retrieval, "maxsim_top_k", counting_top_k)
    block_elements = 512
    exact_run(
        TableModel({**queries, **documents}),
        {q: q for q in queries},
        {d: d for d in documents},
        show_progress_bar=False,
        block_elements=block_elements,
        query_block=10,
    )
    assert recording.similarities, "maxsim_top_k was not used"
    for rows, columns, in_block in recording.similarities:
        # a block of several documents fits the budget; only a document longer than the budget is scored alone
        assert rows * columns <= block_elements or in_block == 1
    assert any(in_block == 1 and rows * columns > block_elements for rows, columns, in_block in recording.similarities)
    assert max(n for n, _, _ in calls) <= 10 and {b for _, _, b in calls} == {block_elements}
    assert max(documents for _, documents, _ in calls) <= 16  # one piece of documents at a time


def test_chunk_size_is_deprecated_and_ignored():
    model = TableModel({"q": np.eye(2, dtype=np.float32), "a": np.eye(2, dtype=np.float32)})
    with pytest.warns(DeprecationWarning, match="chunk_size is ignored"):
        run = exact_run(model, {"q": "q"}, {"a": "a"}, chunk_size=512, show_progress_bar=False)
    assert run == {"q": {"a": 2.0}}


def test_progress_bars_go_to_stderr_only(capsys):
    queries, documents = _random_data(3, n_queries=5, n_documents=6)
    model = TableModel({**queries, **documents})
    exact_run(model, {q: q for q in queries}, {d: d for d in documents}, show_progress_bar=True)
    out, err = capsys.readouterr()
    assert out == "" and "Encoding documents" in err and "Scoring" in err and "pair" in err
    exact_run(model, {q: q for q in queries}, {d: d for d in documents}, show_progress_bar=None)  # short: no bars
    exact_run(model, {q: q for q in queries}, {d: d for d in documents}, show_progress_bar=False)
    assert capsys.readouterr() == ("", "")


# The cache: encode_corpus shards of a real (tiny, converted) model.

CORPUS = {
    f"d{i}": f"{word} {other} mətn {i}"
    for i, (word, other) in enumerate(
        (w, o) for w in ("Bakı", "Gəncə", "Şəki", "Quba", "Lənkəran") for o in ("paytaxt", "şəhər", "dəniz", "dağ")
    )
}
QUERIES = {"q1": "Bakı paytaxt", "q2": "Şəki dağ", "q3": "dəniz şəhər", "q4": "Quba"}


@pytest.fixture
def tiny_model(converted):
    return load(converted["wordpiece"][0], device="cpu")


def _count_document_encodes(monkeypatch, model, fail_after_calls: int | None = None) -> list[int]:
    """Wrap ``model.encode``: the number of document texts of each call; KeyboardInterrupt on a given call."""
    calls: list[int] = []
    encode = model.encode

    def counting(texts, is_query, **kwargs):
        if not is_query:
            if fail_after_calls is not None and len(calls) == fail_after_calls:
                raise KeyboardInterrupt
            calls.append(len(texts))
        return encode(texts, is_query=is_query, **kwargs)

    monkeypatch.setattr(model, "encode", counting)
    return calls


def test_a_second_run_reuses_the_cached_encoding_and_scores_like_no_cache(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "CACHE_SHARD_SIZE", 8)
    said: list[str] = []
    calls = _count_document_encodes(monkeypatch, tiny_model)
    first = exact_run(tiny_model, QUERIES, CORPUS, k=5, show_progress_bar=False, cache_dir=tmp_path, say=said.append)
    assert sum(calls) == len(CORPUS) == 20
    (folder,) = tmp_path.iterdir()
    assert (folder / "manifest.json").is_file() and len(list(folder.glob("shard-*.npy"))) == 3
    assert np.load(folder / "shard-00000.npy", allow_pickle=False).dtype == np.float32  # the vectors as made
    calls.clear()
    second = exact_run(tiny_model, QUERIES, CORPUS, k=5, show_progress_bar=False, cache_dir=tmp_path, say=said.append)
    assert calls == [] and second == first
    assert said[0].startswith("encoding 20 documents into") and said[1].startswith("reusing the 20 document encodings")
    assert exact_run(tiny_model, QUERIES, CORPUS, k=5, show_progress_bar=False) == first  # in memory: the same


def test_an_interrupted_encoding_resumes_at_the_last_finished_shard(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "CACHE_SHARD_SIZE", 8)
    expected = exact_run(tiny_model, QUERIES, CORPUS, k=5, show_progress_bar=False)
    encode = tiny_model.encode
    _count_document_encodes(monkeypatch, tiny_model, fail_after_calls=2)  # Ctrl-C while encoding the third shard
    with pytest.raises(KeyboardInterrupt):
        exact_run(tiny_model, QUERIES, CORPUS, k=5, show_progress_bar=False, cache_dir=tmp_path)
    monkeypatch.setattr(tiny_model, "encode", encode)
    calls = _count_document_encodes(monkeypatch, tiny_model)
    said: list[str] = []
    resumed = exact_run(tiny_model, QUERIES, CORPUS, k=5, show_progress_bar=False, cache_dir=tmp_path, say=said.append)
    assert calls == [4] and resumed == expected  # only the last shard's 4 documents
    assert "(resumed: 16 already there)" in said[0]


def test_a_changed_corpus_or_model_does_not_reuse_the_cache(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "CACHE_SHARD_SIZE", 8)
    calls = _count_document_encodes(monkeypatch, tiny_model)
    exact_run(tiny_model, QUERIES, CORPUS, show_progress_bar=False, cache_dir=tmp_path)
    changed = {**CORPUS, "d3": "Bakı dəniz"}
    calls.clear()
    exact_run(tiny_model, QUERIES, changed, show_progress_bar=False, cache_dir=tmp_path)
    assert sum(calls) == 20 and len(list(tmp_path.iterdir())) == 2
    with torch.no_grad():  # the same model fine-tuned a little: its signature changes
        next(iter(tiny_model[-1].parameters())).add_(1e-3)
    calls.clear()
    exact_run(tiny_model, QUERIES, CORPUS, show_progress_bar=False, cache_dir=tmp_path)
    assert sum(calls) == 20 and len(list(tmp_path.iterdir())) == 3


def test_what_cannot_be_cached_is_encoded_in_memory_and_said(tiny_model, tmp_path):
    said: list[str] = []
    queries, documents = _random_data(4, n_queries=3, n_documents=4)
    model = TableModel({**queries, **documents})
    run = exact_run(
        model, {q: q for q in queries}, {d: d for d in documents}, show_progress_bar=False, cache_dir=tmp_path,
        say=said.append,
    )  # fmt: skip
    assert said == ["document encodings not cached: the model is not a pylate ColBERT"]
    assert run == exact_run(model, {q: q for q in queries}, {d: d for d in documents}, show_progress_bar=False)
    said.clear()
    exact_run(
        tiny_model, QUERIES, {**CORPUS, "empty": " "}, show_progress_bar=False, cache_dir=tmp_path, say=said.append
    )
    assert said == ["document encodings not cached: document 'empty' is empty or whitespace only"]
    assert list(tmp_path.iterdir()) == []


def test_encode_corpus_keeps_float32_apart_from_float16(tiny_model, tmp_path):
    from colbert_az_pylate.errors import InvalidArgumentError, OutputExistsError
    from colbert_az_pylate.retrieval.corpus import Corpus
    from colbert_az_pylate.retrieval.encoding import EncodedCorpus, encode_corpus

    corpus = Corpus(list(CORPUS), list(CORPUS.values()), [])
    encode_corpus(tiny_model, corpus, tmp_path / "f32", dtype="float32", show_progress_bar=False)
    (_, vectors), *_ = EncodedCorpus.open(tmp_path / "f32").shards()
    assert vectors.dtype == np.float32
    with pytest.raises(OutputExistsError, match="another dtype"):
        encode_corpus(tiny_model, corpus, tmp_path / "f32", show_progress_bar=False)
    with pytest.raises(InvalidArgumentError, match="dtype must be"):
        encode_corpus(tiny_model, corpus, tmp_path / "x", dtype="int8")
