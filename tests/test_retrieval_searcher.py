"""Searcher, corpus reading and the index/search/demo commands, on tiny converted checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_checkpoints import CORPUS

from colbert_az_pylate.cli import main
from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, InvalidArgumentError
from colbert_az_pylate.reference import ReferenceColBERT
from colbert_az_pylate.retrieval.corpus import demo_corpus_path, read_corpus
from colbert_az_pylate.retrieval.searcher import Searcher, rerank

QUERIES = ["Bakı haradadır?", "Nizami kimdir?", "late interaction search"]


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


@pytest.fixture
def searcher(gemma_model, tmp_path):
    built = Searcher(gemma_model, tmp_path / "index", show_progress_bar=False)
    built.index(CORPUS, ids=[f"doc{i}" for i in range(len(CORPUS))], metadata=[{"n": i} for i in range(len(CORPUS))])
    return built


def test_search_returns_hits_with_text_and_metadata_in_exact_maxsim_order(searcher):
    for query in QUERIES:
        graph, exact = searcher.search(query, k=5, exact=False), searcher.search(query, k=5, exact=True)
        assert [h.id for h in graph] == [h.id for h in exact]
        assert graph[0].text == CORPUS[int(graph[0].id[3:])] and graph[0].metadata == {"n": int(graph[0].id[3:])}
        assert [h.score for h in graph] == sorted((h.score for h in graph), reverse=True)


def test_scores_match_the_model_cards_reference_code(searcher, gemma_model, checkpoints):
    reference = ReferenceColBERT.from_pretrained(checkpoints["gemma"])
    expected = reference.score(QUERIES, CORPUS)
    for row, hits in enumerate(searcher.search(QUERIES, k=len(CORPUS), exact=True)):
        for hit in hits:
            assert hit.score == pytest.approx(float(expected[row, int(hit.id[3:])]), rel=2e-3)


def test_rerank_needs_no_index_and_orders_like_the_reference(searcher, checkpoints):
    reference = ReferenceColBERT.from_pretrained(checkpoints["gemma"])
    expected = reference.score([QUERIES[0]], CORPUS)[0]
    hits = searcher.rerank(QUERIES[0], CORPUS)
    assert [h.id for h in rerank(searcher.model, QUERIES[0], CORPUS)] == [h.id for h in hits]
    assert [int(h.id) for h in hits] == sorted(range(len(CORPUS)), key=lambda i: -float(expected[i]))[: len(hits)]
    assert hits[0].score == pytest.approx(float(expected.max()), rel=1e-4)


def test_pooled_documents_are_pylates_pooled_vectors_and_search_over_them(gemma_model, searcher, tmp_path):
    pooled = Searcher(gemma_model, tmp_path / "pooled", pool_factor=2, show_progress_bar=False)
    ids = [f"doc{i}" for i in range(len(CORPUS))]
    pooled.index(CORPUS, ids=ids)
    expected = pooled.model.encode(CORPUS, is_query=False, pool_factor=2, convert_to_numpy=True)
    stored = [pooled.index_store.document_embeddings(i) for i in ids]
    unpooled = [searcher.index_store.document_embeddings(i) for i in ids]
    assert sum(map(len, stored)) < 0.75 * sum(map(len, unpooled))
    for got, want in zip(stored, expected, strict=True):  # the store L2-normalises (as pylate's Voyager) in float16
        np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=2e-3)
    for query in QUERIES:
        graph = pooled.search(query, k=5, exact=False)
        assert [h.id for h in graph] == [h.id for h in pooled.search(query, k=5, exact=True)]


def test_pooling_equals_pylates_and_survives_duplicate_tokens_where_pylates_fails():
    import torch
    from pylate.models import ColBERT

    from colbert_az_pylate.retrieval.pooling import pool_document_tokens

    rng = np.random.default_rng(0)
    for length in (2, 3, 9, 31, 64):
        vectors = rng.standard_normal((length, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for factor in (2, 3):
            expected = ColBERT.pool_embeddings_hierarchical(None, [torch.from_numpy(vectors)], pool_factor=factor)
            np.testing.assert_allclose(pool_document_tokens(vectors, factor), expected[0].numpy(), atol=1e-6)
    rng = np.random.default_rng(14)
    token = rng.standard_normal((1, 128)).astype(np.float32)
    token /= np.linalg.norm(token)
    first = rng.standard_normal((1, 128)).astype(np.float32)
    repeated = np.concatenate([first, np.repeat(token, 6, axis=0)])  # one token recurring in a document
    with pytest.raises(ValueError, match="negative distances"):  # pylate 1.6: 1 - cos < 0 in float32
        ColBERT.pool_embeddings_hierarchical(None, [torch.from_numpy(repeated)], pool_factor=2)
    np.testing.assert_allclose(pool_document_tokens(repeated, 2), np.concatenate([first, token]), atol=1e-6)


@pytest.mark.parametrize("factor", [0, 1.5, True])
def test_a_bad_pool_factor_is_refused(gemma_model, tmp_path, factor):
    with pytest.raises(ColbertAzError, match="pool_factor must be an integer >= 1"):
        Searcher(gemma_model, tmp_path / "index", pool_factor=factor)


def test_delete_and_upsert_through_the_searcher(searcher):
    top = searcher.search(QUERIES[0], k=1)[0].id
    searcher.delete([top])
    assert top not in {h.id for h in searcher.search(QUERIES[0], k=20)}
    searcher.add(["Bakı Xəzər sahilindədir."], ids=["doc1"], upsert=True)
    assert searcher.index_store.payload("doc1")["text"] == "Bakı Xəzər sahilindədir."


@pytest.mark.parametrize(
    ("documents", "message"),
    [([], "empty"), (["ok", "  "], "document 1 is empty"), ("one string", "list of texts"), (["a", 3], "not text")],
)
def test_bad_corpora_are_refused_with_one_line(searcher, documents, message):
    with pytest.raises(ColbertAzError, match=message):
        searcher.index(documents)


def test_an_index_built_by_another_model_is_refused(searcher, converted):
    with pytest.raises(IndexFormatError, match="fingerprint"):
        Searcher(str(converted["metaspace"][0]), searcher.folder)


def test_open_finds_the_model_recorded_in_the_index(searcher):
    reopened = Searcher.open(searcher.folder, show_progress_bar=False)
    assert [h.id for h in reopened.search(QUERIES[1], k=3)] == [h.id for h in searcher.search(QUERIES[1], k=3)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_read_corpus_reads_every_format_and_stringifies_ids(tmp_path, suffix):
    import datasets

    table = datasets.Dataset.from_dict({"id": [1, 2], "text": ["Bakı", "Gəncə"], "lang": ["az", "az"]})
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".jsonl":
        table.to_json(str(path))
    elif suffix == ".parquet":
        table.to_parquet(str(path))
    else:
        table.to_csv(str(path), index=False, sep="\t" if suffix == ".tsv" else ",")
    corpus = read_corpus(path)
    assert corpus.ids == ["1", "2"] and corpus.texts == ["Bakı", "Gəncə"] and corpus.metadata[1] == {"lang": "az"}


def test_read_corpus_names_a_missing_column(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"pid": "a", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(ColbertAzError, match=r"no column 'id'.*--id-column"):
        read_corpus(path)


def test_index_and_search_commands(gemma_model, tmp_path, capsys):
    index = tmp_path / "cli-index"
    assert main(["index", gemma_model, str(demo_corpus_path()), "--index", str(index), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 53
    assert main(["search", str(index), "Bakı paytaxt", "-k", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report[0]["hits"]) == 4 and report[0]["hits"][0]["text"]
    assert main(["search", str(index), "Bakı paytaxt", "-k", "2"]) == 0
    assert "Bakı paytaxt" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "nothing"), "x"]) == 2
    assert "no index" in capsys.readouterr().err


def test_index_command_pools_document_tokens_on_request(gemma_model, tmp_path, capsys):
    corpus = str(demo_corpus_path())
    sizes = {}
    for factor in ("1", "2"):
        folder = tmp_path / f"pool-{factor}"
        assert main(["index", gemma_model, corpus, "--index", str(folder), "--pool-factor", factor, "--json"]) == 0
        capsys.readouterr()
        sizes[factor] = Searcher.open(folder).index_store.rows
    assert sizes["2"] < 0.75 * sizes["1"]
    assert main(["index", gemma_model, corpus, "--index", str(tmp_path / "bad"), "--pool-factor", "0"]) == 2
    assert "--pool-factor must be a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_offline_on_the_stand_in_and_ranks_the_right_passages(capsys):
    assert main(["demo", "-k", "1"]) == 0
    output = capsys.readouterr().out
    assert "STAND-IN" in output and "parity PASSED" in output
    tops = [line.split("]")[1].split()[0] for line in output.splitlines() if line.strip().startswith("1. [")]
    assert tops == ["baki", "hacibeyli", "bazarduzu", "qobustan", "emek_mecellesi"]


@pytest.mark.slow
def test_plaid_backend_indexes_searches_and_refuses_in_place_changes(gemma_model, tmp_path):
    ids = [f"doc{(7 * i) % len(CORPUS)}" for i in range(len(CORPUS))]  # not the positions: a shifted id fails
    plaid = Searcher(gemma_model, tmp_path / "plaid", backend="plaid", show_progress_bar=False)
    plaid.index(CORPUS, ids=ids)
    for text, doc_id in zip(CORPUS, ids, strict=True):  # each document's own text finds it, by a wide margin
        hits = plaid.search(text, k=5)
        assert hits[0].id == doc_id and hits[0].text == text
        assert len({h.id for h in hits}) == 5 and set(ids) >= {h.id for h in hits}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with pytest.raises(ColbertAzError, match="rebuild"):
        plaid.delete(["doc1"])
    with pytest.raises(ColbertAzError, match="rebuild"):
        plaid.add(["x"], ids=["x"])
    reopened = Searcher.open(tmp_path / "plaid", show_progress_bar=False)
    assert reopened.backend == "plaid" and len(reopened) == len(CORPUS)
    next((tmp_path / "plaid").glob("plaid.*/ids.json")).write_text("[]")
    with pytest.raises(IndexFormatError, match="checksum"):
        Searcher.open(tmp_path / "plaid")


def _no_encoding(*args, **kwargs):
    raise AssertionError("nothing may be encoded before the arguments are checked")


@pytest.mark.parametrize("k", [2.5, "3", None, 0, -1, True])
def test_search_refuses_a_k_that_is_not_a_whole_number_with_one_line(searcher, k):
    with pytest.raises(InvalidArgumentError, match=r"^k must be a whole number >= 1"):
        searcher.search(QUERIES[0], k=k)


@pytest.mark.parametrize(
    ("queries", "subset", "message"),
    [
        (None, None, "queries must be a text or a list"),
        ([""], None, "non-empty"),
        ("x", "doc1", "subset must be a list"),
    ],
)
def test_search_refuses_bad_queries_and_subsets_with_one_line(searcher, queries, subset, message):
    with pytest.raises(InvalidArgumentError, match=message):
        searcher.search(queries, subset=subset)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([{"tags": {"a", "b"}}, {}], r"metadata of document 0 \(id 'x0'\) cannot be stored as JSON.*set"),
        ([{}, {"owner": object()}], r"metadata of document 1 \(id 'x1'\) cannot be stored as JSON"),
        ([{}, "lang=az"], r"metadata of document 1 \(id 'x1'\) is a str, not a dict"),
        ({"lang": "az"}, "metadata must be a list of dicts"),
        ([{}], "2 documents but 1 metadata entries"),
    ],
)
def test_non_json_metadata_is_refused_before_anything_is_encoded(searcher, monkeypatch, metadata, message):
    monkeypatch.setattr(searcher.model, "encode", _no_encoding)
    with pytest.raises(InvalidArgumentError, match=message):
        searcher.index(["Bakı", "Gəncə"], ids=["x0", "x1"], metadata=metadata)
    assert "x0" not in searcher.index_store


@pytest.mark.parametrize(("ids", "message"), [([1, 2], "convert ids with str"), (["a", "a"], "duplicate")])
def test_bad_ids_are_refused_before_anything_is_encoded(searcher, monkeypatch, ids, message):
    monkeypatch.setattr(searcher.model, "encode", _no_encoding)
    with pytest.raises(InvalidArgumentError, match=message):
        searcher.index(["Bakı", "Gəncə"], ids=ids)


def test_ids_already_indexed_are_refused_before_encoding_naming_the_argument_and_the_flag(searcher, monkeypatch):
    monkeypatch.setattr(searcher.model, "encode", _no_encoding)
    with pytest.raises(InvalidArgumentError, match=r"pass upsert=True \(--upsert on the command line\)"):
        searcher.index(["Bakı", "Gəncə"], ids=["new", "doc3"])
    assert "new" not in searcher.index_store


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "8", None])
def test_a_bad_batch_size_is_refused_before_the_index_folder_is_created(gemma_model, tmp_path, batch_size):
    with pytest.raises(InvalidArgumentError, match="batch_size must be a whole number >= 1"):
        Searcher(gemma_model, tmp_path / "index", batch_size=batch_size)
    assert not (tmp_path / "index").exists()


def test_an_index_folder_that_is_a_file_is_refused_with_one_line(gemma_model, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="is a file"):
        Searcher(gemma_model, path)
    with pytest.raises(InvalidArgumentError, match="is a file"):
        Searcher(gemma_model, path / "index")
    with pytest.raises(InvalidArgumentError, match="is a file, not an index folder"):
        Searcher.open(path)
    assert path.read_text(encoding="utf-8") == "mine"
