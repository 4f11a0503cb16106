"""File rules used everywhere: positional reads that concurrent readers can share."""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

_SEEK_LOCK = threading.Lock()  # only where the OS has no positional read (Windows)


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
