"""``colbert-az rerank``: another system's candidates (TREC run or JSONL) reranked into a TREC run; the oracle is
:func:`colbert_az_pylate.retrieval.searcher.rerank` on each query's candidates, and every document is encoded once."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import colbert_az_pylate.loading as loading
from colbert_az_pylate.cli import EXIT_BAD_INPUT, main
from colbert_az_pylate.evaluation.rerank_run import read_candidates
from colbert_az_pylate.retrieval.searcher import rerank

CORPUS = {
    "baki": "Bakı Azərbaycanın paytaxtıdır və Xəzər dənizinin sahilində yerləşir.",
    "seki": "Şəki xan sarayı XVIII əsrdə tikilib, şəbəkə pəncərələri ilə məşhurdur.",
    "gence": "Gəncə Nizami Gəncəvinin vətənidir.",
    "qobustan": "Qobustanda qayaüstü təsvirlər qorunur.",
    "sahdag": "Şahdağ Azərbaycanın ən hündür zirvələrindən biridir.",
    "lenkeran": "Lənkəran çayı və sitrus meyvələri ilə tanınır.",
}
QUERIES = {
    "q1": "Şəki xan sarayı hansı əsrdə tikilib?",
    "q2": "Azərbaycanın paytaxtı hansı şəhərdir?",
    "q3": "Qayaüstü təsvirlər harada qorunur?",
}
# documents shared by several queries: each must still be encoded once
CANDIDATES = {
    "q1": ["baki", "seki", "gence", "qobustan"],
    "q2": ["seki", "baki", "sahdag", "lenkeran"],
    "q3": ["gence", "qobustan", "baki"],
}


@pytest.fixture(scope="module")
def model_folder(converted) -> str:
    return str(converted["wordpiece"][0])


@pytest.fixture
def files(tmp_path):
    """BEIR queries.jsonl/corpus.jsonl and the candidates as a TREC run (ranks shuffled in the file) and JSONL."""
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}, ensure_ascii=False) + "\n" for k, v in CORPUS.items()),
        encoding="utf-8",
    )
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in QUERIES.items()),
        encoding="utf-8",
    )
    lines = [
        f"{q} Q0 {d} {rank} {100 - rank}.5 bm25" for q, docs in CANDIDATES.items() for rank, d in enumerate(docs, 1)
    ]
    (tmp_path / "bm25.trec").write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    rows = [{"query_id": q, "doc_id": d} for q, docs in CANDIDATES.items() for d in docs]
    (tmp_path / "bm25.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


@pytest.fixture
def encoded(monkeypatch):
    """Every text the loaded model encodes, counted, by (is_query, text)."""
    counts: Counter = Counter()
    real_load = loading.load

    def counting_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        encode = model.encode

        def counting_encode(texts, *a, is_query=False, **kw):
            counts.update((is_query, t) for t in ([texts] if isinstance(texts, str) else texts))
            return encode(texts, *a, is_query=is_query, **kw)

        model.encode = counting_encode
        return model

    monkeypatch.setattr(loading, "load", counting_load)
    return counts


def read_run(path) -> dict[str, list[tuple[str, float]]]:
    run: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        query, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "colbert-az" and int(rank) == len(run.get(query, [])) + 1
        run.setdefault(query, []).append((doc, float(score)))
    return run


def expected_run(model_folder, top_k=None) -> dict[str, list[tuple[str, float]]]:
    model = loading.load(model_folder)
    result = {}
    for query, docs in CANDIDATES.items():
        docs = docs[:top_k] if top_k else docs
        hits = rerank(model, QUERIES[query], [CORPUS[d] for d in docs])
        result[query] = [(docs[int(h.id)], h.score) for h in hits]
    return result


@pytest.mark.parametrize("candidates", ["bm25.trec", "bm25.jsonl"])
def test_rerank_orders_each_query_as_retrieval_rerank_and_encodes_each_document_once(
    model_folder, files, encoded, capsys, candidates
):
    expected = expected_run(model_folder)
    encoded.clear()
    output = files / "reranked.trec"
    argv = ["rerank", model_folder, str(files / candidates), "--queries", str(files / "queries.jsonl")]
    argv += ["--corpus", str(files / "corpus.jsonl"), "--output", str(output), "--batch-size", "2", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"queries": 3, "candidates": 11, "documents_encoded": 6, "output": str(output)}
    assert "documents" not in captured.err and "loading" not in captured.err  # --json: no progress of ours
    run = read_run(output)
    assert sorted(run) == sorted(CANDIDATES)
    for query, hits in expected.items():
        assert [d for d, _ in run[query]] == [d for d, _ in hits]
        assert [s for _, s in run[query]] == pytest.approx([s for _, s in hits], abs=1e-5)
    documents = Counter(t for is_query, t in encoded.elements() if not is_query)
    assert documents == Counter(CORPUS.values())  # six distinct documents, eleven candidates: each encoded once
    assert sorted(t for is_query, t in encoded if is_query) == sorted(QUERIES.values())


def test_rerank_top_k_keeps_the_first_stage_best_and_shows_progress_without_json(model_folder, files, encoded, capsys):
    expected = expected_run(model_folder, top_k=2)
    encoded.clear()
    output = files / "top2.trec"
    argv = ["rerank", model_folder, str(files / "bm25.trec"), "--queries", str(files / "queries.jsonl")]
    argv += ["--corpus", str(files / "corpus.jsonl"), "--output", str(output), "--top-k", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "reranked 6 candidates of 3 queries (4 documents encoded once)" in captured.out
    assert "loading" in captured.err and "documents:" in captured.err  # the step line and the tqdm bar
    run = read_run(output)
    assert {q: [d for d, _ in hits] for q, hits in run.items()} == {
        q: [d for d, _ in hits] for q, hits in expected.items()
    }
    assert {d for q in run.values() for d, _ in q} == {d for docs in CANDIDATES.values() for d in docs[:2]}
    assert sum(1 for is_query, _ in encoded.elements() if not is_query) == 4  # baki, seki, gence, qobustan


def test_read_candidates_orders_a_trec_run_by_its_rank_column(files):
    assert read_candidates(files / "bm25.trec") == CANDIDATES
    assert read_candidates(files / "bm25.jsonl") == CANDIDATES


def test_rerank_reads_az_mirage_files(model_folder, tmp_path, capsys):
    (tmp_path / "dataset.json").write_text(json.dumps([{"query_id": 7, "query": QUERIES["q1"]}]), encoding="utf-8")
    pool = [{"doc_chunk": text} for text in CORPUS.values()]
    (tmp_path / "doc_pool.json").write_text(json.dumps(pool, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"query_id": 7, "doc_id": "chunk0"}\n{"query_id": 7, "doc_id": "chunk1"}\n')
    argv = ["rerank", model_folder, str(tmp_path / "c.jsonl"), "--queries", str(tmp_path / "dataset.json")]
    argv += ["--corpus", str(tmp_path / "doc_pool.json"), "--output", str(tmp_path / "out.trec"), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["candidates"] == 2
    assert {line.split()[2] for line in (tmp_path / "out.trec").read_text().splitlines()} == {"chunk0", "chunk1"}


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ("q1 Q0 nowhere 1 2.0 bm25\n", "1 document id(s) missing from the corpus, first 'nowhere'"),
        ("q9 Q0 baki 1 2.0 bm25\n", "1 query id(s) missing from the queries file, first 'q9'"),
        ("", "is empty"),
        ("q1 Q0 baki 1 2.0 bm25\nq1 Q0 seki one 2.0 bm25\n", "line 2 is not a TREC run line"),
        ("q1 Q0 baki 1 2.0 bm25\nq1 Q0 baki 2 1.0 bm25\n", "line 2 repeats query 'q1' document 'baki'"),
        ('{"query_id": "q1", "doc_id": "baki"}\n{"query_id": "q1"}\n', "line 2 needs doc_id"),
        ('{"query_id": "q1", "doc_id": "baki"}\n{not json\n', "line 2 is not valid JSON"),
    ],
)
def test_rerank_refuses_bad_candidates_in_one_line_before_loading_the_model(
    files, monkeypatch, capsys, candidates, expected
):
    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("the model loaded before the inputs were checked"))
    path = files / ("bad.jsonl" if candidates.startswith("{") else "bad.trec")
    path.write_text(candidates, encoding="utf-8")
    output = files / "out.trec"
    argv = ["rerank", "some-model", str(path), "--queries", str(files / "queries.jsonl")]
    argv += ["--corpus", str(files / "corpus.jsonl"), "--output", str(output)]
    assert main(argv) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not output.exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--queries": "missing.jsonl"}, "does not exist"),
        ({"--corpus": "empty.jsonl"}, "holds no documents"),
        ({"--corpus": "corpus.tsv"}, "give BEIR queries.jsonl and corpus.jsonl"),
        ({"--top-k": "0"}, "--top-k"),
        ({"--batch-size": "-1"}, "--batch-size"),
        ({"--output": "."}, "is a folder"),
    ],
)
def test_rerank_refuses_bad_files_and_flags_in_one_line(files, monkeypatch, capsys, change, expected):
    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("the model loaded before the inputs were checked"))
    (files / "empty.jsonl").write_text("", encoding="utf-8")
    (files / "corpus.tsv").write_text("id\ttext\nbaki\tBakı\n", encoding="utf-8")
    flags = {"--queries": "queries.jsonl", "--corpus": "corpus.jsonl", "--output": "out.trec", **change}
    argv = ["rerank", "some-model", str(files / "bm25.trec")]
    for flag, value in flags.items():
        argv += [flag, value if flag.startswith("--top") or flag.startswith("--batch") else str(files / value)]
    assert main(argv) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (files / "out.trec").exists()
