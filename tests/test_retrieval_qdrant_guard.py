"""The embedded-Qdrant unpickling guard depends on qdrant-client internals: these tests fail loudly when they change,
and the guard itself refuses (naming the qdrant-client version) instead of guarding nothing."""

from __future__ import annotations

import inspect
import pickle

import pytest
from extras import require_extra

require_extra("qdrant_client", "qdrant")

from colbert_az_pylate.retrieval.qdrant_guard import (  # noqa: E402
    ALLOWED_CLASSES,
    QdrantGuardError,
    check_guard_applies,
    guarded,
    qdrant_client_version,
)
from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex  # noqa: E402


def test_the_installed_qdrant_client_unpickles_stored_points_where_the_guard_expects():
    """If this fails, qdrant-client changed how local mode stores points: review qdrant_guard before upgrading."""
    from qdrant_client.http.models import models as point_models
    from qdrant_client.local import persistence

    assert check_guard_applies() is persistence
    assert persistence.pickle is pickle, "qdrant_client.local.persistence no longer imports the pickle module"
    assert "pickle.loads(" in inspect.getsource(persistence), "local mode no longer reads points with pickle.loads"
    assert "pickle.dumps(point)" in inspect.getsource(persistence), "local mode no longer writes points as pickles"
    assert ("qdrant_client.http.models.models", "PointStruct") in ALLOWED_CLASSES
    point = point_models.PointStruct(id=1, vector={"v": [0.5, 1.0]}, payload={"t": ["x", {"n": 1}]})
    assert point.__class__.__module__ == "qdrant_client.http.models.models"
    with guarded("folder"):
        assert persistence.pickle.loads(pickle.dumps(point)) == point  # what qdrant-client writes still loads
    assert persistence.pickle is pickle


@pytest.mark.parametrize("change", ["pickle removed", "pickle replaced", "point class moved"])
def test_the_guard_refuses_naming_the_version_when_qdrant_client_internals_change(tmp_path, monkeypatch, change):
    from qdrant_client.http.models import models as point_models
    from qdrant_client.local import persistence

    if change == "pickle removed":
        monkeypatch.delattr(persistence, "pickle")
    elif change == "pickle replaced":
        monkeypatch.setattr(persistence, "pickle", object())
    else:
        monkeypatch.delattr(point_models, "SparseVector")
    version = qdrant_client_version()
    assert version != "unknown"
    with pytest.raises(QdrantGuardError, match=f"qdrant-client {version} .*cannot guard"), guarded(tmp_path):
        pass  # pragma: no cover
    with pytest.raises(QdrantGuardError, match=f"qdrant-client {version}") as refused:
        QdrantIndex(tmp_path, "q", embedding_size=4)
    assert "\n" not in str(refused.value)
