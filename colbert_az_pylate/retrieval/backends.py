"""The contract between the searcher (and the CLI and server above it) and an index, and the one registry of the
indexes that keep it.

:class:`IndexBackend` says what :class:`~colbert_az_pylate.retrieval.searcher.Searcher` needs of an index: open it
for a model, write a chunk of entries (an entry is a document or one passage of one), rank entries for encoded
queries, read an entry's payload, count and remove. :data:`BACKENDS` names each implementation once; the searcher,
the CLI and the server ask a backend what it can do (:attr:`IndexBackend.updatable`, :attr:`IndexBackend.commits`,
:attr:`IndexBackend.exact_search_available`), never which one it is. A new backend is one module that implements
the contract plus one line in :data:`BACKENDS`.

>>> sorted(BACKENDS)
['bm25', 'plaid', 'qdrant', 'voyager']
>>> backend_class("voyager").updatable, backend_class("plaid").updatable
(True, False)
>>> isinstance(backend_class("qdrant"), type)
True
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from colbert_az_pylate.errors import InvalidArgumentError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "REMOTE_BACKEND",
    "SEARCH_MODES",
    "WORDS_ONLY_BACKEND",
    "WORDS_ONLY_MODES",
    "BackendEntry",
    "IndexBackend",
    "backend_class",
]


@runtime_checkable
class IndexBackend(Protocol):
    """What the searcher needs of an index. Entries are dicts ``{"id": str, "score": float}``, best first.

    Class attributes say what the backend can do, so callers never branch on its name:

    - ``backend_name``: its key in :data:`BACKENDS` (and ``--backend``);
    - ``updatable``: entries can be added and removed after the first write (PLAID: built once);
    - ``commits``: a reader in another process sees a writer's commit only after :meth:`refresh`
      (:meth:`commit_state` tells when one was made);
    - ``exact_search_available``: ``rank(..., exact=True)`` is possible (``always_exact``: every ranking is).
    """

    backend_name: ClassVar[str]
    updatable: ClassVar[bool]
    commits: ClassVar[bool]
    exact_search_available: ClassVar[bool]
    always_exact: ClassVar[bool]

    @classmethod
    def open_for_searcher(
        cls,
        folder: Path,
        *,
        signature: Any,
        embedding_size: int,
        override: bool,
        read_only: bool,
        show_progress: bool | None,
        url: str | None,
        api_key: str | None,
        settings: dict,
    ) -> IndexBackend | None:
        """The index in ``folder`` (created when missing), or ``None`` for a backend written once, not yet built."""

    @classmethod
    def build_for_searcher(
        cls,
        folder: Path,
        ids: list[str],
        vectors: list[np.ndarray],
        payloads: list[dict],
        *,
        signature: Any,
        override: bool,
        show_progress: bool,
        settings: dict,
    ) -> IndexBackend:
        """Build a backend that is written once (``updatable`` False) from all its entries."""

    def write_entries(
        self, ids: list[str], vectors: list[np.ndarray], payloads: list[dict], *, upsert: bool, stale: list[str]
    ) -> None:
        """Add (or with ``upsert`` replace) entries and remove the ``stale`` ones, never leaving a document missing."""

    def batch(self) -> AbstractContextManager:
        """Several :meth:`write_entries` as one commit where the backend has commits (else a no-op context)."""

    def remove_documents(self, documents_ids: Sequence[str]) -> Any:
        """Remove entries by id."""

    def rank(
        self,
        queries_embeddings: Sequence[np.ndarray],
        k: int,
        *,
        exact: bool | None = None,
        k_token: int = 256,
        subset: Sequence[str] | None = None,
    ) -> list[list[dict]]:
        """Top ``k`` entries per query; ``exact`` None picks the faster path, True/False force one where offered."""

    def payload(self, document_id: str) -> dict:
        """The stored payload of an entry (text, metadata, passage fields)."""

    def passage_count(self) -> int:
        """How many entries are passages of split documents."""

    def document_count(self) -> int:
        """How many documents the entries make (a document split into passages counts once)."""

    def commit_state(self) -> Any:
        """A value that changes with every commit (for backends with ``commits``; else ``None``)."""

    def refresh(self) -> Any:
        """Move a reader's view to the latest commit (a no-op for backends without ``commits``)."""

    def __len__(self) -> int: ...

    def __contains__(self, document_id: object) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendEntry:
    """Where an implementation of :class:`IndexBackend` lives (imported on first use: Qdrant's and PLAID's
    dependencies load only when an index of theirs is opened)."""

    name: str
    title: str
    module: str
    class_name: str
    updatable: bool = True  # the class's own flag, known here without importing it (a test holds them equal)
    stores_vectors: bool = True  # False: a BM25 index, searched by text (modes bm25, bm25+rerank), never encoded for
    bm25_beside: bool = True  # a BM25 companion can live in its folder (mode fusion); Qdrant's storage is its own
    manifest: str | None = None  # the file in its folder that records the model; None: the index records it itself
    remote: bool = False  # it can live on a server (url=, --url) instead of in a folder

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)


VOYAGER_MANIFEST = "manifest.json"
PLAID_MANIFEST = "plaid-manifest.json"
LEXICAL_MANIFEST = "bm25-manifest.json"  # a BM25 index (retrieval.lexical): on its own, or in a vector index's bm25/

SEARCH_MODES = ("late", "bm25", "bm25+rerank", "fusion")  # retrieval.hybrid's; here for the CLI's choices (light)
WORDS_ONLY_MODES = ("bm25", "bm25+rerank")  # the modes a BM25 index alone serves (no vectors stored)

BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry(
            "voyager", "Voyager", "colbert_az_pylate.retrieval.voyager_index", "VoyagerIndex", manifest=VOYAGER_MANIFEST
        ),
        BackendEntry(
            "plaid",
            "PLAID",
            "colbert_az_pylate.retrieval.plaid_index",
            "PlaidIndex",
            updatable=False,
            manifest=PLAID_MANIFEST,
        ),
        BackendEntry(
            "qdrant",
            "Qdrant",
            "colbert_az_pylate.retrieval.qdrant_index",
            "QdrantIndex",
            bm25_beside=False,
            remote=True,
        ),
        BackendEntry(
            "bm25",
            "BM25",
            "colbert_az_pylate.retrieval.lexical",
            "LexicalIndex",
            stores_vectors=False,
            bm25_beside=False,
            manifest=LEXICAL_MANIFEST,
        ),
    )
}


DEFAULT_BACKEND = "voyager"  # what a new folder gets when no backend is named
REMOTE_BACKEND = next(entry.name for entry in BACKENDS.values() if entry.remote)  # what url= (--url) opens
WORDS_ONLY_BACKEND = next(entry.name for entry in BACKENDS.values() if not entry.stores_vectors)


def backend_class(name: str) -> type:
    """The class registered as ``name`` in :data:`BACKENDS` (one-line error for an unknown name)."""
    if name not in BACKENDS:
        raise InvalidArgumentError(f"unknown index backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name].load()
