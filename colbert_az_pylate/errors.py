"""Errors raised by colbert_az_pylate.

One policy: every error caused by the caller's input (an argument, a file, a folder, a config) is a
:class:`ColbertAzError` carrying a one-line message that says what is wrong and what to do; the CLI prints it as is
and exits 2. Any other exception is a bug of ours: the CLI prints a short "internal error" line and exits 3.

>>> from colbert_az_pylate.errors import InvalidArgumentError, ColbertAzError
>>> issubclass(InvalidArgumentError, ColbertAzError), issubclass(InvalidArgumentError, ValueError)
(True, True)
"""

from __future__ import annotations

import errno
import numbers
import os


class ColbertAzError(Exception):
    """Base class of every error this package raises on bad input."""


class InvalidArgumentError(ColbertAzError, ValueError):
    """An argument has the wrong type or value (``k=0``, ``batch_size=-3``, non-JSON metadata …)."""


class DataFormatError(ColbertAzError, ValueError):
    """An input file or row is malformed (a corpus, triplets, a data set, a qrels file …); the message names where."""


class ConfigError(DataFormatError):
    """A training config (YAML) has an unknown key or a value of the wrong type."""


class CheckpointError(ColbertAzError):
    """The source folder is not a usable checkpoint in the colbert-az layout."""


class UnsafeProjectionError(CheckpointError):
    """``projection.pt`` holds something other than exactly one 2-D weight."""


class SourceNotFoundError(CheckpointError):
    """The source is neither a local folder nor a reachable hub repository."""


class TokenizerError(CheckpointError):
    """The tokenizer cannot be read, or cannot be made to tokenize like the reference."""


class OutputExistsError(ColbertAzError):
    """The output folder exists and ``overwrite`` was not given, or writing it would destroy something else."""


class ParityError(ColbertAzError):
    """pylate does not reproduce the reference on at least one probe text."""


class IndexFormatError(ColbertAzError):
    """An index folder is corrupted, truncated, or written by a newer format or another model."""


class IndexLockedError(ColbertAzError):
    """Another writer holds the same index folder."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name: for one-line error messages.

    >>> first_line(OSError("disk full\\nmore detail"))
    'disk full'
    >>> first_line(KeyError())
    'KeyError'
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# errno -> what to do: an OS condition that is the user's situation (permissions, a full disk, a port in use),
# not a bug of ours; anything else stays an internal error
_SYSTEM_ADVICE = {
    errno.EACCES: "make it writable (or readable) for this user, or choose another path",
    errno.EPERM: "make it writable (or readable) for this user, or choose another path",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOSPC: "the disk is full; free some space or choose another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another disk",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose a path under a folder",
    errno.EISDIR: "it is a folder where a file was expected; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EADDRINUSE: "another process holds it; stop that process or choose another --port",
    errno.EADDRNOTAVAIL: "this machine has no such address; choose another --host",
}


def system_condition(exc: BaseException) -> str | None:
    """One line for an OS condition the user can act on (a read-only folder, a full disk, a path under a file, a
    port in use), naming the path and the OS reason and saying what to do; ``None`` for any other exception.

    >>> system_condition(OSError(30, "Read-only file system", "/srv/index"))
    'cannot use /srv/index: Read-only file system; choose a path on a writable file system'
    >>> system_condition(ValueError("x")) is None
    True
    """
    if not isinstance(exc, OSError):
        return None
    what = f"cannot use {exc.filename}" if exc.filename is not None else "the operating system refused"
    reason = exc.strerror or first_line(exc)
    if exc.errno == errno.EEXIST and exc.filename is not None and not os.path.isdir(exc.filename):
        # mkdir(parents=True) of a path under a file: the file is in the way
        return f"{what}: {exc.filename} exists and is not a folder; choose a path that is not under a file"
    advice = _SYSTEM_ADVICE.get(exc.errno)
    return None if advice is None else f"{what}: {reason}; {advice}"


def check_count(value, name: str) -> int:
    """``value`` as an int if it is a whole number >= 1; else a one-line :class:`InvalidArgumentError`.

    The one rule for counts (``k``, ``batch_size``, ``-k``, ``--batch-size`` …), for the API and the CLI alike.

    Parameters
    ----------
    value
        The value to check; ``True``, ``2.5``, ``"3"`` and ``None`` are refused, numpy integers accepted.
    name
        Its name in the message (``"k"``, or a flag such as ``"--batch-size"``).

    Returns
    -------
    int
        The value.

    Examples
    --------
    >>> check_count(3, "k")
    3
    >>> check_count("3", "k")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: k must be a whole number >= 1, got '3' (str)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {value!r} ({type(value).__name__})")
    return int(value)
