"""What :class:`~colbert_az_pylate.retrieval.qdrant_index.QdrantIndex` stores in a Qdrant collection and reads
back: point ids, points, payloads, the collection's vectors and its metadata record, search requests.

A document is one point: a multivector ``"colbert"`` of its L2-normalised token vectors (``MAX_SIM``), one vector
``"mean"`` (their normalised mean, for an optional first stage), and a payload holding the document's id
(``"document_id"``) and the caller's payload. Requests go through the index's ``call`` (retried, one-line errors:
:func:`~colbert_az_pylate.retrieval.qdrant_connection.call_with_retries`); ``qdrant-client``'s ``models`` is passed
in or imported when a collection is opened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

import numpy as np

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    InvalidArgumentError,
    OutputExistsError,
    first_line,
)
from colbert_az_pylate.retrieval.qdrant_connection import import_qdrant
from colbert_az_pylate.signature import ModelSignature

__all__ = [
    "DOCUMENT_ID",
    "FORMAT_VERSION",
    "MEAN_VECTOR",
    "METADATA_KEY",
    "MULTIVECTOR",
    "as_subsets",
    "check_payloads",
    "check_record",
    "collection_vectors",
    "document_points",
    "open_collection",
    "payload_filter",
    "point_id",
    "read_record",
    "search_requests",
]

FORMAT_VERSION = 1
METADATA_KEY = "colbert_az"  # the collection metadata entry this package writes and checks
MULTIVECTOR = "colbert"  # the token vectors of a document, MAX_SIM
MEAN_VECTOR = "mean"  # one normalised mean vector per document, for the first stage
DOCUMENT_ID = "document_id"  # the payload key holding the document's own id
_NAMESPACE = uuid.UUID("5b1f3c1e-0c2a-4d7e-9b8e-6a2f0c9d4e11")  # fixed forever: point ids depend on it


def point_id(document_id: str) -> str:
    """The Qdrant point id of a document: ``uuid5`` of its id, the same in every process and on every server.

    Parameters
    ----------
    document_id
        The document's id (any non-empty string).

    Returns
    -------
    str
        A UUID, as text.

    Examples
    --------
    >>> point_id("baku")
    '0ec5619f-5646-5438-a898-0f848239191a'
    """
    return str(uuid.uuid5(_NAMESPACE, document_id))


def _normalised_mean(unit: np.ndarray) -> np.ndarray:
    mean = unit.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def document_points(models: ModuleType, ids: Sequence[str], matrices, payloads: Sequence[dict]) -> list:
    """One ``PointStruct`` per document: its normalised token vectors, their normalised mean and its payload."""
    points = []
    for doc_id, matrix, payload in zip(ids, matrices, payloads, strict=True):
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        points.append(
            models.PointStruct(
                id=point_id(doc_id),
                vector={MULTIVECTOR: unit.tolist(), MEAN_VECTOR: _normalised_mean(unit).tolist()},
                payload={**payload, DOCUMENT_ID: doc_id},
            )
        )
    return points


def search_requests(models: ModuleType, queries, subsets, k: int, first_stage: int | None) -> list:
    """One ``QueryRequest`` per query: MaxSim over the (allowed) documents, after the mean-vector first stage when
    ``first_stage`` is given."""
    requests = []
    for query, allowed in zip(queries, subsets, strict=True):
        unit = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        where = None
        if allowed is not None:
            where = models.Filter(must=[models.HasIdCondition(has_id=[point_id(i) for i in allowed])])
        prefetch = None
        if first_stage is not None:
            mean = _normalised_mean(unit).tolist()
            prefetch = models.Prefetch(query=mean, using=MEAN_VECTOR, limit=first_stage, filter=where)
        requests.append(
            models.QueryRequest(
                query=unit.tolist(),
                using=MULTIVECTOR,
                prefetch=prefetch,
                filter=where,
                limit=k,
                with_payload=models.PayloadSelectorInclude(include=[DOCUMENT_ID]),
            )
        )
    return requests


def collection_vectors(models: ModuleType, embedding_size: int) -> dict:
    """The named vectors of a new collection: the MaxSim multivector and the first stage's mean vector."""
    return {
        # The multivector is the exact rerank: no graph (m=0), as Qdrant advises for rerank vectors.
        MULTIVECTOR: models.VectorParams(
            size=embedding_size,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0),
        ),
        MEAN_VECTOR: models.VectorParams(size=embedding_size, distance=models.Distance.COSINE),
    }


