"""The answers' JSON, built as bytes: strict JSON (NaN answers null), a search's answer refused (413) as soon as
it grows past the server's limit."""

import logging
import uuid

from colbert_az_pylate.serving.limits import ClientError

__all__ = ["JSON_FLOAT_BYTES", "embeddings_json", "hit_json", "rerank_json", "results_json", "to_json"]

log = logging.getLogger("colbert_az_pylate.serve")

JSON_FLOAT_BYTES = 24  # at most, for one float of a vector in JSON ("-1.2345678901234567e-05,")


def to_json(value) -> bytes:
    """``value`` as strict JSON bytes (pydantic's serialiser; NaN and ±Infinity answer null)."""
    from pydantic_core import to_json as pydantic_to_json  # the [serve] extra: imported by the server only

    return pydantic_to_json(value, inf_nan_mode="null")  # strict JSON: a NaN stored in process answers null


def hit_json(hit) -> bytes:
    """One hit as JSON; metadata that JSON cannot carry answers null (logged)."""
    entry = hit.to_dict()
    try:
        return to_json(entry)
    except Exception as exc:  # metadata stored in process (or by an older server) that JSON cannot carry
        log.warning("the metadata of document %r cannot be sent as JSON (%s); answered as null", hit.id, exc)
        entry["metadata"] = None
        return to_json(entry)


def results_json(queries: list[str], ranked: list, limit: int) -> bytes:
    """``{"results": [{"query", "hits"}]}`` as bytes, refused (413) as soon as it grows past ``limit`` bytes."""
    parts, size = [], 0
    for query, hits in zip(queries, ranked, strict=True):
        part = b'{"query":' + to_json(query) + b',"hits":[' + b",".join(hit_json(hit) for hit in hits) + b"]}"
        size += len(part) + 1
        if size > limit:
            raise ClientError(
                413,
                f"the answer is over this server's limit of {limit} bytes (--max-response-bytes); "
                "ask for fewer hits (k) or fewer queries",
            )
        parts.append(part)
    return b'{"results":[' + b",".join(parts) + b"]}"


def embeddings_json(vectors: list, model: str) -> bytes:
    """pylate's ``/v1/embeddings`` answer: each text's token vectors, the model, the tokens used."""
    tokens = sum(len(vector) for vector in vectors)
    data = b",".join(
        b'{"object":"embedding","embedding":' + to_json(vector.tolist()) + b',"index":' + str(i).encode() + b"}"
        for i, vector in enumerate(vectors)
    )
    usage = to_json({"prompt_tokens": tokens, "total_tokens": tokens})
    return b'{"data":[' + data + b'],"model":' + to_json(model) + b',"usage":' + usage + b"}"


def rerank_json(scores, texts: list[str], top_n: int, return_documents: bool, version: str, tokens: int) -> bytes:
    """Cohere's rerank answer (v1 and v2 alike; Jina's too): results best first, ties in the order given."""
    import numpy as np  # heavy: imported when a rerank is answered, not with the package

    results = []
    for index in np.argsort(-scores, kind="stable")[:top_n]:
        result = {"index": int(index), "relevance_score": float(scores[index])}
        if return_documents:
            result["document"] = {"text": texts[index]}
        results.append(result)
    meta = {"api_version": {"version": version}, "tokens": {"input_tokens": tokens}}
    return to_json({"id": str(uuid.uuid4()), "results": results, "meta": meta, "usage": {"total_tokens": tokens}})
