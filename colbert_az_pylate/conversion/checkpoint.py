"""Reading a checkpoint in the colbert-az layout: where it is, what it holds, and its projection.

The layout (model card, "Usage"): a Hugging Face backbone (``config.json``, weights, tokenizer files) plus
``projection.pt``, the state dict of a bias-free ``nn.Linear(hidden_size, embedding_dim)``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from colbert_az_pylate.errors import CheckpointError, SourceNotFoundError, UnsafeProjectionError, first_line
from colbert_az_pylate.files import looks_like_local_path

PROJECTION_FILE = "projection.pt"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "tokenizer.model",
        "sentencepiece.bpe.model",
        "spiece.model",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
    }
)
CONVERTED_MARKER_FILES = ("modules.json", "config_sentence_transformers.json")


def resolve_source(source: str | Path, revision: str | None = None) -> Path:
    """The absolute local folder holding a checkpoint: ``source`` itself, or a hub snapshot of it.

    A path that exists locally (relative paths are taken from the working directory) is never looked up on the
    hub; only a name of the form ``owner/name`` is, when neither it nor ``owner`` is a local folder.

    Parameters
    ----------
    source : str or Path
        A local folder, or a hub id such as ``LocalDoc/colbert-az``.
    revision : str, optional
        The hub revision (branch, tag or commit) of a hub id.

    Returns
    -------
    Path
        An absolute path, so that it means the same folder in any working directory and any subprocess.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     resolve_source(tmp).is_absolute()
    True
    >>> resolve_source("/no/such/folder")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.SourceNotFoundError: /no/such/folder is not a folder ...
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return Path(os.path.abspath(path))
    text = str(source)
    looks_local = (
        looks_like_local_path(text)
        or path.exists()
        or text.count("/") != 1  # a model's hub id names its owner
        or path.parent.exists()  # owner/name where owner is a local folder: a missing local path
    )
    if looks_local:
        raise SourceNotFoundError(
            f"{source} is not a folder (a hub id has the form owner/name, a local source must be a folder)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, revision=revision))
    except Exception as exc:  # any hub failure: offline, missing repository, revision, permissions
        raise SourceNotFoundError(
            f"cannot reach {source} on the Hugging Face hub ({type(exc).__name__}); download it where the hub "
            "is reachable (huggingface-cli download) and pass the local folder instead"
        ) from exc


def check_layout(folder: Path) -> None:
    """Refuse a folder that lacks the files of the colbert-az layout, or whose safetensors weights are damaged.

    Parameters
    ----------
    folder : Path
        The checkpoint folder.

    Raises
    ------
    CheckpointError
        Naming every missing file, or the weights file that cannot be read (truncated, not safetensors).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     check_layout(Path(tmp))
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.CheckpointError: ... missing config.json, model weights (model.safetensors), ...
    """
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        missing.append("tokenizer files (tokenizer.json)")
    if not (folder / PROJECTION_FILE).is_file():
        missing.append(PROJECTION_FILE)
    if missing:
        raise CheckpointError(f"{folder} is not in the colbert-az layout: missing {', '.join(missing)}")
    check_weights(folder)


def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors weight files of ``folder``: ``model.safetensors`` or the shards its index names."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot read {index}: {first_line(exc)}") from exc


