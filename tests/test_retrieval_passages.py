"""Long documents: split into token windows that the model encodes whole, found past token 256, mapped back."""

from __future__ import annotations

import itertools
import json

import pytest
from tiny_checkpoints import CORPUS, FAMILIES
from transformers import AutoTokenizer

from colbert_az_pylate.cli import main
from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError
from colbert_az_pylate.retrieval.passages import PASSAGE_SEPARATOR, split_document
from colbert_az_pylate.retrieval.searcher import Searcher
from colbert_az_pylate.tokenization import DOCUMENT_LENGTH, document_token_count

# The fact is the only English in the long document, so its tokens are unique there: the answer is certain.
FACT = CORPUS[8]  # "The quick brown fox jumps over the lazy dog near the river bank."
FILLER = [CORPUS[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 11)]
SHORT = {f"short{i}": CORPUS[i] for i in (0, 1, 4, 9, 10)}


def long_document(words: int = 3000, fact_at: float = 0.95) -> str:
    """About ``words`` words of Azerbaijani sentences with FACT near the end."""
    sentences, count = [], 0
    while count < words:
        sentence = FILLER[len(sentences) % len(FILLER)]
        sentences.append(sentence)
        count += len(sentence.split())
    sentences.insert(int(len(sentences) * fact_at), FACT)
    return " ".join(sentences)


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


@pytest.fixture
def searcher(gemma_model, tmp_path):
    built = Searcher(gemma_model, tmp_path / "index", show_progress_bar=False)
    documents = [long_document(), *SHORT.values()]
    built.index(documents, ids=["long", *SHORT], metadata=[{"kind": "law"}] + [{"kind": "note"}] * len(SHORT))
    return built


def test_a_fact_near_the_end_of_a_3000_word_document_is_found_and_the_hit_points_at_its_span(searcher):
    document = long_document()
    assert len(document.split()) >= 3000
    before_fact = document[: document.index(FACT)]
    assert document_token_count(searcher.model.tokenizer, before_fact) > 10 * DOCUMENT_LENGTH  # far past token 256
    for exact in (False, True):
        best = searcher.search(FACT, k=3, exact=exact)[0]
        assert best.id == "long" and best.metadata == {"kind": "law"}
        start, end = best.span
        assert document[start:end] == best.text and FACT in best.text
        assert best.passage > 0


def test_the_report_counts_split_documents_and_their_passages_and_len_counts_documents(searcher):
    report = searcher.passage_report
    assert (report.documents, report.split_documents) == (1 + len(SHORT), 1)
    assert report.passages > 10 and report.entries == report.passages + len(SHORT)
    assert len(searcher) == 1 + len(SHORT) and len(searcher.index_store) == report.entries


def test_every_passage_is_encoded_whole_and_the_passages_cover_the_document(searcher):
    document, tokenizer = long_document(), searcher.model.tokenizer
    passages = split_document(document, tokenizer, searcher.model.document_length)
    assert all(document_token_count(tokenizer, p.text) <= DOCUMENT_LENGTH for p in passages)
    assert all(document[p.start : p.end] == p.text for p in passages)
    assert passages[0].start == 0 and passages[-1].end == len(document)
    gaps = [document[a.end : b.start] for a, b in itertools.pairwise(passages) if b.start > a.end]
    assert all(not gap.strip() for gap in gaps)  # consecutive windows overlap or touch: no text is left out
    stored = [searcher.index_store.payload(f"long{PASSAGE_SEPARATOR}{p.number}")["span"] for p in passages]
    assert stored == [list(p.span) for p in passages]
    vectors = searcher.index_store.document_embeddings(f"long{PASSAGE_SEPARATOR}{len(passages) - 1}")
    assert len(vectors) == document_token_count(tokenizer, passages[-1].text)  # nothing truncated


@pytest.mark.parametrize("family", FAMILIES)
def test_windows_fit_the_model_and_map_back_for_every_tokenizer_family(converted, family):
    tokenizer = AutoTokenizer.from_pretrained(converted[family][0])
    document = "  " + long_document(words=1200) + "\n"
    passages = split_document(document, tokenizer, DOCUMENT_LENGTH, overlap=16)
    assert len(passages) > 2
    assert all(document_token_count(tokenizer, p.text) <= DOCUMENT_LENGTH for p in passages)
    assert all(document[p.start : p.end] == p.text and p.text == p.text.strip() for p in passages)
    assert sum(FACT in p.text for p in passages) >= 1


def test_windows_end_at_sentence_boundaries_when_one_falls_inside(searcher):
    passages = split_document(long_document(), searcher.model.tokenizer, DOCUMENT_LENGTH)
    assert all(p.text.endswith(".") for p in passages)


def test_search_by_passage_returns_several_passages_of_one_document(searcher):
    hits = searcher.search(CORPUS[1], k=8, group_by="passage", exact=True)
    passages_of_long = [h.passage for h in hits if h.id == "long"]
    assert len(passages_of_long) >= 2 and len(set(passages_of_long)) == len(passages_of_long)
    by_document = searcher.search(CORPUS[1], k=len(SHORT) + 1, exact=True)
    assert sorted(h.id for h in by_document) == sorted(["long", *SHORT])
    assert by_document[[h.id for h in by_document].index("long")].score == max(h.score for h in hits if h.id == "long")


