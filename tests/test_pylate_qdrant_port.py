"""pylate's own index tests, run against :class:`QdrantIndex` (embedded).

Ported from lightonai/pylate 1.6.0 (MIT License, Copyright (c) 2024 LightOn): ``tests/test_plaid.py::test_plaid``
and ``tests/test_delete_parity.py`` (the contract of an end-to-end index, which ``QdrantIndex`` is, like PLAID), and
the retriever part of ``tests/test_retriever.py::test_voyager_index`` (``retrieve.ColBERT(index=...)`` unchanged).
Changes: ``indexes.PLAID`` is our ``QdrantIndex``; the model is a tiny offline converted checkpoint (dimension 128)
instead of ``lightonai/GTE-ModernColBERT-v1`` from the hub; folders are made in a temporary working directory; the
retriever test's checks of ``index(...)`` are the end-to-end format (PLAID's), not Voyager's token neighbours.
"""

from __future__ import annotations

import shutil
import types
import uuid

import pytest
from extras import require_extra

require_extra("qdrant_client", "qdrant")

from pylate import models, retrieve  # noqa: E402

from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex  # noqa: E402

indexes = types.SimpleNamespace(PLAID=QdrantIndex, Qdrant=QdrantIndex)


@pytest.fixture(scope="module")
def offline_model_name(tmp_path_factory):
    from tiny_checkpoints import build_checkpoint

    from colbert_az_pylate import convert

    root = tmp_path_factory.mktemp("qdrant-port-model")
    convert(build_checkpoint(root / "raw", "gemma", embedding_dim=128), root / "model", verify=False)
    return str(root / "model")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _make_model(name):
    return models.ColBERT(model_name_or_path=name, device="cpu")


def test_plaid(offline_model_name, in_tmp):
    random_hash = uuid.uuid4().hex

    index = indexes.PLAID(
        index_folder=f"test_indexes_{random_hash}",
        index_name=f"colbert_{random_hash}",
        override=True,
    )

    model = _make_model(offline_model_name)

    documents_embeddings = model.encode(
        [
            "The nutritional profile of fruits is exceptional, containing essential vitamins, minerals, and "
            "antioxidants that support immune function.",
            "Recent nutritional studies have challenged traditional views on fruit consumption.",
        ],
        is_query=False,
    )

    index = index.add_documents(documents_ids=["1", "2"], documents_embeddings=documents_embeddings)

    queries_embeddings = model.encode(
        ["fruits are healthy.", "fruits are good for health and fun."],
        is_query=True,
    )

    matches = index(queries_embeddings, k=30)

    assert isinstance(matches, list)
    assert len(matches) == 2
    assert len(matches[0]) == 2
    assert matches[0][0].keys() == {"id", "score"}

    queries_embeddings = model.encode(
        "fruits are healthy.",
        is_query=True,
    )

    matches = index(queries_embeddings, k=30)

    assert isinstance(matches, list)
    assert len(matches) == 1
    assert len(matches[0]) == 2
    assert matches[0][0].keys() == {"id", "score"}

    # Test loading
    index = indexes.PLAID(
        index_folder=f"test_indexes_{random_hash}",
        index_name=f"colbert_{random_hash}",
        override=False,
    )

    matches = index(queries_embeddings, k=30)
    assert isinstance(matches, list)
    assert len(matches) == 1
    assert len(matches[0]) == 2
    assert matches[0][0].keys() == {"id", "score"}

    # Test removing documents
    index.remove_documents(
        documents_ids=["1"],
    )

    matches = index(queries_embeddings, k=30)
    assert isinstance(matches, list)
    assert len(matches) == 1
    assert len(matches[0]) == 1
    assert matches[0][0].keys() == {"id", "score"}

    # Test second insertion after init of the index
    index.add_documents(
        documents_ids=["1"],
        documents_embeddings=documents_embeddings[0],
    )

    matches = index(queries_embeddings, k=30)
    assert isinstance(matches, list)
    assert len(matches) == 1
    assert len(matches[0]) == 2
    assert matches[0][0].keys() == {"id", "score"}

    del index
    shutil.rmtree(f"test_indexes_{random_hash}")


def _ids(matches):
    """Flatten a single-query ``__call__`` result into a set of doc IDs."""
    return {m["id"] for m in matches[0]}


