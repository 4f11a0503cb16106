"""Index folders through the Searcher and the ``index`` command: the folder's backend, override without data loss,
folders that are not ours, build-once PLAID, default ids."""

from __future__ import annotations

import json

import pytest
from tiny_checkpoints import CORPUS

from colbert_az_pylate.cli import main
from colbert_az_pylate.errors import ColbertAzError, OutputExistsError
from colbert_az_pylate.retrieval.corpus import demo_corpus_path
from colbert_az_pylate.retrieval.plaid_index import MANIFEST as PLAID_MANIFEST
from colbert_az_pylate.retrieval.searcher import Searcher
from colbert_az_pylate.retrieval.voyager_index import MANIFEST


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


@pytest.fixture(scope="module")
def plaid_folder(gemma_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plaid") / "index"
    Searcher(gemma_model, folder, backend="plaid", show_progress_bar=False).index(CORPUS)  # ids default: 0..11
    return folder


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error") or "Traceback" in line]


def _corpus(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_a_plaid_index_without_ids_numbers_its_documents_and_each_text_finds_itself(plaid_folder):
    searcher = Searcher.open(plaid_folder, show_progress_bar=False)
    assert searcher.backend == "plaid" and searcher.index_store.doc_ids == [str(i) for i in range(len(CORPUS))]
    for position, text in enumerate(CORPUS):
        assert searcher.search(text, k=1)[0].id == str(position)


def test_index_without_backend_refuses_to_add_to_a_plaid_index_and_writes_nothing(
    gemma_model, plaid_folder, tmp_path, capsys
):
    before = _snapshot(plaid_folder)
    corpus = _corpus(tmp_path / "more.jsonl", [{"id": "new", "text": "Gəncə qədim şəhərdir."}])
    assert main(["index", gemma_model, corpus, "--index", str(plaid_folder)]) == 2
    error = capsys.readouterr().err
    assert "built once" in error and "--override" in error and len(_error_lines(error)) == 1
    assert main(["index", gemma_model, corpus, "--index", str(plaid_folder), "--backend", "voyager"]) == 2
    assert "holds a PLAID index" in capsys.readouterr().err
    with pytest.raises(ColbertAzError, match="built once"):
        Searcher(gemma_model, plaid_folder, show_progress_bar=False).index(["Gəncə"], ids=["new"])
    assert _snapshot(plaid_folder) == before and not (plaid_folder / MANIFEST).exists()


def test_index_without_backend_adds_to_a_voyager_index_and_refuses_plaid_there(gemma_model, tmp_path, capsys):
    folder = tmp_path / "voyager"
    first = _corpus(tmp_path / "a.jsonl", [{"id": "a", "text": CORPUS[0]}])
    second = _corpus(tmp_path / "b.jsonl", [{"id": "b", "text": CORPUS[1]}])
    assert main(["index", gemma_model, first, "--index", str(folder), "--json"]) == 0
    assert main(["index", gemma_model, second, "--index", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["documents"] == 2
    assert main(["index", gemma_model, second, "--index", str(folder), "--backend", "plaid", "--override"]) == 2
    assert "holds a Voyager index" in capsys.readouterr().err
    assert not (folder / PLAID_MANIFEST).exists() and len(Searcher.open(folder)) == 2


def test_override_with_an_invalid_corpus_keeps_the_old_index_and_unrelated_files(gemma_model, tmp_path, capsys):
    folder = tmp_path / "index"
    assert main(["index", gemma_model, str(demo_corpus_path()), "--index", str(folder), "--json"]) == 0
    (folder / "notes.txt").write_text("mine")
    before = _snapshot(folder)
    bad = _corpus(tmp_path / "bad.jsonl", [{"id": "x", "text": "bir"}, {"id": "x", "text": "iki"}])
    assert main(["index", gemma_model, bad, "--index", str(folder), "--override"]) == 2
    assert "duplicate" in capsys.readouterr().err
    assert _snapshot(folder) == before and len(Searcher.open(folder)) == 53
    good = _corpus(tmp_path / "good.jsonl", [{"id": "x", "text": "bir"}, {"id": "y", "text": "iki"}])
    assert main(["index", gemma_model, good, "--index", str(folder), "--override", "--json"]) == 0
    capsys.readouterr()
    assert Searcher.open(folder).index_store.doc_ids == ["x", "y"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_override_that_fails_while_encoding_keeps_the_old_index(gemma_model, tmp_path, monkeypatch):
    folder = tmp_path / "index"
    Searcher(gemma_model, folder, show_progress_bar=False).index(CORPUS[:3], ids=["a", "b", "c"])
    replacing = Searcher(gemma_model, folder, override=True, show_progress_bar=False)

    def interrupted(documents):
        raise KeyboardInterrupt

    monkeypatch.setattr(replacing, "encode_documents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        replacing.index(CORPUS[3:6], ids=["d", "e", "f"])
    assert Searcher.open(folder).index_store.doc_ids == ["a", "b", "c"]


def test_index_refuses_a_folder_that_is_not_an_index(gemma_model, tmp_path, capsys):
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    corpus = str(demo_corpus_path())
    for extra in ([], ["--override"], ["--backend", "plaid", "--override"]):
        assert main(["index", gemma_model, corpus, "--index", str(folder), *extra]) == 2
        assert "not an index" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    with pytest.raises(OutputExistsError, match="not an index"):
        Searcher(gemma_model, folder)


def test_an_index_whose_manifest_was_lost_is_refused_by_index_and_search(gemma_model, tmp_path, capsys):
    folder = tmp_path / "index"
    Searcher(gemma_model, folder, show_progress_bar=False).index(CORPUS[:3], ids=["a", "b", "c"])
    (folder / MANIFEST).unlink()
    before = _snapshot(folder)
    corpus = str(demo_corpus_path())
    assert main(["index", gemma_model, corpus, "--index", str(folder), "--override"]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["search", str(folder), "Bakı"]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_default_ids_never_collide_after_deletes(gemma_model, tmp_path):
    searcher = Searcher(gemma_model, tmp_path / "index", show_progress_bar=False)
    searcher.index(CORPUS[:4])
    searcher.delete(["1"])
    searcher.index_store.compact()
    searcher.index(CORPUS[4:6])  # used to reuse "3", already taken: "already in the index"
    assert sorted(searcher.index_store.doc_ids, key=int) == ["0", "2", "3", "4", "5"]


def test_a_missing_docs_file_is_a_one_line_error_of_search(gemma_model, tmp_path, capsys):
    folder = tmp_path / "index"
    Searcher(gemma_model, folder, show_progress_bar=False).index(CORPUS[:3])
    next(folder.glob("docs.*.npz")).unlink()
    assert main(["search", str(folder), "Bakı"]) == 2
    error = capsys.readouterr().err
    assert "is missing" in error and len(_error_lines(error)) == 1
