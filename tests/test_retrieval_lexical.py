"""BM25 beside late interaction: Azerbaijani words, the lexical index on disk, and the searcher's four modes."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from extras import require_extra
from tiny_checkpoints import CORPUS

require_extra("bm25s", "bm25")

from colbert_az_pylate.errors import IndexFormatError, InvalidArgumentError  # noqa: E402
from colbert_az_pylate.retrieval.folders import LEXICAL_MANIFEST, detect_backend  # noqa: E402
from colbert_az_pylate.retrieval.hits import rerank  # noqa: E402
from colbert_az_pylate.retrieval.hybrid import reciprocal_rank_fusion  # noqa: E402
from colbert_az_pylate.retrieval.lexical import LexicalIndex, normalize_text, words  # noqa: E402
from colbert_az_pylate.retrieval.passages import passage_id  # noqa: E402
from colbert_az_pylate.retrieval.searcher import Searcher  # noqa: E402
from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex  # noqa: E402

# text -> the words BM25 matches: Azerbaijani casing, NFC, letters kept whole, punctuation and symbols split off
WORDS = [
    ("İSTİQLAL", ["istiqlal"]),  # İ -> i (str.lower(): i + combining dot)
    ("IĞDIR", ["ığdır"]),  # I -> ı (str.lower(): i)
    ("Əhməd Şəkili", ["əhməd", "şəkili"]),
    ("ÇÖRƏK, SÜD və ÜZÜM.", ["çörək", "süd", "və", "üzüm"]),
    ("Gəncə-Qazax yolu (1918)", ["gəncə", "qazax", "yolu", "1918"]),
    (unicodedata.normalize("NFD", "Şüşə və ölçü"), ["şüşə", "və", "ölçü"]),  # decomposed letters composed
    ("I\u0307lham", ["ilham"]),  # a decomposed İ
    ("i\u0307lham", ["ilham"]),  # what Python's lower() makes of İlham
    ("Bakı'da «Azərbaycan» qəzeti", ["bakı", "da", "azərbaycan", "qəzeti"]),
    ("e-mail: info@az_site.az", ["e", "mail", "info", "az", "site", "az"]),
    ("   \n\t ", []),
]


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_words_follow_azerbaijani_casing_and_keep_its_letters(text, expected):
    assert words(text) == expected


def test_normalisation_differs_from_str_lower_where_azerbaijani_needs_it():
    assert "İ".lower() != "i" and normalize_text("İ") == "i"
    assert "I".lower() == "i" and normalize_text("I") == "ı"
    assert normalize_text(normalize_text("İlqar IŞIQ")) == normalize_text("İlqar IŞIQ") == "ilqar ışıq"


TEXTS = {
    "baku": "Bakı Azərbaycanın paytaxtıdır və Xəzər dənizinin sahilində yerləşir.",
    "sheki": "Şəki Xan Sarayı 1762-ci ildə tikilib.",
    "ganja": "Gəncə Nizami Gəncəvinin vətənidir.",
    "igdir": "IĞDIR şəhəri haqqında qısa məlumat.",
}


def _payloads(ids):
    return [{"text": TEXTS[i]} for i in ids]


def test_the_lexical_index_ranks_by_words_and_persists_without_pickle(tmp_path):
    index = LexicalIndex(tmp_path / "words")
    ids = list(TEXTS)
    index.write_entries(ids, None, _payloads(ids), upsert=False, stale=[])
    assert [e["id"] for e in index.search(["ŞƏKİ sarayı"], k=3)[0]] == ["sheki"]
    assert [e["id"] for e in index.search(["ığdır"], k=3)[0]] == ["igdir"]  # upper-case IĞDIR found by ığdır
    assert index.search(["tamamilə başqa söz"], k=3) == [[]]  # no shared word: nothing, not noise
    reopened = LexicalIndex(tmp_path / "words", read_only=True)
    assert len(reopened) == 4 and reopened.payload("ganja") == {"text": TEXTS["ganja"]}
    assert reopened.search(["Gəncə"], k=2) == index.search(["Gəncə"], k=2)
    assert detect_backend(tmp_path / "words") == "bm25"
    stored = [path.name for path in (tmp_path / "words").rglob("*")]
    assert not any(name.endswith((".pkl", ".pickle")) for name in stored)
    with pytest.raises(Exception, match="read-only"):
        reopened.remove_documents(["baku"])
    # subset, delete, upsert
    assert index.search(["Bakı Gəncə"], k=5, subset=["ganja"])[0][0]["id"] == "ganja"
    index.remove_documents(["sheki"])
    index.write_entries(["baku"], None, [{"text": "Quba alması"}], upsert=True, stale=[])
    again = LexicalIndex(tmp_path / "words")
    assert len(again) == 3 and again.search(["Şəki"], k=3) == [[]]
    assert [e["id"] for e in again.search(["quba"], k=3)[0]] == ["baku"]
    with pytest.raises(InvalidArgumentError, match="already in the BM25 index"):
        again.write_entries(["baku"], None, [{"text": "x"}], upsert=False, stale=[])
    with pytest.raises(InvalidArgumentError, match="text"):
        again.write_entries(["new"], None, [{"title": "no text"}], upsert=False, stale=[])
    assert len(LexicalIndex(tmp_path / "words")) == 3  # refused writes changed nothing


def test_an_interrupted_commit_keeps_the_last_one(tmp_path, monkeypatch):
    index = LexicalIndex(tmp_path / "words")
    index.write_entries(["baku"], None, _payloads(["baku"]), upsert=False, stale=[])
    before = sorted(p.name for p in (tmp_path / "words").iterdir())
    import bm25s

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bm25s.BM25, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        index.write_entries(["sheki"], None, _payloads(["sheki"]), upsert=False, stale=[])
    monkeypatch.undo()
    reopened = LexicalIndex(tmp_path / "words")
    assert list(reopened.entries) == ["baku"] and reopened.search(["Şəki"], k=2) == [[]]
    reopened.write_entries(["sheki"], None, _payloads(["sheki"]), upsert=False, stale=[])  # the next commit works
    assert len(LexicalIndex(tmp_path / "words")) == 2
    leftovers = sorted(p.name for p in (tmp_path / "words").iterdir())
    assert len(leftovers) == len(before), (before, leftovers)  # the killed commit's files are gone


def test_a_lexical_index_of_other_rules_or_damaged_is_refused_on_open(tmp_path):
    index = LexicalIndex(tmp_path / "words")
    index.write_entries(["baku"], None, _payloads(["baku"]), upsert=False, stale=[])
    manifest_path = tmp_path / "words" / LEXICAL_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "normalization": "lower-1"}))
    with pytest.raises(IndexFormatError, match="other text rules"):
        LexicalIndex(tmp_path / "words")
    manifest_path.write_text(json.dumps({**manifest, "count": 7}))
    with pytest.raises(IndexFormatError, match="inconsistent"):
        LexicalIndex(tmp_path / "words")


def test_reciprocal_rank_fusion_scores_and_order():
    fused = reciprocal_rank_fusion([[{"id": "a"}, {"id": "b"}], [{"id": "c"}, {"id": "a"}]], k=10, constant=60)
    assert [entry["id"] for entry in fused] == ["a", "c", "b"]
    assert fused[0]["score"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1]["score"] == pytest.approx(1 / 61) and fused[2]["score"] == pytest.approx(1 / 62)


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


def test_mode_bm25_builds_a_words_only_index_and_reranks_by_maxsim(gemma_model, tmp_path, monkeypatch):
    ids = [f"d{i}" for i in range(len(CORPUS))]
    searcher = Searcher(gemma_model, tmp_path / "words", mode="bm25+rerank", show_progress_bar=False)
    monkeypatch.setattr(searcher, "encode_documents", lambda docs: pytest.fail("a BM25 index encodes nothing"))
    searcher.index(CORPUS, ids=ids)
    monkeypatch.undo()
    assert searcher.backend == "bm25" and detect_backend(tmp_path / "words") == "bm25"
    assert not any(p.suffix in (".voyager", ".f16") for p in (tmp_path / "words").rglob("*"))
    query = CORPUS[2]
    lexical = searcher.search(query, k=len(CORPUS), mode="bm25")
    assert lexical[0].id == "d2" and all(hit.score > 0 for hit in lexical)
    reranked = searcher.search(query, k=len(CORPUS))  # the folder's mode: bm25+rerank
    expected = rerank(searcher.model, query, [hit.text for hit in lexical])  # MaxSim of the same candidates
    assert [hit.id for hit in reranked] == [lexical[int(hit.id)].id for hit in expected]
    assert np.allclose([hit.score for hit in reranked], [hit.score for hit in expected], atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="BM25 only; search it with mode bm25 or bm25\\+rerank"):
        searcher.search(query, mode="late")
    with pytest.raises(InvalidArgumentError, match="mode must be one of late, bm25, bm25\\+rerank, fusion"):
        searcher.search(query, mode="hybrid")
    opened = Searcher.open(tmp_path / "words")
    assert opened.mode == "bm25+rerank" and [h.id for h in opened.search(query, k=3)] == [h.id for h in reranked[:3]]
    for read_only in (False, True):  # pylate's Voyager class over a words-only folder: refused, nothing written
        with pytest.raises(IndexFormatError, match="holds a bm25 index, not a Voyager one; open it with Searcher"):
            VoyagerIndex(tmp_path, "words", embedding_size=searcher.embedding_size, read_only=read_only)
    assert detect_backend(tmp_path / "words") == "bm25" and Searcher.open(tmp_path / "words").search(query, k=1)


def test_mode_fusion_keeps_bm25_beside_the_vectors_through_every_write(gemma_model, tmp_path):
    ids = [f"d{i}" for i in range(len(CORPUS))]
    long_text = " ".join(CORPUS) * 6  # split into passages
    searcher = Searcher(gemma_model, tmp_path / "both", mode="fusion", show_progress_bar=False)
    searcher.index([*CORPUS, long_text], ids=[*ids, "long"])
    assert searcher.backend == "voyager" and (tmp_path / "both" / "bm25" / LEXICAL_MANIFEST).is_file()
    assert len(searcher.lexical) == len(searcher.index_store) > len(CORPUS) + 1
    query = CORPUS[3]
    late = searcher.search(query, k=len(CORPUS) + 1, mode="late", exact=True, group_by="passage")
    words_only = searcher.search(query, k=len(CORPUS) + 1, mode="bm25", group_by="passage")
    fused = searcher.search(query, k=5, group_by="passage")  # the folder's mode: fusion
    expected = reciprocal_rank_fusion(
        [[{"id": passage_id(h.id, h.passage) if h.id == "long" else h.id} for h in ranking]
         for ranking in (late, words_only)],
        k=5,
    )  # fmt: skip
    assert [passage_id(h.id, h.passage) if h.id == "long" else h.id for h in fused] == [e["id"] for e in expected]
    documents = searcher.search(query, k=len(CORPUS) + 1)
    assert len({hit.id for hit in documents}) == len(documents)  # one hit per document, split ones included
    searcher.delete(["long", "d1"])
    searcher.index(["Quba alması"], ids=["d0"], upsert=True)
    assert len(searcher.lexical) == len(searcher.index_store) == len(CORPUS) - 1
    assert searcher.search("Quba alması", k=1, mode="bm25")[0].id == "d0"
    reopened = Searcher.open(tmp_path / "both")
    assert reopened.mode == "fusion" and "d1" not in [h.id for h in reopened.search(CORPUS[1], k=20, mode="bm25")]
    # the vectors changed behind the BM25 index's back (a write interrupted between the two): refused on open
    VoyagerIndex(tmp_path, "both", embedding_size=searcher.embedding_size).remove_documents(["d2"])
    with pytest.raises(IndexFormatError, match="does not match the vector index"):
        Searcher.open(tmp_path / "both")


def test_modes_an_index_cannot_serve_are_one_line_errors(gemma_model, tmp_path):
    late = Searcher(gemma_model, tmp_path / "late", show_progress_bar=False)
    late.index(CORPUS[:3])
    with pytest.raises(InvalidArgumentError, match=r"needs a BM25 index and the index at .* has none"):
        late.search(CORPUS[0], mode="fusion")
    with pytest.raises(InvalidArgumentError, match="built without BM25; build it again with mode fusion"):
        Searcher(gemma_model, tmp_path / "late", mode="fusion")
    require_extra("qdrant_client", "qdrant")
    with pytest.raises(InvalidArgumentError, match="which a Qdrant index does not keep"):
        Searcher(gemma_model, tmp_path / "qdrant", backend="qdrant", mode="fusion")
    with pytest.raises(InvalidArgumentError, match="candidates"):
        late.search(CORPUS[0], candidates=0)


def _beir_folder(folder, corpus: list[str]):
    """A BEIR folder whose query i is document i's text (BM25 finds each at rank 1)."""
    (folder / "qrels").mkdir(parents=True)
    docs = [
        json.dumps({"_id": f"d{i}", "title": "", "text": text}, ensure_ascii=False) for i, text in enumerate(corpus)
    ]
    (folder / "corpus.jsonl").write_text("\n".join(docs) + "\n", encoding="utf-8")
    queries = [json.dumps({"_id": f"q{i}", "text": text}, ensure_ascii=False) for i, text in enumerate(corpus)]
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    qrels = ["query-id\tcorpus-id\tscore", *(f"q{i}\td{i}\t1" for i in range(len(corpus)))]
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


