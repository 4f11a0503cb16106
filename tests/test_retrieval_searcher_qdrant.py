"""The Searcher and the CLI on the Qdrant backend (embedded): hits, passages, deletes/upserts, open, flags."""

from __future__ import annotations

import json

import pytest
from extras import require_extra

require_extra("qdrant_client", "qdrant")

from tiny_checkpoints import CORPUS  # noqa: E402

from colbert_az_pylate.cli import EXIT_BAD_INPUT, main  # noqa: E402
from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, OutputExistsError  # noqa: E402
from colbert_az_pylate.retrieval.corpus import demo_corpus_path  # noqa: E402
from colbert_az_pylate.retrieval.searcher import Searcher  # noqa: E402

QUERIES = ["Bakı haradadır?", "Nizami kimdir?", "late interaction search"]
FACT = CORPUS[8]  # the only English sentence of the long document
FILLER = [CORPUS[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 11)]


def long_document(words: int = 1500) -> str:
    sentences, count = [], 0
    while count < words:
        sentences.append(FILLER[len(sentences) % len(FILLER)])
        count += len(sentences[-1].split())
    sentences.insert(int(len(sentences) * 0.95), FACT)
    return " ".join(sentences)


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


@pytest.fixture
def qdrant(gemma_model, tmp_path):
    built = Searcher(gemma_model, tmp_path / "qdrant", backend="qdrant", show_progress_bar=False)
    built.index(CORPUS, ids=[f"doc{i}" for i in range(len(CORPUS))], metadata=[{"n": i} for i in range(len(CORPUS))])
    return built


def test_hits_carry_text_metadata_span_and_equal_exact_maxsim_of_voyager(qdrant, gemma_model, tmp_path):
    voyager = Searcher(gemma_model, tmp_path / "voyager", show_progress_bar=False)
    voyager.index(CORPUS, ids=[f"doc{i}" for i in range(len(CORPUS))], metadata=[{"n": i} for i in range(len(CORPUS))])
    assert qdrant.backend == "qdrant" and len(qdrant) == len(CORPUS)
    for query in QUERIES:
        for exact in (False, True):
            hits, expected = qdrant.search(query, k=5, exact=exact), voyager.search(query, k=5, exact=True)
            assert [h.id for h in hits] == [h.id for h in expected]
            assert all(abs(a.score - b.score) < 1e-3 for a, b in zip(hits, expected, strict=True))
            top = hits[0]
            number = int(top.id[3:])
            assert top.text == CORPUS[number] and top.metadata == {"n": number}
            assert top.passage == 0 and top.span == (0, len(CORPUS[number]))
    assert {h.id for h in qdrant.search(QUERIES[0], k=5, subset=["doc2", "doc5"])} == {"doc2", "doc5"}


def test_delete_upsert_and_refused_duplicates(qdrant):
    top = qdrant.search(QUERIES[0], k=1)[0].id
    qdrant.delete([top])
    assert top not in {h.id for h in qdrant.search(QUERIES[0], k=20)} and len(qdrant) == len(CORPUS) - 1
    with pytest.raises(InvalidArgumentError, match="not in the index"):
        qdrant.delete(["nope"])
    with pytest.raises(InvalidArgumentError, match="already in the index"):
        qdrant.add(["Bakı Xəzər sahilindədir."], ids=["doc1"])
    qdrant.add(["Bakı Xəzər sahilindədir."], ids=["doc1"], upsert=True)
    assert qdrant.index_store.payload("doc1")["text"] == "Bakı Xəzər sahilindədir."
    qdrant.add(["Yeni sənəd."])  # a running number that is not in use
    assert len(qdrant) == len(CORPUS)


def test_long_documents_are_split_found_past_the_window_and_deleted_whole(gemma_model, tmp_path):
    searcher = Searcher(gemma_model, tmp_path / "q", backend="qdrant", show_progress_bar=False)
    document = long_document()
    searcher.index([document, CORPUS[0], CORPUS[9]], ids=["long", "a", "b"], metadata=[{"kind": "law"}, {}, {}])
    report = searcher.passage_report.to_dict()
    assert report["split_documents"] == 1 and report["passages"] > 3
    assert len(searcher) == 3 and searcher.index_store.count() == report["passages"] + 2
    for exact in (False, True):
        best = searcher.search(FACT, k=3, exact=exact)[0]
        assert best.id == "long" and best.metadata == {"kind": "law"} and best.passage > 0
        start, end = best.span
        assert document[start:end] == best.text and FACT in best.text
    by_document = searcher.search(FACT, k=3)
    assert sorted(h.id for h in by_document) == ["a", "b", "long"]
    passages = searcher.search(FACT, k=6, group_by="passage")
    assert sum(h.id == "long" for h in passages) >= 2
    assert [h.id for h in searcher.search(FACT, k=2, subset=["long"])] == ["long"]
    searcher.add([CORPUS[5]], ids=["long"], upsert=True)  # now short: its old passages go
    assert searcher.index_store.count() == 3 and len(searcher) == 3
    assert searcher.search(CORPUS[5], k=1)[0].text == CORPUS[5]
    searcher.add([document], ids=["long"], upsert=True)
    searcher.delete("long")
    assert searcher.index_store.count() == 2 and len(searcher) == 2


