"""Index folders: which backend a folder holds, whether it may be written, and the one-writer lock.

An index folder is ours when it holds a manifest we wrote (``manifest.json`` for :class:`VoyagerIndex`,
``plaid-manifest.json`` for :class:`PlaidIndex`). Everything else is the user's: a non-empty folder that is not an
index is never written into, and a folder that holds index files but lost its manifest is refused, never rebuilt
over. Files of ours are recognised by name; any other file in an index folder is left alone by every write.
"""

from __future__ import annotations

import json
import os
import re
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import (
    IndexFormatError,
    IndexLockedError,
    InvalidArgumentError,
    OutputExistsError,
)
from colbert_az_pylate.files import lock_file
from colbert_az_pylate.retrieval.backends import BACKENDS, LEXICAL_MANIFEST, PLAID_MANIFEST, VOYAGER_MANIFEST

LOCK = ".lock"
BUILDING = ".building"  # inside a PLAID build folder until the manifest commits it

# Names a writer of ours may leave without a committed manifest (a crash before the first commit).
_VOYAGER_LEFTOVER = re.compile(r"^((hnsw|docs|ids)\.\d+\.(voyager|npz|json)|manifest\.json)(\.tmp)?$")
_VOYAGER_STORE = re.compile(r"^(vectors|payloads)\.\d+\.(f16|jsonl)$")
_PLAID_LEFTOVER = re.compile(r"^(\.plaid\.tmp-.*|plaid-manifest\.json\.tmp)$")
_PLAID_DATA = re.compile(r"^(plaid\.\d+|fast_plaid|ids\.json|payloads\.json)$")
# a BM25 writer's first commit killed: generation files, their staging, a vector index's companion folder
_LEXICAL_LEFTOVER = re.compile(r"^(\.?bm25-(entries|scores)\.\d+(\.jsonl|\.tmp)?|\.bm25-.*\.tmp-.*|bm25)$")


def _is_voyager_manifest(path: Path) -> bool:
    """True for a manifest we wrote (or a damaged one beside our files), False for anyone else's ``manifest.json``."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        others = [p.name for p in path.parent.iterdir() if p.name != path.name]
        return any(_VOYAGER_LEFTOVER.match(name) or _VOYAGER_STORE.match(name) for name in others)
    return isinstance(manifest, dict) and {"format_version", "generation", "files"} <= set(manifest)


def _not_a_folder(path: Path) -> None:
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputExistsError(f"{ancestor} is a file, not a folder; name a folder for the index")
            return


def index_backend(folder: str | Path) -> str | None:
    """The backend of the index in ``folder``: ``"voyager"``, ``"plaid"``, ``"bm25"``, or ``None`` when there is none.

    ``None`` means the folder is missing, empty, or holds only what a writer of ours killed before its first
    commit left (nothing to lose). Anything else that is not one of our indexes is refused with one line.

    Parameters
    ----------
    folder
        The index folder (``Searcher``'s ``folder``, the CLI's ``--index``).

    Returns
    -------
    str or None
        ``"voyager"``, ``"plaid"``, ``"bm25"`` or ``None``.

    Raises
    ------
    OutputExistsError
        ``folder`` (or a parent) is a file, or a non-empty folder that is not an index.
    IndexFormatError
        ``folder`` holds index files but its manifest is missing (lost or deleted).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     empty = index_backend(f"{folder}/new")
    ...     _ = pathlib.Path(folder, "notes.txt").write_text("mine")
    ...     try:
    ...         index_backend(folder)
    ...     except OutputExistsError as error:
    ...         refused = "not an index" in str(error)
    >>> empty, refused
    (None, True)
    """
    path = Path(folder)
    _not_a_folder(path)
    if not path.exists():
        return None
    voyager, plaid = (path / VOYAGER_MANIFEST).is_file(), (path / PLAID_MANIFEST).is_file()
    if voyager and plaid:
        raise IndexFormatError(
            f"{path} holds both a Voyager and a PLAID manifest; keep the index you want in a folder of its own"
        )
    if plaid:
        return "plaid"
    if (path / LEXICAL_MANIFEST).is_file() and not voyager:
        return "bm25"
    if voyager:
        if _is_voyager_manifest(path / VOYAGER_MANIFEST):
            return "voyager"
        raise OutputExistsError(
            f"{path} holds a {VOYAGER_MANIFEST} that is not an index manifest of ours; choose a new or empty folder "
            "for the index"
        )
    if (path / "meta.json").is_file() and (path / "collection").is_dir():
        raise OutputExistsError(
            f"{path} holds an embedded Qdrant index: open it with colbert_az_pylate.retrieval.QdrantIndex or the "
            "Searcher (backend='qdrant'; --backend qdrant), or choose another folder"
        )
    entries = [p for p in path.iterdir() if p.name != LOCK]
    leftovers = (_VOYAGER_LEFTOVER, _PLAID_LEFTOVER, _LEXICAL_LEFTOVER)
    foreign = [p.name for p in entries if not any(pattern.match(p.name) for pattern in leftovers)]
    foreign = [name for name in foreign if not (path / name / BUILDING).exists()]  # a killed PLAID build
    ours = [name for name in foreign if _VOYAGER_STORE.match(name) or _PLAID_DATA.match(name)]
    if ours and len(ours) == len(foreign):
        stored = [name for name in ours if not _VOYAGER_STORE.match(name) or (path / name).stat().st_size > 0]
        if not stored:
            return None  # empty stores of a killed first commit
        raise IndexFormatError(
            f"{path} holds index files ({', '.join(sorted(stored)[:3])}) but no manifest: it was lost or deleted, "
            "so the index cannot be read; restore the manifest from a backup, or delete the folder and index again"
        )
    if foreign:
        raise OutputExistsError(
            f"{path} is not empty and is not an index (no {VOYAGER_MANIFEST}): it holds {sorted(foreign)[:3]}; "
            "choose a new or empty folder for the index"
        )
    return None


def is_qdrant_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds an embedded Qdrant index (qdrant-client's ``meta.json`` and ``collection/``).

    Parameters
    ----------
    folder
        The index folder.

    Returns
    -------
    bool
        Whether it is an embedded Qdrant storage (its collections are not opened or read).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     is_qdrant_folder(folder)
    False
    """
    path = Path(folder)
    return path.is_dir() and (path / "meta.json").is_file() and (path / "collection").is_dir()