def test_delete_keeps_higher_ids_addressable(offline_model_name, in_tmp):
    random_hash = uuid.uuid4().hex
    folder = f"test_indexes_{random_hash}"
    name = f"qdrant_{random_hash}"

    try:
        index = indexes.Qdrant(index_folder=folder, index_name=name, override=True)
        model = _make_model(offline_model_name)

        documents = [
            "Document about apples and their nutritional benefits.",
            "Document about bananas and their vitamin content.",
            "Document about cherries and antioxidants.",
            "Document about dates and natural sugars.",
            "Document about elderberries and immune support.",
        ]
        embeddings = model.encode(documents, is_query=False)
        index.add_documents(
            documents_ids=["A", "B", "C", "D", "E"],
            documents_embeddings=embeddings,
        )

        query = model.encode(["fruit nutrition"], is_query=True)

        assert _ids(index(query, k=10)) == {"A", "B", "C", "D", "E"}

        index.remove_documents(["B"])
        assert _ids(index(query, k=10)) == {"A", "C", "D", "E"}

        f_embedding = model.encode(["Document about figs and dietary fiber."], is_query=False)
        index.add_documents(documents_ids=["F"], documents_embeddings=f_embedding)
        assert _ids(index(query, k=10)) == {"A", "C", "D", "E", "F"}

        index.remove_documents(["A"])
        assert _ids(index(query, k=10)) == {"C", "D", "E", "F"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_delete_then_readd_same_id(offline_model_name, in_tmp):
    random_hash = uuid.uuid4().hex
    folder = f"test_indexes_{random_hash}"
    name = f"qdrant_{random_hash}"

    try:
        index = indexes.Qdrant(index_folder=folder, index_name=name, override=True)
        model = _make_model(offline_model_name)

        documents = [
            "Document about apples.",
            "Document about bananas.",
            "Document about cherries.",
        ]
        embeddings = model.encode(documents, is_query=False)
        index.add_documents(documents_ids=["A", "B", "C"], documents_embeddings=embeddings)

        index.remove_documents(["B"])

        new_embedding = model.encode(["Document about blueberries."], is_query=False)
        index.add_documents(documents_ids=["B"], documents_embeddings=new_embedding)

        query = model.encode(["fruit"], is_query=True)
        assert _ids(index(query, k=10)) == {"A", "B", "C"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_retriever_on_qdrant_index(offline_model_name, in_tmp):
    """The configurations of pylate's ``test_voyager_index``, through ``retrieve.ColBERT`` unchanged."""
    model = _make_model(offline_model_name)

    configurations = [
        {
            "sentences": ["fruits are healthy.", "fruits are good for health."],
            "convert_to_tensor": True,
            "batch_size": 1,
            "document_ids": ["1", "2"],
        },
        {
            "sentences": ["fruits are healthy.", "fruits are good for health."],
            "convert_to_tensor": False,
            "batch_size": 1,
            "document_ids": ["1", "2"],
        },
        {
            "sentences": "fruits are healthy.",
            "convert_to_tensor": True,
            "batch_size": 1,
            "document_ids": ["1"],
        },
        {
            "sentences": "fruits are healthy.",
            "convert_to_tensor": False,
            "batch_size": 1,
            "document_ids": ["1"],
        },
    ]

    for configuration in configurations:
        documents_ids = configuration.pop("document_ids")

        index = indexes.Qdrant(
            index_folder="test_indexes",
            index_name="colbert",
            override=True,
            embedding_size=128,
        )

        documents_embeddings = model.encode(
            **configuration,
            is_query=False,
        )

        index.add_documents(documents_ids=documents_ids, documents_embeddings=documents_embeddings)

        queries_embeddings = model.encode(
            **configuration,
            is_query=True,
        )

        matches = index(queries_embeddings, k=5)

        assert isinstance(matches, list)
        assert len(matches) == (len(configuration["sentences"]) if isinstance(configuration["sentences"], list) else 1)

        retriever = retrieve.ColBERT(index=index)
        results = retriever.retrieve(
            queries_embeddings=queries_embeddings,
            k=5,
        )

        assert isinstance(results, list)
        assert len(results) == (len(configuration["sentences"]) if isinstance(configuration["sentences"], list) else 1)

        for query_results in results:
            for result in query_results:
                assert "id" in result
                assert "score" in result

        # Each sentence, as a query, finds itself as a document first (the ids follow the sentences).
        assert [query_results[0]["id"] for query_results in results] == documents_ids

        subset = retriever.retrieve(queries_embeddings=queries_embeddings, k=5, subset=documents_ids[-1:])
        assert all({hit["id"] for hit in query_results} == set(documents_ids[-1:]) for query_results in subset)