def test_open_finds_the_backend_and_model_and_other_backends_are_refused(qdrant, gemma_model, converted):
    reopened = Searcher.open(qdrant.folder, show_progress_bar=False)
    assert reopened.backend == "qdrant"
    assert [h.id for h in reopened.search(QUERIES[1], k=3)] == [h.id for h in qdrant.search(QUERIES[1], k=3)]
    with pytest.raises(OutputExistsError, match="holds a Qdrant index, not a Voyager one"):
        Searcher(gemma_model, qdrant.folder, backend="voyager")
    with pytest.raises(ColbertAzError, match="fingerprint"):
        Searcher(str(converted["metaspace"][0]), qdrant.folder)
    with pytest.raises(InvalidArgumentError, match="backend must be 'qdrant'"):
        Searcher(gemma_model, "laws", backend="plaid", url="http://127.0.0.1:9")


def test_index_and_search_commands_on_qdrant(gemma_model, tmp_path, capsys):
    index = tmp_path / "cli-qdrant"
    corpus = str(demo_corpus_path())
    assert main(["index", gemma_model, corpus, "--index", str(index), "--backend", "qdrant", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 53
    assert main(["index", gemma_model, corpus, "--index", str(index), "--upsert", "--json"]) == 0  # its own backend
    assert json.loads(capsys.readouterr().out)["documents"] == 53
    for extra in ([], ["--exact"]):
        assert main(["search", str(index), "Bakı paytaxt", "-k", "4", "--json", *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        hits = report[0]["hits"]
        assert len(hits) == 4 and hits[0]["text"] and hits[0]["span"] == [0, len(hits[0]["text"])]
    assert main(["index", gemma_model, corpus, "--index", str(index), "--backend", "voyager"]) == EXIT_BAD_INPUT
    assert "holds a Qdrant index, not a Voyager one" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "IDX", "q", "--api-key-env", "KEY"], "--api-key-env is for a Qdrant server"),
        (["search", "IDX", "q", "--url", "http://127.0.0.1:9", "--api-key-env", "NO_SUCH_VAR_X"], "not set"),
        (["index", "M", "C", "--index", "IDX", "--url", "http://x:6333", "--backend", "plaid"], "--backend qdrant"),
    ],
)
def test_server_flags_are_checked_with_one_line(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR_X", raising=False)
    argv = [str(tmp_path / "idx") if a == "IDX" else a for a in argv]
    assert main(argv) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert not (tmp_path / "idx").exists()


def test_an_unreachable_server_is_one_line_from_search(capsys):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["search", "laws", "q", "--url", f"http://127.0.0.1:{port}"]) == EXIT_BAD_INPUT
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Qdrant server") and "start the server" in last


def test_an_interrupted_index_run_keeps_nothing_and_the_rerun_is_not_refused(gemma_model, tmp_path, monkeypatch):
    """Ctrl-C part-way through `colbert-az index --backend qdrant` (Searcher.index): the points it wrote go."""
    searcher = Searcher(gemma_model, tmp_path / "q", backend="qdrant", show_progress_bar=False, qdrant_batch_size=2)
    upsert, sent = searcher.index_store.client.upsert, []

    def interrupted(*args, **kwargs):
        if len(sent) == 3:
            raise KeyboardInterrupt
        sent.append(len(kwargs["points"]))
        return upsert(*args, **kwargs)

    monkeypatch.setattr(searcher.index_store.client, "upsert", interrupted)
    ids = [f"doc{i}" for i in range(len(CORPUS))]
    with pytest.raises(KeyboardInterrupt):
        searcher.index(CORPUS, ids=ids)
    assert sent == [2, 2, 2] and len(searcher.index_store) == 0
    monkeypatch.undo()
    searcher.index(CORPUS, ids=ids)  # not refused: no id of the interrupted run is left in the index
    assert len(searcher) == len(CORPUS)