def test_cli_index_search_and_evaluate_take_the_mode(gemma_model, tmp_path, capsys, monkeypatch):
    from colbert_az_pylate.cli import EXIT_BAD_INPUT, main
    from colbert_az_pylate.evaluation.modes import mode_run
    from colbert_az_pylate.loading import load

    monkeypatch.chdir(tmp_path)
    rows = [json.dumps({"id": f"d{i}", "text": text}, ensure_ascii=False) for i, text in enumerate(CORPUS)]
    (tmp_path / "corpus.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["index", gemma_model, "corpus.jsonl", "--index", "idx", "--mode", "fusion", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "fusion" and summary["documents"] == len(CORPUS)
    expected = Searcher.open(tmp_path / "idx").search(CORPUS[4], k=3, mode="bm25")
    assert main(["search", "idx", CORPUS[4], "-k", "3", "--mode", "bm25", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert [hit["id"] for hit in hits] == [hit.id for hit in expected] and hits[0]["id"] == "d4"
    assert main(["search", "idx", CORPUS[4], "--mode", "bm25+rerank", "--candidates", "0"]) == EXIT_BAD_INPUT
    assert "--candidates must be a whole number >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # argparse: one line naming the modes
        main(["search", "idx", CORPUS[4], "--mode", "words"])
    assert stopped.value.code == EXIT_BAD_INPUT and "choose from 'late', 'bm25'" in capsys.readouterr().err
    _beir_folder(tmp_path / "beir", CORPUS)
    runs = {}
    for mode in ("bm25", "bm25+rerank", "fusion"):
        argv = ["evaluate", "--protocol", "beir", "--data", "beir", "--mode", mode, "--candidates", "5"]
        assert main([*argv, "--run-dir", "runs", "--json", gemma_model]) == 0
        report = json.loads(capsys.readouterr().out)[gemma_model]
        assert report["mode"] == mode and report["evaluated"] == len(CORPUS)
        runs[mode] = report
    assert runs["bm25"]["metrics"]["all"]["P@1"] == 1.0  # each query is its document's text
    # the command's run is mode_run's (the searcher's rules, in memory)
    queries = {f"q{i}": text for i, text in enumerate(CORPUS)}
    corpus = {f"d{i}": text for i, text in enumerate(CORPUS)}
    reference = mode_run(load(gemma_model), queries, corpus, mode="bm25+rerank", candidates=5, show_progress_bar=False)
    trec = (tmp_path / "runs").glob("*bm25-rerank.beir.trec")
    saved = {}
    for line in next(trec).read_text().splitlines():
        query, _, doc, _, _, _ = line.split()
        saved.setdefault(query, []).append(doc)
    assert saved == {q: list(docs) for q, docs in reference.items()}
    argv = ["evaluate", "--protocol", "triplets", "--data", "x.jsonl", "--mode", "fusion", gemma_model]
    assert main(argv) == EXIT_BAD_INPUT
    assert "--mode fusion ranks a corpus: use it with --protocol az-mirage or beir" in capsys.readouterr().err


def test_the_server_searches_in_every_mode_and_sees_its_own_writes_in_bm25(gemma_model, tmp_path):
    require_extra("fastapi", "serve")
    from fastapi.testclient import TestClient

    from colbert_az_pylate.serving import create_app

    searcher = Searcher(gemma_model, tmp_path / "both", mode="fusion", show_progress_bar=False)
    searcher.index(CORPUS, ids=[f"d{i}" for i in range(len(CORPUS))])
    expected = {mode: searcher.search(CORPUS[5], k=4, mode=mode) for mode in ("late", "bm25", "bm25+rerank", "fusion")}
    key = "k" * 40
    app = create_app(searcher, api_key=key, allowed_hosts=["testserver"])
    with TestClient(app) as client:
        assert client.get("/health").json()["mode"] == "fusion"
        for mode, hits in expected.items():
            answer = client.post("/search", json={"queries": [CORPUS[5]], "k": 4, "mode": mode})
            assert answer.status_code == 200, answer.text
            found = answer.json()["results"][0]["hits"]
            assert [hit["id"] for hit in found] == [hit.id for hit in hits], mode
            assert np.allclose([hit["score"] for hit in found], [hit.score for hit in hits], atol=1e-4), mode
        added = client.post(
            "/documents",
            json={"documents": [{"id": "new", "text": "Xınalıq kəndi dağlardadır"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert added.status_code == 200, added.text
        answer = client.post("/search", json={"queries": ["xınalıq"], "k": 1, "mode": "bm25"})
        assert answer.json()["results"][0]["hits"][0]["id"] == "new"  # the searches' BM25 view moved to the commit
        refused = client.post("/search", json={"queries": ["x"], "mode": "bm25", "candidates": 0})
        assert refused.status_code == 400 and "candidates must be from 1" in refused.json()["error"]
    late = Searcher(gemma_model, tmp_path / "late", show_progress_bar=False)
    late.index(CORPUS[:3])
    with TestClient(create_app(late, allowed_hosts=["testserver"])) as client:
        refused = client.post("/search", json={"queries": ["x"], "mode": "fusion"})
    assert refused.status_code == 400 and "needs a BM25 index" in refused.json()["error"], refused.text
    assert str(tmp_path) not in refused.json()["error"]  # the server's paths stay private
