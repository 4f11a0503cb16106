"""``load``: a pylate model from a converted folder, or from a raw colbert-az checkpoint converted once.

A raw checkpoint is converted into the cache (``~/.cache/colbert_az_pylate`` or ``$COLBERT_AZ_CACHE``). A
conversion there counts as done only once its completion record (``.colbert-az-complete.json``: every file with
its size) is written, last; a cached folder whose files no longer match it, or that pylate fails to load, is
converted again instead of failing forever.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from colbert_az_pylate.conversion.checkpoint import (
    PROJECTION_FILE,
    WEIGHT_FILES,
    check_layout,
    is_converted,
    open_converted,
    resolve_source,
)
from colbert_az_pylate.conversion.converter import convert
from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError
from colbert_az_pylate.files import atomic_write

CACHE_ENV = "COLBERT_AZ_CACHE"
COMPLETE_FILE = ".colbert-az-complete.json"


def default_cache_dir() -> Path:
    """Where raw checkpoints are converted to: ``$COLBERT_AZ_CACHE`` or ``~/.cache/colbert_az_pylate``.

    Returns
    -------
    Path
        The cache folder (not created).

    Examples
    --------
    >>> default_cache_dir().name in ("colbert_az_pylate", Path(os.environ.get(CACHE_ENV, "x")).name)
    True
    """
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "colbert_az_pylate"))


def checkpoint_fingerprint(folder: Path) -> str:
    """A short hash of what a conversion reads: small files by content, weights by size and mtime.

    Parameters
    ----------
    folder : Path
        A checkpoint in the colbert-az layout.

    Returns
    -------
    str
        16 hexadecimal digits; the cache folder of a conversion is named after it.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     len(checkpoint_fingerprint(Path(tmp)))
    16
    """
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


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE_FILE and path.relative_to(folder).parts[0] != "encoders"
    }


def mark_complete(folder: Path) -> None:
    """Record every file of a finished conversion with its size; written last, atomically."""
    atomic_write(folder / COMPLETE_FILE, json.dumps({"files": _file_sizes(folder)}, indent=1))


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished conversion whose files are all there with the sizes recorded.

    Parameters
    ----------
    folder : Path
        A folder of the cache.

    Returns
    -------
    bool
        False when the completion record is missing or unreadable, or a file is missing, added or resized
        (a truncated weights file, an interrupted copy).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("modules.json", "config_sentence_transformers.json", "model.safetensors"):
    ...         _ = (Path(tmp) / name).write_bytes(b"0123")
    ...     mark_complete(Path(tmp))
    ...     before = is_complete(Path(tmp))
    ...     _ = (Path(tmp) / "model.safetensors").write_bytes(b"01")
    ...     before, is_complete(Path(tmp))
    (True, False)
    """
    try:
        recorded = json.loads((folder / COMPLETE_FILE).read_text(encoding="utf-8"))["files"]
        return is_converted(folder) and recorded == _file_sizes(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _open_model(folder: Path, device: str | None, kwargs: dict):
    from pylate.models import ColBERT  # heavy (sentence-transformers): only when a model is opened

    return ColBERT(str(folder), device=device, **kwargs)


def _with_encoder(model, folder: Path, encoder: str, quantize: str | None, threads: int | None, warm_up: bool):
    if encoder == "torch":
        if warm_up:  # torch's first call builds its kernels: up to 6x a query's time on the full-size model
            from colbert_az_pylate.encoders.runtime import WARM_UP_TEXT

            model.encode([WARM_UP_TEXT], is_query=True, show_progress_bar=False)
        return model
    from colbert_az_pylate.encoders.runtime import use_exported_encoder

    return use_exported_encoder(model, folder, encoder, quantize, threads=threads, warm_up=warm_up)


def load(
    source: str | Path,
    device: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    encoder: str = "torch",
    quantize: str | None = None,
    threads: int | None = None,
    warm_up: bool = True,
    **kwargs,
):
    """A ``pylate.models.ColBERT`` that encodes exactly like the model card's code.

    Parameters
    ----------
    source : str or Path
        A converted folder (or the hub id of one), loaded as is, or a raw colbert-az checkpoint (folder or hub
        id), converted and verified once into ``cache_dir`` and loaded from there. A path that exists locally
        is never looked up on the hub; relative paths are taken from the working directory.
    device : str, optional
        The torch device; pylate's choice by default.
    revision : str, optional
        The hub revision of a hub id.
    cache_dir : str or Path, optional
        Where raw checkpoints are converted to; :func:`default_cache_dir` by default.
    encoder : str, default "torch"
        What runs the backbone inside pylate's ``encode``: ``"torch"`` (pylate as is), ``"onnx"`` (ONNX Runtime)
        or ``"openvino"`` — faster on CPU, within the parity budget ``colbert-az verify --encoder`` reports
        (:mod:`colbert_az_pylate.encoders`). The graph is exported into the folder once when it has none.
    quantize : str, optional
        With ``encoder="openvino"``: ``"int8"`` (int8 weights) or ``"bf16"`` (bfloat16 compute, on CPUs that have
        it) — faster, at the cost in quality the README gives.
    threads : int, optional
        Intra-op threads of the ONNX Runtime / OpenVINO encoder (default: the physical cores).
    warm_up : bool, default True
        Encode a query once (and, for ONNX Runtime / OpenVINO, a document) before returning, so that the first real
        query is not the slow one.
    **kwargs
        Passed to ``pylate.models.ColBERT``.

    Returns
    -------
    pylate.models.ColBERT
        The model.

    Raises
    ------
    SourceNotFoundError, CheckpointError
        When the source is missing, not in the colbert-az layout, or cannot be loaded.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import load
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> from colbert_az_pylate import convert
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     source = build_checkpoint(Path(tmp) / "colbert-az", "wordpiece")
    ...     _ = convert(source, Path(tmp) / "colbert-az-pylate", verify=False)
    ...     model = load(Path(tmp) / "colbert-az-pylate", device="cpu")
    >>> model.encode(["Bakı"], is_query=True, show_progress_bar=False)[0].shape
    (32, 24)
    """
    from colbert_az_pylate.encoders.export import check_encoder

    encoder, quantize = check_encoder(encoder, quantize)
    if encoder != "torch":
        from colbert_az_pylate.encoders.export import require_runtime

        if device not in (None, "cpu"):
            raise InvalidArgumentError(
                f"encoder {encoder!r} runs on the CPU; leave device out (--device) or use encoder 'torch' on {device}"
            )
        device = "cpu"  # the projection runs where the graph's outputs are
        require_runtime(encoder)  # before any conversion work
    folder = resolve_source(source, revision)
    if is_converted(folder):
        model = open_converted(folder, device, **kwargs)
        return _with_encoder(model, folder, encoder, quantize, threads, warm_up)
    check_layout(folder)
    target = Path(os.path.abspath(Path(cache_dir or default_cache_dir()).expanduser()))
    target = target / f"{folder.name}-{checkpoint_fingerprint(folder)}"
    if not is_complete(target):
        convert(folder, target, overwrite=target.exists())
        mark_complete(target)
    try:
        model = _open_model(target, device, kwargs)
    except (ColbertAzError, TypeError):
        raise
    except Exception:  # the cached conversion was damaged after it was recorded: build it again, once
        convert(folder, target, overwrite=True)
        mark_complete(target)
        model = _open_model(target, device, kwargs)
    return _with_encoder(model, target, encoder, quantize, threads, warm_up)


def resolve_model(model, encoder: str = "torch", quantize: str | None = None):
    """``(model, name)``: a loaded model as is (its name unknown: ``None``), or a folder or hub id loaded with
    :func:`load` and named by its absolute path or its id (what an index records).

    >>> model = object()                      # a loaded model stands as it is
    >>> resolve_model(model)[0] is model, resolve_model(model)[1]
    (True, None)
    >>> resolve_model(model, encoder="onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: encoder=/quantize= (--encoder/--quantize) need the model's folder...
    """
    if isinstance(model, (str, Path)):
        # absolute, as the user reached it (links not followed): the path an error about it later names
        name = os.path.abspath(Path(model).expanduser()) if Path(model).expanduser().exists() else str(model)
        return load(model, encoder=encoder, quantize=quantize), name
    if encoder != "torch" or quantize is not None:
        raise InvalidArgumentError(
            "encoder=/quantize= (--encoder/--quantize) need the model's folder or hub id, not a loaded model; "
            "or load it with colbert_az_pylate.load(path, encoder=...)"
        )
    return model, None
