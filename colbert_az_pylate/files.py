"""File rules used everywhere: atomic writes, fsync, an exclusive lock, positional reads, local path or hub id.

A write that others may read goes to a temporary file in the same folder, is flushed and fsynced, and replaces
the target in one ``os.replace``; the folder is then fsynced (where the OS allows: not on Windows), so a crash or a
power cut leaves the old file or the new one, never a mix, and never a rename that outlived its data. The lock is
an advisory lock on an open file: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows; it goes with the process,
so a killed holder never leaves a folder locked.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

__all__ = [
    "HUB_ID",
    "atomic_path",
    "atomic_write",
    "exclusive_lock",
    "fsync_file",
    "fsync_folder",
    "fsync_tree",
    "lock_file",
    "looks_like_local_path",
    "read_at",
    "replace_folder",
    "replace_synced",
    "unlock_file",
]

_SEEK_LOCK = threading.Lock()  # only where the OS has no positional read (Windows)
# A hub id: ``name`` or ``owner/name``, letters, digits, ``_``, ``.``, ``-``, not starting with ``.`` or ``-``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def read_at(handle: BinaryIO, offset: int, length: int) -> bytes:
    """``length`` bytes of an open file from ``offset``, without moving a shared file position.

    Threads may read one handle at once (``os.pread``); short only at the end of the file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryFile() as handle:
    ...     _ = handle.write("Bakı, Şəki".encode("utf-8")); handle.flush()
    ...     read_at(handle, 7, 6).decode("utf-8")
    'Şəki'
    """
    if not hasattr(os, "pread"):
        with _SEEK_LOCK:
            handle.seek(offset)
            return handle.read(length)
    descriptor, parts = handle.fileno(), []
    while length > 0:
        part = os.pread(descriptor, length, offset)
        if not part:
            break
        parts.append(part)
        offset, length = offset + len(part), length - len(part)
    return b"".join(parts)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    descriptor = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows commits writable handles only
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_folder(path: str | Path) -> None:
    """Make the names in a folder (a rename, a new file) durable; a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def fsync_tree(path: str | Path) -> None:
    """fsync every file under a folder, then every folder of it (deepest first), then the folder itself."""
    path = Path(path)
    for root, _, names in os.walk(path, topdown=False):
        for name in names:
            child = Path(root) / name
            if child.is_file() and not child.is_symlink():
                fsync_file(child)
        fsync_folder(root)


def replace_synced(source: str | Path, target: str | Path) -> None:
    """Move a finished file or folder over ``target`` in one rename: its data synced first, the rename after.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "new").write_text("Bakı")
    ...     replace_synced(Path(tmp) / "new", Path(tmp) / "city.txt")
    ...     sorted(p.name for p in Path(tmp).iterdir())
    ['city.txt']
    """
    source, target = Path(source), Path(target)
    if source.is_dir() and not source.is_symlink():
        fsync_tree(source)
    else:
        fsync_file(source)
    os.replace(source, target)
    fsync_folder(target.parent)


def replace_folder(staged: str | Path, output: str | Path, retired: str | Path) -> None:
    """Move a finished folder to ``output``, synced; a previous ``output`` waits at ``retired`` until the new one
    is in place, and is put back if the swap is interrupted (Ctrl-C, a failed rename), then removed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("old", "new"):
    ...         (Path(tmp) / name).mkdir(); _ = (Path(tmp) / name / "city.txt").write_text(name)
    ...     replace_folder(Path(tmp) / "new", Path(tmp) / "old", Path(tmp) / ".old.retired")
    ...     (Path(tmp) / "old" / "city.txt").read_text(), sorted(p.name for p in Path(tmp).iterdir())
    ('new', ['old'])
    """
    staged, output, retired = Path(staged), Path(output), Path(retired)
    fsync_tree(staged)
    if not output.exists():
        staged.rename(output)
        fsync_folder(output.parent)
        return
    output.rename(retired)
    try:
        staged.rename(output)
    except BaseException:  # between the two renames: put the old output back
        if not output.exists():
            retired.rename(output)
        raise
    fsync_folder(output.parent)
    shutil.rmtree(retired, ignore_errors=True)