def open_collection(
    call: Callable, client, collection: str, where: str, model: ModelSignature | None, embedding_size: int, *,
    override: bool, open_existing: bool, shards: int | None, replicas: int | None,
) -> tuple[int, dict | None]:  # fmt: skip
    """Open (checked against ``model`` or ``embedding_size``) or create the collection; returns its dimension and
    model signature (as a dict). ``override`` deletes it first; ``open_existing`` refuses a missing one."""
    _, models = import_qdrant()
    exists = call("checking the collection", client.collection_exists, collection)
    if exists and override:
        call("deleting the collection (override)", client.delete_collection, collection)
        exists = False
    if not exists and open_existing:
        raise InvalidArgumentError(
            f"no collection {collection!r} in {where}; build it first (colbert-az index --backend qdrant)"
        )
    if exists:
        return check_record(where, read_record(call, client, collection), model, embedding_size, open_existing)
    stored_model = model.to_dict() if model is not None else None
    if stored_model is not None:
        embedding_size = stored_model["embedding_size"]
    record = {"format_version": FORMAT_VERSION, "embedding_size": embedding_size, "model": stored_model}
    call(
        "creating the collection",
        client.create_collection,
        collection,
        vectors_config=collection_vectors(models, embedding_size),
        shard_number=shards,
        replication_factor=replicas,
        metadata={METADATA_KEY: record},
    )
    if read_record(call, client, collection) is None:
        raise ColbertAzError(
            f"{where} does not keep collection metadata (Qdrant server older than 1.16?); "
            "upgrade the server, the index records its model there"
        )
    return embedding_size, stored_model


def read_record(call: Callable, client, collection: str) -> dict | None:
    """The collection's metadata record written by this package (``None`` when it has none)."""
    info = call("reading the collection", client.get_collection, collection)
    metadata = getattr(info.config, "metadata", None) or {}
    record = metadata.get(METADATA_KEY)
    return record if isinstance(record, dict) else None


def payload_filter(models: ModuleType, key: str, value=None):
    """Points whose payload has ``key`` (equal to ``value`` when one is given)."""
    if value is None:
        return models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))])
    return models.Filter(must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))])


def check_record(
    where: str, record: dict | None, model: ModelSignature | None, embedding_size: int, open_existing: bool
) -> tuple[int, dict | None]:
    """Check an existing collection's metadata record against the model (or dimension) asked for; returns the
    stored dimension and model signature (as a dict)."""
    if record is None:
        raise OutputExistsError(
            f"{where} was not created by colbert-az-pylate (no {METADATA_KEY!r} metadata); choose "
            "another collection, or pass override=True to replace it"
        )
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{where} has format {version!r}, this colbert-az-pylate reads up to {FORMAT_VERSION}; upgrade"
        )
    stored_size, stored_model = int(record["embedding_size"]), record.get("model")
    if model is None and stored_size != embedding_size and not open_existing:
        raise IndexFormatError(
            f"{where} holds dimension {stored_size}, not {embedding_size}; pass the index's embedding_size or "
            "override=True"
        )
    wanted = model.to_dict() if model is not None else None
    if model is not None and not model.made(stored_model):
        raise IndexFormatError(
            f"{where} was built with {stored_model['name']} (dim {stored_model['embedding_size']}, fingerprint "
            f"{stored_model['fingerprint']}), not {wanted['name']} (dim {wanted['embedding_size']}, fingerprint "
            f"{wanted['fingerprint']}); use that model or a new collection"
        )
    if wanted is not None and wanted["embedding_size"] != stored_size:
        raise IndexFormatError(
            f"{where} holds dimension {stored_size}, the model makes {wanted['embedding_size']}; use a new collection"
        )
    return stored_size, stored_model


def check_payloads(payloads, count: int) -> list[dict]:
    """``count`` JSON-serialisable dicts without the reserved key (``None``: empty payloads)."""
    if payloads is None:
        return [{}] * count
    if isinstance(payloads, (dict, str, bytes)) or not isinstance(payloads, Iterable):
        raise InvalidArgumentError(f"payloads must be a list of {count} dicts, one per document")
    payloads = list(payloads)
    if len(payloads) != count or not all(isinstance(p, dict) for p in payloads):
        raise InvalidArgumentError(f"payloads must be a list of {count} dicts, one per document")
    for position, payload in enumerate(payloads):
        if DOCUMENT_ID in payload:
            raise InvalidArgumentError(f"payload {position} uses the reserved key {DOCUMENT_ID!r}; rename it")
        try:
            json.dumps(payload, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"payload {position} cannot be stored as JSON: {first_line(exc)}") from exc
    return payloads


def as_subsets(subset, queries: int) -> list[list[str] | None]:
    """pylate's ``subset``: one list of ids for every query, or one list per query."""
    if subset is None:
        return [None] * queries
    if isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable):
        raise InvalidArgumentError("subset must be a list of document ids (or one list per query), not one id")
    subset = list(subset)
    if subset and all(isinstance(group, (list, tuple)) for group in subset):
        if len(subset) != queries:
            raise InvalidArgumentError(f"{queries} queries but {len(subset)} subsets; give one list per query")
        return [[str(i) for i in group] for group in subset]
    return [[str(i) for i in subset]] * queries
