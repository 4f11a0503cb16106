"""colbert-az-pylate: LocalDoc/colbert-az as an exact, first-class pylate model.

The public names are imported on first use, so ``import colbert_az_pylate`` (and ``colbert-az --help``) does not
pay for torch and transformers.

>>> import colbert_az_pylate
>>> sorted(colbert_az_pylate.__all__)[:3]
['ColbertAzError', 'ConversionReport', 'ParityReport']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.threads import prefer_sleeping_threads

prefer_sleeping_threads()  # before anything of ours loads torch (threads.py says why)

if TYPE_CHECKING:
    from colbert_az_pylate.conversion import ConversionReport, ParityReport, convert, verify
    from colbert_az_pylate.loading import load
    from colbert_az_pylate.reference import ReferenceColBERT
    from colbert_az_pylate.retrieval import Searcher

__version__ = "0.1.0"

_LAZY = {
    "ConversionReport": "colbert_az_pylate.conversion",
    "ParityReport": "colbert_az_pylate.conversion",
    "convert": "colbert_az_pylate.conversion",
    "verify": "colbert_az_pylate.conversion",
    "load": "colbert_az_pylate.loading",
    "ReferenceColBERT": "colbert_az_pylate.reference",
    "Searcher": "colbert_az_pylate.retrieval",
}

__all__ = [
    "ColbertAzError",
    "ConversionReport",
    "ParityReport",
    "ReferenceColBERT",
    "Searcher",
    "convert",
    "load",
    "verify",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'colbert_az_pylate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
