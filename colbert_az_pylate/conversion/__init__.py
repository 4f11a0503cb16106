"""Conversion of colbert-az checkpoints into pylate models, and the parity check that proves it."""

from colbert_az_pylate.conversion.converter import ConversionReport, convert
from colbert_az_pylate.conversion.verification import ParityReport, verify

__all__ = ["ConversionReport", "ParityReport", "convert", "verify"]
