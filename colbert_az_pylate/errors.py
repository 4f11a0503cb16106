"""Errors raised by colbert_az_pylate.

Every error carries a one-line message that says what is wrong and what to do; the CLI prints it as is.
"""

from __future__ import annotations


class ColbertAzError(Exception):
    """Base class of every error this package raises on bad input."""


class CheckpointError(ColbertAzError):
    """The source folder is not a usable checkpoint in the colbert-az layout."""


class UnsafeProjectionError(CheckpointError):
    """``projection.pt`` holds something other than exactly one 2-D weight."""


class SourceNotFoundError(CheckpointError):
    """The source is neither a local folder nor a reachable hub repository."""


class TokenizerError(CheckpointError):
    """The tokenizer cannot be read, or cannot be made to tokenize like the reference."""


class OutputExistsError(ColbertAzError):
    """The output folder exists and ``overwrite`` was not given."""


class ParityError(ColbertAzError):
    """pylate does not reproduce the reference on at least one probe text."""


class IndexFormatError(ColbertAzError):
    """An index folder is corrupted, truncated, or written by a newer format or another model."""


class IndexLockedError(ColbertAzError):
    """Another process is writing to the same index folder."""
