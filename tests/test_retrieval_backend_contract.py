"""The index backend contract: every registered backend keeps it, the searcher speaks only to it (a new backend is
one class plus one registry line), and the same corpus gives the same answers through every updatable backend."""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import CORPUS

from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError
from colbert_az_pylate.retrieval import backends
from colbert_az_pylate.retrieval.backends import BACKENDS, BackendEntry, IndexBackend, backend_class
from colbert_az_pylate.retrieval.passages import count_entries, passage_id
from colbert_az_pylate.retrieval.searcher import Searcher

CONTRACT = [name for name in dir(IndexBackend) if not name.startswith("_") and name not in dir(object)]


@pytest.fixture(scope="module")
def gemma_model(converted):
    return str(converted["gemma"][0])


class ListBackend:
    """A backend of ~40 lines that keeps entries in a dict and scores exactly: what a new backend has to write."""

    backend_name = "list"
    updatable, commits, exact_search_available, always_exact = True, False, True, True

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.payloads: dict[str, dict] = {}

    @classmethod
    def open_for_searcher(cls, folder, **kwargs):
        return cls()

    @classmethod
    def build_for_searcher(cls, *args, **kwargs):
        raise ColbertAzError("written with write_entries")

    def write_entries(self, ids, vectors, payloads, *, upsert, stale):
        for entry_id, matrix, payload in zip(ids, vectors, payloads, strict=True):
            self.vectors[entry_id], self.payloads[entry_id] = np.asarray(matrix, np.float32), payload
        self.remove_documents(stale)

    def batch(self):
        return contextlib.nullcontext(self)

    def remove_documents(self, documents_ids):
        for entry_id in documents_ids:
            self.vectors.pop(entry_id), self.payloads.pop(entry_id)

    def rank(self, queries_embeddings, k, *, exact=None, k_token=256, subset=None):
        allowed = set(self.vectors if subset is None else subset)
        answers = []
        for query in queries_embeddings:
            scores = {
                i: float((np.asarray(query) @ m.T).max(axis=1).sum()) for i, m in self.vectors.items() if i in allowed
            }
            ranked = sorted(scores.items(), key=lambda item: -item[1])[:k]
            answers.append([{"id": entry_id, "score": score} for entry_id, score in ranked])
        return answers

    def payload(self, document_id):
        return self.payloads[document_id]

    def passage_count(self):
        return count_entries(self.vectors)[0]

    def document_count(self):
        return count_entries(self.vectors)[1]

    def commit_state(self):
        return None

    def refresh(self):
        return self

    def __len__(self):
        return len(self.vectors)

    def __contains__(self, document_id):
        return document_id in self.vectors

    def close(self):
        pass


def test_the_registry_names_each_backend_once_and_an_unknown_name_is_one_line():
    assert set(BACKENDS) == {"voyager", "plaid", "qdrant", "bm25"}
    for name, entry in BACKENDS.items():
        assert entry.name == name and backend_class(name).backend_name == name
        assert entry.updatable == backend_class(name).updatable
    with pytest.raises(
        InvalidArgumentError, match="unknown index backend 'faiss'; choose one of bm25, plaid, qdrant, voyager"
    ):
        backend_class("faiss")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_registered_backend_implements_the_whole_contract(name):
    cls = backend_class(name)
    missing = [member for member in CONTRACT if not hasattr(cls, member)]
    assert not missing, f"{cls.__name__} lacks {missing}"
    for flag in ("updatable", "commits", "exact_search_available", "always_exact"):
        assert isinstance(getattr(cls, flag), bool), flag
    for method in ("rank", "write_entries"):  # the keyword-only arguments callers pass by name
        parameters = inspect.signature(getattr(cls, method)).parameters
        wanted = {"rank": {"exact", "k_token", "subset"}, "write_entries": {"upsert", "stale"}}[method]
        assert wanted <= set(parameters), (name, method, set(parameters))
    assert issubclass(ListBackend, object) and isinstance(ListBackend(), IndexBackend)