def detect_backend(folder: str | Path) -> str | None:
    """Like :func:`index_backend`, and ``"qdrant"`` for an embedded Qdrant index (which ``index_backend`` refuses).

    Parameters
    ----------
    folder
        The index folder.

    Returns
    -------
    str or None
        ``"voyager"``, ``"plaid"``, ``"bm25"``, ``"qdrant"`` or ``None`` (no index yet).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     detect_backend(f"{folder}/new")
    """
    if is_qdrant_folder(folder):
        return "qdrant"
    return index_backend(folder)


def check_backend(folder: str | Path, backend: str | None) -> str:
    """The backend to use for ``folder``: its own, or ``backend`` (default ``"voyager"``) for a new folder.

    Parameters
    ----------
    folder
        The index folder.
    backend
        ``"voyager"``, ``"plaid"``, ``"bm25"``, ``"qdrant"`` or ``None`` (the folder's backend).

    Returns
    -------
    str
        The backend of the existing index, else ``backend or "voyager"``.

    Raises
    ------
    ColbertAzError
        An unknown backend, or one that differs from the index already in the folder; and every error of
        :func:`index_backend`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     check_backend(f"{folder}/new", None), check_backend(f"{folder}/new", "plaid")
    ('voyager', 'plaid')
    """
    if backend is not None and backend not in BACKENDS:
        raise InvalidArgumentError(
            f"backend must be one of {tuple(BACKENDS)} (or None: the folder's own), got {backend!r}"
        )
    found = detect_backend(folder)
    if found is not None and backend is not None and found != backend:
        names = {name: entry.title for name, entry in BACKENDS.items()}
        raise OutputExistsError(
            f"{folder} holds a {names[found]} index, not a {names[backend]} one: leave the backend out "
            f"(no --backend) to use it, or choose another folder for a {names[backend]} index"
        )
    return found or backend or "voyager"


@dataclass
class _ProcessLock:
    """This process's hold on a folder's writer lock, shared by every writer object on that folder."""

    key: str
    handle: object
    holders: int = 0
    mutex: threading.RLock = field(default_factory=threading.RLock)
    replacer: weakref.ref | None = None  # the object whose override is staged and not yet committed

    def replacing(self, owner: object) -> bool:
        """True while an object other than ``owner`` has a staged override of this folder."""
        current = self.replacer() if self.replacer is not None else None
        return current is not None and current is not owner


_LOCKS: dict[str, _ProcessLock] = {}
_LOCKS_MUTEX = threading.Lock()


def acquire_writer_lock(folder: Path) -> _ProcessLock:
    """Take the exclusive writer lock of ``folder`` for this process (shared by its objects); see ``release``.

    ``flock`` locks belong to an open file, so two objects of one process would lock each other out: the
    process takes the lock once and counts its holders.
    """
    key = os.path.realpath(folder)
    with _LOCKS_MUTEX:
        lock = _LOCKS.get(key)
        if lock is None:
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / LOCK, "a+b")  # noqa: SIM115 - held until the last holder releases it
            try:  # POSIX flock or Windows msvcrt: colbert_az_pylate.files
                lock_file(handle, wait=False)
            except OSError as exc:
                handle.close()
                raise IndexLockedError(
                    f"another process is writing to {folder}; wait for it to finish, or open the index "
                    "read-only to search it"
                ) from exc
            lock = _LOCKS[key] = _ProcessLock(key, handle)
        lock.holders += 1
        return lock


def release_writer_lock(lock: _ProcessLock) -> None:
    """Give back one hold on the lock; the last holder of the process unlocks the folder."""
    with _LOCKS_MUTEX:
        lock.holders -= 1
        if lock.holders <= 0 and _LOCKS.get(lock.key) is lock:
            del _LOCKS[lock.key]
            lock.handle.close()
