"""Reading a checkpoint in the colbert-az layout: where it is, what it holds, and its projection.

The layout (model card, "Usage"): a Hugging Face backbone (``config.json``, weights, tokenizer files) plus
``projection.pt``, the state dict of a bias-free ``nn.Linear(hidden_size, embedding_dim)``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from colbert_az_pylate.errors import CheckpointError, SourceNotFoundError, UnsafeProjectionError

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
    """A local folder holding the checkpoint: ``source`` itself, or a hub snapshot of it.

    >>> resolve_source("/no/such/folder")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.SourceNotFoundError: /no/such/folder is not a folder ...
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    looks_local = text.startswith((".", "/", "~")) or path.exists() or text.count("/") != 1
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
    """Refuse a folder that lacks the files of the colbert-az layout."""
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


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` already holds the pylate files a conversion writes."""
    return all((folder / name).is_file() for name in CONVERTED_MARKER_FILES)


def hidden_size_of(folder: Path) -> int:
    """The backbone's hidden size, read from ``config.json`` (text config of composite models too)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    size = config.get("hidden_size") or config.get("text_config", {}).get("hidden_size")
    if not isinstance(size, int):
        raise CheckpointError(f"{folder / 'config.json'} has no integer hidden_size")
    return size


def load_projection(path: Path, hidden_size: int) -> torch.Tensor:
    """The projection weight (embedding_dim, hidden_size) from ``projection.pt``, read without running code.

    The file is read with ``torch.load(..., weights_only=True)``, which refuses pickled callables. It must
    hold exactly one 2-D tensor — a state dict ``{"weight": W}`` or ``W`` itself — whose input size is the
    backbone's hidden size: anything else (extra entries, a bias, other shapes) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the colbert-az layout needs the projection weights there")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeProjectionError(
            f"{path} holds objects other than tensors and was refused unread ({first_line[:160]})"
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
