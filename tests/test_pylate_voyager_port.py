"""pylate's own ``tests/test_retriever.py::test_voyager_index``, run against :class:`VoyagerIndex`.

Ported from lightonai/pylate (MIT License, Copyright (c) 2024 LightOn) with three changes only: ``indexes.Voyager``
is our drop-in; the model is a tiny offline converted checkpoint (dimension 128, as the test expects) instead of
``sentence-transformers/all-MiniLM-L6-v2`` from the hub; and the two checks of the number of results per query are
parenthesised as meant (upstream's ``assert (a == b if cond else 1)`` passes for a single sentence whatever ``a``
is). The test writes ``test_indexes/`` in the working directory, so it runs in a temporary one.
"""

from __future__ import annotations

import types

import pytest
from pylate import models, retrieve

from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex

indexes = types.SimpleNamespace(Voyager=VoyagerIndex)


@pytest.fixture
def offline_model_name(converted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return str(converted["gemma"][0])


def test_voyager_index(offline_model_name) -> None:
    """Test the Voyager index class."""

    model = models.ColBERT(model_name_or_path=offline_model_name)

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

        index = indexes.Voyager(
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

        assert isinstance(matches, dict)
        assert "documents_ids" in matches
        assert "distances" in matches

        assert len(matches["distances"]) == (
            len(configuration["sentences"]) if isinstance(configuration["sentences"], list) else 1
        )

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
