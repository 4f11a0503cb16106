"""``load``: a pylate model from a converted folder, or from a raw colbert-az checkpoint converted once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from colbert_az_pylate.conversion.checkpoint import (
    PROJECTION_FILE,
    WEIGHT_FILES,
    check_layout,
    is_converted,
    resolve_source,
)
from colbert_az_pylate.conversion.converter import convert

CACHE_ENV = "COLBERT_AZ_CACHE"


def default_cache_dir() -> Path:
    """Where raw checkpoints are converted to: ``$COLBERT_AZ_CACHE`` or ``~/.cache/colbert_az_pylate``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "colbert_az_pylate"))


def checkpoint_fingerprint(folder: Path) -> str:
    """A short hash of what a conversion reads: small files by content, weights by size and mtime."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", PROJECTION_FILE):
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load(
    source: str | Path,
    device: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    **kwargs,
):
    """A ``pylate.models.ColBERT`` that encodes exactly like the model card's code.

    ``source`` is a converted folder (or hub repository), loaded as is, or a raw colbert-az checkpoint,
    converted (and verified) once into ``cache_dir`` and loaded from there. ``kwargs`` go to
    ``pylate.models.ColBERT``.

    >>> from colbert_az_pylate import load
    >>> model = load("LocalDoc/colbert-az")  # doctest: +SKIP
    >>> model.encode(["Bakı"], is_query=True)[0].shape  # doctest: +SKIP
    (32, 128)
    """
    from pylate.models import ColBERT

    folder = resolve_source(source, revision)
    if not is_converted(folder):
        check_layout(folder)
        target = Path(cache_dir or default_cache_dir()) / f"{folder.name}-{checkpoint_fingerprint(folder)}"
        if not is_converted(target):
            convert(folder, target, overwrite=target.exists())
        folder = target
    return ColBERT(str(folder), device=device, **kwargs)