def test_subset_names_documents_and_reaches_their_passages(searcher):
    hits = searcher.search(FACT, k=2, subset=["long"])
    assert [h.id for h in hits] == ["long"] and FACT in hits[0].text


def test_delete_removes_every_passage_and_frees_the_id(searcher):
    searcher.delete("long")
    assert len(searcher.index_store) == len(SHORT) and len(searcher) == len(SHORT)
    assert all(h.id != "long" for h in searcher.search(FACT, k=10, group_by="passage", exact=True))
    searcher.add(["Qısa mətn."], ids=["long"])  # the id is free again, no upsert needed
    assert searcher.search("Qısa mətn.", k=1, subset=["long"])[0].span == (0, 10)


def test_upsert_replaces_every_passage_even_when_there_are_fewer(searcher):
    shorter = long_document(words=600, fact_at=0.5)
    searcher.add([shorter], ids=["long"], upsert=True)
    count = searcher.passage_report.passages
    assert 1 < count < 10
    entries = [e for e in searcher.index_store._positions if e.startswith("long")]
    assert len(entries) == count
    searcher.add(["Bir cümlə."], ids=["long"], upsert=True)
    assert [e for e in searcher.index_store._positions if e.startswith("long")] == ["long"]
    with pytest.raises(InvalidArgumentError, match="already in the index"):
        searcher.add([shorter], ids=["long"])


def test_without_passages_a_long_document_is_truncated_as_before(gemma_model, tmp_path):
    truncated = Searcher(gemma_model, tmp_path / "truncated", show_progress_bar=False)
    truncated.index([long_document(), *SHORT.values()], ids=["long", *SHORT], passages=False)
    assert truncated.passage_report.split_documents == 0 and len(truncated.index_store) == 1 + len(SHORT)
    hit = next(h for h in truncated.search(FACT, k=10, exact=True) if h.id == "long")
    assert hit.span == (0, len(long_document())) and hit.passage == 0  # the whole text, as stored before


def test_an_index_of_short_documents_is_stored_as_before_passages_existed(gemma_model, tmp_path):
    plain = Searcher(gemma_model, tmp_path / "plain", show_progress_bar=False)
    plain.index(list(SHORT.values()), ids=list(SHORT))
    assert plain.index_store.payload("short0") == {"text": CORPUS[0], "metadata": {}}
    assert plain.search(CORPUS[0], k=1)[0].span == (0, len(CORPUS[0]))


@pytest.mark.slow
def test_plaid_indexes_long_documents_as_passages(gemma_model, tmp_path):
    plaid = Searcher(gemma_model, tmp_path / "plaid", backend="plaid", show_progress_bar=False)
    plaid.index([long_document(), *SHORT.values()], ids=["long", *SHORT])
    best = plaid.search(FACT, k=2)[0]
    assert best.id == "long" and FACT in best.text
    assert long_document()[best.span[0] : best.span[1]] == best.text
    reopened = Searcher.open(tmp_path / "plaid", show_progress_bar=False)
    assert len(reopened) == 1 + len(SHORT)
    assert {h.id for h in reopened.search(CORPUS[1], k=len(SHORT) + 1)} == {"long", *SHORT}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"documents": [long_document(), "  \n "], "ids": ["a", "b"]}, "document 1 is empty or whitespace only"),
        ({"documents": ["bir"], "ids": [f"a{PASSAGE_SEPARATOR}0"]}, "marks passages"),
        ({"documents": [long_document()], "ids": ["a"], "overlap": 200}, "overlap must be"),
        ({"documents": [long_document()], "ids": ["a"], "overlap": -1}, "overlap must be"),
    ],
)
def test_bad_input_is_refused_with_one_line_before_anything_is_encoded(searcher, monkeypatch, kwargs, message):
    monkeypatch.setattr(searcher, "encode_documents", lambda texts: pytest.fail("encoded"))
    with pytest.raises(ColbertAzError, match=message):
        searcher.add(**kwargs)


def test_index_and_search_commands_report_passages(gemma_model, tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    rows = [{"id": "long", "text": long_document()}, *({"id": k, "text": v} for k, v in SHORT.items())]
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    index = str(tmp_path / "index")
    assert main(["index", gemma_model, str(corpus), "--index", index, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 1 + len(SHORT) and summary["passages"]["split_documents"] == 1
    assert main(["search", index, FACT, "-k", "3", "--passages", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert hits[0]["id"] == "long" and FACT in hits[0]["text"] and len(hits[0]["span"]) == 2
    assert main(["index", gemma_model, str(corpus), "--index", index, "--upsert", "--overlap", "0"]) == 0
    assert "1 of 6 documents split into" in capsys.readouterr().out
    for exact in (["--exact"], []):  # the graph after an upsert of every document once found nothing (exit 3)
        assert main(["search", index, FACT, "-k", "3", *exact]) == 0
        assert capsys.readouterr().out.splitlines()[1].split()[2] == "long"
