"""colbert-az-pylate: LocalDoc/colbert-az as an exact, first-class pylate model.

>>> import colbert_az_pylate
>>> sorted(colbert_az_pylate.__all__)[:3]
['ColbertAzError', 'ConversionReport', 'ParityReport']
"""

from colbert_az_pylate.conversion import ConversionReport, ParityReport, convert, verify
from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.loading import load
from colbert_az_pylate.reference import ReferenceColBERT

__version__ = "0.1.0"

__all__ = [
    "ColbertAzError",
    "ConversionReport",
    "ParityReport",
    "ReferenceColBERT",
    "convert",
    "load",
    "verify",
]
