"""Retrieval: indexes behind one contract (:mod:`~colbert_az_pylate.retrieval.backends`: Voyager, PLAID, Qdrant),
the searcher over any of them, corpus reading, the demo.

Names are imported on first use, so that ``colbert-az --help`` or a corpus check never loads torch or an index
library it does not need.

>>> from colbert_az_pylate.retrieval import Searcher
>>> Searcher.__name__
'Searcher'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from colbert_az_pylate.retrieval.corpus import Corpus, read_corpus
    from colbert_az_pylate.retrieval.plaid_index import PlaidIndex
    from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex
    from colbert_az_pylate.retrieval.searcher import Hit, Searcher, rerank
    from colbert_az_pylate.retrieval.voyager_index import ModelSignature, VoyagerIndex

_LAZY = {
    "Corpus": "colbert_az_pylate.retrieval.corpus",
    "read_corpus": "colbert_az_pylate.retrieval.corpus",
    "PlaidIndex": "colbert_az_pylate.retrieval.plaid_index",
    "QdrantIndex": "colbert_az_pylate.retrieval.qdrant_index",
    "Hit": "colbert_az_pylate.retrieval.searcher",
    "Searcher": "colbert_az_pylate.retrieval.searcher",
    "rerank": "colbert_az_pylate.retrieval.searcher",
    "ModelSignature": "colbert_az_pylate.retrieval.voyager_index",
    "VoyagerIndex": "colbert_az_pylate.retrieval.voyager_index",
}

__all__ = [
    "Corpus",
    "Hit",
    "ModelSignature",
    "PlaidIndex",
    "QdrantIndex",
    "Searcher",
    "VoyagerIndex",
    "read_corpus",
    "rerank",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'colbert_az_pylate.retrieval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
