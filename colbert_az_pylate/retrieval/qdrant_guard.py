"""Guarded unpickling for embedded Qdrant: no code runs from a file an embedded index loads.

The embedded client (``qdrant-client``'s local mode) stores every point in SQLite as a pickle
(``qdrant_client/local/persistence.py``: ``pickle.loads`` on each row when a collection is loaded). While
:func:`guarded` is active, that module's ``pickle`` is a stand-in whose ``loads`` only rebuilds what qdrant-client
itself writes there: a ``PointStruct`` (and a ``SparseVector``) of plain containers (payloads are stored as JSON
types, vectors as lists of floats). Anything else is refused with one line before it is built. Threads that are not
inside :func:`guarded` (other code using qdrant-client) unpickle as before, and the module's own ``pickle`` is put
back when the last guarded call of the process ends.

The guard depends on those qdrant-client internals; when they are not what it expects (no ``pickle`` attribute in
that module, or the stored point classes moved), :func:`guarded` raises :class:`QdrantGuardError` naming the
installed qdrant-client version instead of silently guarding nothing (``tests/test_retrieval_qdrant_guard.py``).
``qdrant-client`` is imported only when a guarded call runs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, first_line

__all__ = ["ALLOWED_CLASSES", "QdrantGuardError", "check_guard_applies", "guarded", "qdrant_client_version"]

PERSISTENCE_MODULE = "qdrant_client.local.persistence"  # the module whose ``pickle`` the guard replaces
ALLOWED_CLASSES = frozenset(
    {
        ("qdrant_client.http.models.models", "PointStruct"),
        ("qdrant_client.http.models.models", "SparseVector"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }
)
_GUARD = threading.local()  # .folders: the embedded folders this thread is reading, innermost last
_GUARD_MUTEX = threading.Lock()
_GUARD_STATE: dict = {"depth": 0, "original": None}


class QdrantGuardError(ColbertAzError):
    """The installed qdrant-client stores embedded points in a way the unpickling guard does not know."""


class _RefusedPickleError(Exception):
    pass


class _PointUnpickler(pickle.Unpickler):
    """An unpickler that builds only qdrant-client's stored point classes and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_CLASSES:
            raise _RefusedPickleError(f"{module}.{name}")
        return super().find_class(module, name)


def _restricted_loads(data: bytes, folder: str):
    try:
        return _PointUnpickler(io.BytesIO(data)).load()
    except _RefusedPickleError as exc:
        raise IndexFormatError(
            f"the embedded Qdrant index at {folder} holds a stored point that would build {exc} (only "
            "qdrant-client's point classes are allowed; it was not written by qdrant-client), so nothing was "
            "loaded; rebuild the index from its corpus"
        ) from None
    except Exception as exc:  # truncated or damaged bytes
        raise IndexFormatError(
            f"the embedded Qdrant index at {folder} holds a damaged stored point ({type(exc).__name__}: "
            f"{first_line(exc)}); rebuild the index from its corpus"
        ) from None


class _GuardedPickle:
    """Stands in for the ``pickle`` module inside ``qdrant_client.local.persistence`` (``dumps`` is unchanged)."""

    def __getattr__(self, name: str):
        return getattr(pickle, name)

    @staticmethod
    def loads(data, /, *args, **kwargs):
        folders = getattr(_GUARD, "folders", None)
        if not folders:
            return pickle.loads(data, *args, **kwargs)
        return _restricted_loads(data, folders[-1])


_GUARDED_PICKLE = _GuardedPickle()


def qdrant_client_version() -> str:
    """The installed qdrant-client's version, as its package metadata says.

    Returns
    -------
    str
        Such as ``"1.12.1"``; ``"unknown"`` when the metadata cannot be read.

    Examples
    --------
    >>> isinstance(qdrant_client_version(), str)
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qdrant-client")
    except PackageNotFoundError:
        return "unknown"


def _unsupported(what: str) -> QdrantGuardError:
    return QdrantGuardError(
        f"qdrant-client {qdrant_client_version()} {what}, so colbert-az-pylate cannot guard what an embedded Qdrant "
        "index loads and does not open one; install a qdrant-client this package supports "
        '(pip install "colbert-az-pylate[qdrant]") or use a Qdrant server (url=...)'
    )


def check_guard_applies() -> ModuleType:
    """Check that qdrant-client's local mode still unpickles through the ``pickle`` the guard replaces.

    Returns
    -------
    types.ModuleType
        ``qdrant_client.local.persistence``, whose ``pickle`` is the standard module or the guard's stand-in.

    Raises
    ------
    QdrantGuardError
        The module, its ``pickle`` attribute or a stored point class is not where the guard expects it (the
        message names the installed qdrant-client version).

    Examples
    --------
    >>> check_guard_applies().__name__  # doctest: +SKIP
    'qdrant_client.local.persistence'
    """
    try:
        persistence = importlib.import_module(PERSISTENCE_MODULE)
    except ImportError:
        raise _unsupported(f"has no module {PERSISTENCE_MODULE}") from None
    current = getattr(persistence, "pickle", None)
    if current is not pickle and current is not _GUARDED_PICKLE:
        found = "no pickle attribute" if current is None else f"pickle = {type(current).__name__}"
        raise _unsupported(f"stores embedded points differently ({PERSISTENCE_MODULE} has {found})")
    for module, name in ALLOWED_CLASSES:
        if not hasattr(importlib.import_module(module), name):
            raise _unsupported(f"has no {module}.{name}, the class its embedded points are stored as")
    return persistence


@contextlib.contextmanager
def guarded(folder: str | Path) -> Iterator[None]:
    """While inside, this thread's loads of embedded Qdrant points from ``folder`` go through the restricted
    unpickler; the stand-in is installed on the first entry in the process and removed on the last exit.

    Parameters
    ----------
    folder
        The embedded index folder being read (named in the error when a stored point is refused).

    Raises
    ------
    QdrantGuardError
        qdrant-client's internals are not what the guard expects (see :func:`check_guard_applies`).

    Examples
    --------
    >>> with guarded("indexes/colbert"):  # doctest: +SKIP
    ...     client = QdrantClient(path="indexes/colbert")
    """
    with _GUARD_MUTEX:
        persistence = check_guard_applies()
        if _GUARD_STATE["depth"] == 0:
            _GUARD_STATE["original"] = pickle if persistence.pickle is _GUARDED_PICKLE else persistence.pickle
            persistence.pickle = _GUARDED_PICKLE
        _GUARD_STATE["depth"] += 1
    folders = _GUARD.__dict__.setdefault("folders", [])
    folders.append(str(folder))
    try:
        yield
    finally:
        folders.pop()
        with _GUARD_MUTEX:
            _GUARD_STATE["depth"] -= 1
            if _GUARD_STATE["depth"] == 0:
                if getattr(persistence, "pickle", None) is _GUARDED_PICKLE:
                    persistence.pickle = _GUARD_STATE["original"]
                _GUARD_STATE["original"] = None