def check_weights(folder: Path) -> None:
    """Refuse safetensors weights that are missing, truncated or not safetensors (reads their headers only)."""
    from safetensors import safe_open

    for path in safetensors_files(folder):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the weights of {folder} are incomplete")
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as exc:  # SafetensorError, OSError: truncated, damaged or not a safetensors file
            raise CheckpointError(
                f"{path} cannot be read ({first_line(exc)}): the file is truncated or damaged; "
                "download or copy it again"
            ) from exc


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` already holds the pylate files a conversion writes.

    Parameters
    ----------
    folder : Path
        Any folder.

    Returns
    -------
    bool
        True when ``modules.json`` and ``config_sentence_transformers.json`` are there.

    Examples
    --------
    >>> is_converted(Path("/no/such/folder"))
    False
    """
    return all((folder / name).is_file() for name in CONVERTED_MARKER_FILES)


def open_converted(folder: Path, device: str | None = None, **kwargs):
    """A converted folder as ``pylate.models.ColBERT``, as is, after checking its weights; a folder pylate cannot
    load is a one-line :class:`CheckpointError`. What :func:`colbert_az_pylate.load` does for a converted folder,
    and what an export starts from."""
    check_weights(folder)
    from pylate.models import ColBERT  # heavy (sentence-transformers): only when a model is opened

    try:
        return ColBERT(str(folder), device=device, **kwargs)
    except TypeError:
        raise
    except Exception as exc:  # a damaged or incompatible folder of the user's
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"pylate cannot load {folder}: {first_line(exc)[:200]}") from exc


def hidden_size_of(folder: Path) -> int:
    """The backbone's hidden size, read from ``config.json`` (the text config of composite models too).

    Parameters
    ----------
    folder : Path
        A checkpoint folder with ``config.json``.

    Returns
    -------
    int
        ``hidden_size`` of the config (or of its ``text_config``).

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "config.json").write_text(json.dumps({"hidden_size": 768}))
    ...     hidden_size_of(Path(tmp))
    768
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {first_line(exc)}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{folder / 'config.json'} must hold a JSON object")
    text_config = config.get("text_config")
    size = config.get("hidden_size") or (text_config.get("hidden_size") if isinstance(text_config, dict) else None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CheckpointError(f"{folder / 'config.json'} has no positive integer hidden_size")
    return size


def load_projection(path: Path, hidden_size: int) -> torch.Tensor:
    """The projection weight (embedding_dim, hidden_size) from ``projection.pt``, read without running code.

    The file is read with ``torch.load(..., weights_only=True)``, which refuses pickled callables. It must
    hold exactly one 2-D tensor — a state dict ``{"weight": W}`` or ``W`` itself — whose input size is the
    backbone's hidden size: anything else (extra entries, a bias, other shapes) is refused.

    Parameters
    ----------
    path : Path
        The ``projection.pt`` file.
    hidden_size : int
        The backbone's hidden size, which must be the weight's input size.

    Returns
    -------
    torch.Tensor
        A float32 copy of the weight, shape (embedding_dim, hidden_size).

    Raises
    ------
    UnsafeProjectionError
        On anything but one 2-D floating-point weight of the right input size.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     torch.save({"weight": torch.zeros(128, 768)}, Path(tmp) / "projection.pt")
    ...     load_projection(Path(tmp) / "projection.pt", hidden_size=768).shape
    torch.Size([128, 768])
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the colbert-az layout needs the projection weights there")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeProjectionError(
            f"{path} holds objects other than tensors and was refused unread ({first_line(exc)[:160]})"
        ) from exc
    except Exception as exc:  # truncated or not a torch file at all
        raise UnsafeProjectionError(f"{path} is not a readable torch file ({type(exc).__name__})") from exc
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        if keys != ["weight"]:
            raise UnsafeProjectionError(
                f"{path} must hold exactly one entry 'weight' (a bias-free linear layer), found {keys}"
            )
        obj = obj["weight"]
    if not isinstance(obj, torch.Tensor) or obj.dim() != 2 or not obj.is_floating_point():
        raise UnsafeProjectionError(f"{path} must hold one 2-D floating-point weight, found {_describe(obj)}")
    if obj.shape[1] != hidden_size:
        raise UnsafeProjectionError(
            f"{path} maps {obj.shape[1]} inputs to {obj.shape[0]}, but the backbone's hidden size is {hidden_size}"
        )
    return obj.detach().clone().float().contiguous()


def _describe(obj: object) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dim()}-D {obj.dtype} tensor of shape {tuple(obj.shape)}"
    return type(obj).__name__
