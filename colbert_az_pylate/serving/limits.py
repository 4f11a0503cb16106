"""What one request may ask of the server (:class:`ServeLimits`), and the checks that refuse the rest as a
:class:`ClientError`: an HTTP status and a one-line reason."""

import json
from dataclasses import dataclass
from typing import Any

from colbert_az_pylate.errors import InvalidArgumentError

__all__ = [
    "ClientError",
    "ServeLimits",
    "check_count",
    "check_metadata",
    "check_texts",
    "check_unicode",
    "client_gone",
    "nested_deeper_than",
]


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server; anything beyond is refused with a 4xx and a one-line reason.

    Attributes
    ----------
    max_k
        Hits per query, at most (default 1000; ``--max-k``).
    max_queries
        Queries per ``/search`` request and texts per ``/v1/embeddings`` request (default 64; ``--max-queries``).
    max_documents
        Documents per ``POST /documents`` request, and ids per ``DELETE /documents`` or ``subset`` (x 100)
        (default 256; ``--max-documents``).
    max_query_chars
        Characters per query text (default 2,000; ``--max-query-chars``).
    max_document_chars
        Characters per document text (default 200,000: about 100 passages to encode; ``--max-document-chars``).
    max_body_bytes
        Bytes per request body, checked on ``Content-Length`` and on what actually arrives (default 4 MiB;
        ``--max-body-bytes``).
    max_embedding_chars
        Characters of all the inputs of one ``/v1/embeddings`` request together (default 128,000: 64 queries of
        2,000; ``--max-embedding-chars``): what one request may cost the tokenizer and the model.
    max_response_bytes
        Bytes of one answer (default 16 MiB; ``--max-response-bytes``): an embeddings request whose vectors could
        be larger is refused before it is encoded, a search whose hits are larger once serialised.
    max_metadata_bytes
        Bytes of one document's metadata, serialised as JSON (default 16 KiB; ``--max-metadata-bytes``).
    max_metadata_depth
        Nesting levels of one document's metadata (default 32; ``--max-metadata-depth``).
    max_rerank_documents
        Documents per rerank request (default 1,000, Cohere's advice; ``--max-rerank-documents``).
    max_rerank_chars
        Characters of the query and all the documents of one rerank request together (default 1,000,000;
        ``--max-rerank-chars``): what one request may cost the tokenizer.

    Examples
    --------
    >>> ServeLimits(max_k=100).max_k, ServeLimits().max_body_bytes
    (100, 4194304)
    """

    max_k: int = 1000
    max_queries: int = 64
    max_documents: int = 256
    max_query_chars: int = 2000
    max_document_chars: int = 200_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_embedding_chars: int = 128_000
    max_response_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 32
    max_rerank_documents: int = 1000
    max_rerank_chars: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {value!r}")


class ClientError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def client_gone() -> ClientError:
    """The 499 of a request whose client disconnected before its answer (the work stops; nothing is sent)."""
    return ClientError(499, "the client disconnected; its request was dropped")


def check_count(value: int, limit: int, what: str, flag: str) -> None:
    """Refuse (413) more than ``limit`` ``what`` in one request, naming the server's ``flag``."""
    if value > limit:
        raise ClientError(413, f"{value} {what} in one request; this server takes at most {limit} ({flag})")


def check_texts(texts: list[str], what: str, limit: int, limit_flag: str) -> None:
    """Refuse an empty text (400), one over ``limit`` characters (413) or one that is not text (400)."""
    for position, text in enumerate(texts):
        if not text.strip():
            raise ClientError(400, f"{what}[{position}] is empty or whitespace only; give it text")
        if len(text) > limit:
            raise ClientError(
                413, f"{what}[{position}] has {len(text)} characters; this server takes at most {limit} ({limit_flag})"
            )
        check_unicode(text, f"{what}[{position}]")


def check_unicode(value: Any, where: str) -> None:
    """Refuse (400) a value holding a lone surrogate, which cannot be stored or sent as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError(400, f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not text") from None
    except (TypeError, ValueError, RecursionError):
        return  # the searcher's own checks name what cannot be stored


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` levels (itself counted; no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_metadata(metadata: list[dict], ids: list[str], limits: ServeLimits) -> None:
    """Metadata that can be stored and sent back: nested at most ``max_metadata_depth`` levels, strict JSON
    (finite numbers, no lone surrogate), at most ``max_metadata_bytes`` serialised. Every search that returns a
    document serialises its metadata: one that cannot be must never get in."""
    depth, size = limits.max_metadata_depth, limits.max_metadata_bytes
    for position, (entry, doc_id) in enumerate(zip(metadata, ids, strict=True)):
        where = f"documents[{position}].metadata"
        if nested_deeper_than(entry, depth):
            raise ClientError(
                422, f"{where} (id {doc_id!r}) is nested more than {depth} levels deep (--max-metadata-depth)"
            )
        try:
            serialised = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise ClientError(
                400, f"{where} holds NaN or Infinity, which JSON cannot carry; send null or a text"
            ) from None
        except (TypeError, RecursionError) as exc:
            raise ClientError(422, f"{where} (id {doc_id!r}) cannot be stored as JSON: {exc}") from None
        try:
            length = len(serialised.encode("utf-8"))
        except UnicodeEncodeError:
            raise ClientError(400, f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not text") from None
        if length > size:
            raise ClientError(
                413,
                f"{where} (id {doc_id!r}) is {length} bytes as JSON; this server stores at most {size} "
                "(--max-metadata-bytes)",
            )
