"""Document ids: the one rule every index, the searcher and corpus reading apply to them."""

from __future__ import annotations

from collections.abc import Iterable

from colbert_az_pylate.errors import InvalidArgumentError


def check_document_ids(ids: Iterable[str], count: int | None = None, *, where: str = "") -> list[str]:
    """The ids as a list, or a one-line error: ids must be non-empty strings, unique, and one per document.

    Parameters
    ----------
    ids
        The document ids, in document order. A single string is refused (wrap it in a list).
    count
        The number of documents the ids belong to; ``None`` skips that check.
    where
        Where the ids come from (``"corpus docs.jsonl"``), put at the front of an error message.

    Returns
    -------
    list[str]
        The ids, as a new list.

    Raises
    ------
    InvalidArgumentError
        No ids, an id that is not a non-empty string, a duplicate, or a count that does not match.

    Examples
    --------
    >>> check_document_ids(("a", "b"), count=2)
    ['a', 'b']
    >>> check_document_ids(["a", "b", "a"])
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: duplicate document ids: ['a']; give every document its own id
    >>> check_document_ids(["a", 7])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: document id 1 is 7 (int), not a non-empty string; ...
    """
    prefix = f"{where}: " if where else ""
    if isinstance(ids, (str, bytes)):
        raise InvalidArgumentError(f"{prefix}document ids must be a list of strings, not one string; wrap it in a list")
    ids = list(ids)
    if not ids:
        raise InvalidArgumentError(f"{prefix}no document ids: there is nothing to index")
    for position, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidArgumentError(
                f"{prefix}document id {position} is {doc_id!r} ({type(doc_id).__name__}), not a non-empty string; "
                "convert ids with str()"
            )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicates: list[str] = []
        for doc_id in ids:
            if doc_id in seen and doc_id not in duplicates:
                duplicates.append(doc_id)
            seen.add(doc_id)
        raise InvalidArgumentError(f"{prefix}duplicate document ids: {duplicates[:5]}; give every document its own id")
    if count is not None and len(ids) != count:
        raise InvalidArgumentError(f"{prefix}{count} documents but {len(ids)} ids; give one id per document")
    return ids