def test_the_searcher_works_with_a_new_backend_registered_in_one_line(gemma_model, tmp_path, monkeypatch):
    """Index, search (whole documents and passages), upsert, delete, count: no code of the searcher names it."""
    monkeypatch.setitem(BACKENDS, "list", BackendEntry("list", "List", __name__, "ListBackend"))
    reference = Searcher(gemma_model, tmp_path / "voyager", show_progress_bar=False)
    toy = Searcher(gemma_model, tmp_path / "list", backend="list", show_progress_bar=False)
    assert isinstance(toy.index_store, ListBackend)
    ids = [f"d{i}" for i in range(len(CORPUS))]
    long_text = " ".join(CORPUS) * 6  # split into passages by both
    for searcher in (reference, toy):
        searcher.index([*CORPUS, long_text], ids=[*ids, "long"])
    assert len(toy) == len(reference) == len(CORPUS) + 1
    assert toy.index_store.passage_count() == reference.index_store.passage_count() > 1
    for query in CORPUS[:4]:  # Voyager keeps float16 vectors: the same ranking, scores within float16's precision
        expected = reference.search(query, k=5, exact=True)
        found = toy.search(query, k=5)
        assert [hit.id for hit in found] == [hit.id for hit in expected]
        assert np.allclose([hit.score for hit in found], [hit.score for hit in expected], rtol=1e-3)
    toy.index(["Quba alması"], ids=["d0"], upsert=True)
    assert toy.index_store.payload("d0")["text"] == "Quba alması" and len(toy) == len(CORPUS) + 1
    assert "Quba alması" in [hit.text for hit in toy.search("Quba alması", k=len(CORPUS) + 1)]
    toy.delete(["long", "d1"])
    assert len(toy) == len(CORPUS) - 1 and "d1" not in [hit.id for hit in toy.search(CORPUS[1], k=20)]
    assert not any(passage_id("long", 0) == entry for entry in toy.index_store.vectors)


@pytest.mark.parametrize("name", ["voyager", "qdrant"])
def test_updatable_backends_keep_the_contract_through_the_searcher(name, gemma_model, tmp_path):
    if name == "qdrant":
        from extras import require_extra

        require_extra("qdrant_client", "qdrant")
    searcher = Searcher(gemma_model, tmp_path / name, backend=name, show_progress_bar=False)
    store = searcher.index_store
    assert isinstance(store, IndexBackend) and store.backend_name == name
    before = store.commit_state()
    searcher.index(CORPUS[:6], ids=[f"d{i}" for i in range(6)])
    if store.commits:
        assert store.commit_state() != before  # readers can tell that a commit was made
    queries = searcher.encode_queries(CORPUS[:2])
    ranked = store.rank(queries, 3, exact=True)
    assert [entries[0]["id"] for entries in ranked] == ["d0", "d1"]
    assert store.rank(queries, 3, subset=["d4", "d5"])[0][0]["id"] in {"d4", "d5"}
    assert store.passage_count() == 0 and store.document_count() == len(store) == 6
    store.write_entries(
        ["d6"], searcher.encode_documents(["Naxçıvan"]), [{"text": "Naxçıvan"}], upsert=False, stale=["d5"]
    )
    assert "d6" in store and "d5" not in store and store.payload("d6")["text"] == "Naxçıvan"
    searcher.index_store.close()


def test_a_backend_written_once_refuses_writes_and_exact_ranking_through_the_contract(gemma_model, tmp_path):
    searcher = Searcher(gemma_model, tmp_path / "plaid", backend="plaid", show_progress_bar=False)
    assert searcher.index_store is None  # not built yet
    searcher.index(CORPUS)
    store = searcher.index_store
    assert not store.updatable and store.commit_state() is None and len(store) == len(CORPUS)
    with pytest.raises(ColbertAzError, match="built once"):
        store.write_entries(["x"], [np.ones((2, 128), np.float32)], [{}], upsert=False, stale=[])
    with pytest.raises(InvalidArgumentError, match="exact search"):
        store.rank(searcher.encode_queries(["Bakı"]), 1, exact=True)
    with pytest.raises(ColbertAzError, match="PLAID indexes cannot be changed in place"):
        searcher.delete(["0"])
    # served: read-only whatever the flags, and the start line says why (not "read-write")
    from colbert_az_pylate.cli import build_parser
    from colbert_az_pylate.cli.serve import server_settings

    key = tmp_path / "serve.key"
    key.write_text("k" * 40)
    key.chmod(0o600)
    args = build_parser().parse_args(["serve", str(tmp_path / "plaid"), "--api-key-file", str(key)])
    settings = server_settings(args)
    assert settings["writable"] is False and settings["built_once"] == "PLAID"
    from fastapi.testclient import TestClient

    from colbert_az_pylate.serving import create_app

    app = create_app(searcher, api_key="k" * 40, allowed_hosts=["testserver"])
    with TestClient(app) as client:  # a key, yet writes are refused: the answer says why
        answer = client.post("/documents", json={"documents": [{"id": "x", "text": "Bakı"}]},
                             headers={"Authorization": "Bearer " + "k" * 40})  # fmt: skip
    assert answer.status_code == 403 and "PLAID index is built once" in answer.json()["error"], answer.text


def test_the_contract_module_imports_nothing_heavy():
    """The CLI imports the registry for --backend's choices: it must not load torch or an index library."""
    import subprocess
    import sys

    heavy = ("torch", "voyager", "qdrant_client", "fast_plaid", "numpy")
    code = f"import sys, colbert_az_pylate.retrieval.backends; print(sorted(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded
    assert Path(backends.__file__).stat().st_size < 12_000