def _temporary_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, temporary: str | Path | None = None, sync_folder: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write by any means; on success it replaces ``path``, synced.

    The block writes the file at the path it is given (``np.save``, ``torch.save``, a library's ``save``). When it
    ends, the file is fsynced and renamed over ``path``, and the folder is fsynced; when it raises, the temporary
    file is removed and ``path`` is as it was.

    Parameters
    ----------
    path : str or Path
        The file to write.
    temporary : str or Path, optional
        The temporary name, in the same folder (default ``.{name}.tmp-{pid}-{random}``); give one when a cleaner
        recognises leftovers by name.
    sync_folder : bool, default True
        fsync the folder after the rename; a caller that renames several files and a manifest last may leave it to
        the manifest's write.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with atomic_path(Path(tmp) / "ids.json") as staged:
    ...         _ = staged.write_text('["baku"]')
    ...     (Path(tmp) / "ids.json").read_text(), len(list(Path(tmp).iterdir()))
    ('["baku"]', 1)
    """
    path = Path(path)
    staged = Path(temporary) if temporary is not None else _temporary_for(path)
    try:
        yield staged
        fsync_file(staged)
        os.replace(staged, path)
    except BaseException:  # Ctrl-C too: nothing half-written stays behind
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
    if sync_folder:
        fsync_folder(path.parent)


def atomic_write(
    path: str | Path, data: bytes | str, *, temporary: str | Path | None = None, sync_folder: bool = True
) -> None:
    """``data`` at ``path``, or the old file and nothing else: written beside it, fsynced, renamed over it.

    Parameters
    ----------
    path : str or Path
        The file to write.
    data : bytes or str
        The content; a ``str`` is written as UTF-8.
    temporary, sync_folder
        As for :func:`atomic_path`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     atomic_write(Path(tmp) / "city.txt", "Gəncə")
    ...     (Path(tmp) / "city.txt").read_text(encoding="utf-8")
    'Gəncə'
    """
    content = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, temporary=temporary, sync_folder=sync_folder) as staged, open(staged, "wb") as handle:
        handle.write(content)


def lock_file(handle: BinaryIO, *, wait: bool = True) -> None:
    """Lock an open file exclusively (all processes, advisory); ``BlockingIOError`` when held and ``wait`` is False.

    POSIX ``flock`` locks the open file; Windows ``msvcrt.locking`` locks its first byte (which need not exist).
    """
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return
    if msvcrt is None:  # pragma: no cover - neither POSIX nor Windows
        return
    while True:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return
        except OSError as exc:
            if not wait:
                raise BlockingIOError(f"{getattr(handle, 'name', 'the file')} is locked by another process") from exc
            time.sleep(0.05)


def unlock_file(handle: BinaryIO) -> None:
    """Release :func:`lock_file` (closing the file releases it too)."""
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    elif msvcrt is not None:  # pragma: no cover - Windows
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of the file ``path`` (created if missing) for the block; processes take turns.

    Parameters
    ----------
    path : str or Path
        The lock file; it is left in place (removing it would let two holders lock two different files).
    wait : bool, default True
        Wait for the holder; with False, raise ``BlockingIOError`` at once when another process holds it.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, exclusive_lock(Path(tmp) / ".lock"):
    ...     (Path(tmp) / ".lock").exists()
    True
    """
    with open(path, "a+b") as handle:
        lock_file(handle, wait=wait)
        try:
            yield
        finally:
            unlock_file(handle)


def looks_like_local_path(location: str | Path) -> bool:
    """True when ``location`` cannot be a hub id (``name`` or ``owner/name``): a ``Path``, ``./x``, ``/x``, ``~/x``,
    ``a/b/c``, ``x/``, ``C:\\x``. A hub-id-shaped name may still be a local folder: callers look at the disk first.

    Examples
    --------
    >>> [looks_like_local_path(x) for x in ("LocalDoc/msmarco-az-reranked", "./data/books", "data/books/", "books")]
    [False, True, True, False]
    """
    return isinstance(location, Path) or not HUB_ID.match(str(location))
