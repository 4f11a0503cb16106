"""Conversion: a colbert-az checkpoint (backbone + ``projection.pt``) → a folder plain pylate loads.

The output keeps the colbert-az layout at its root (``config.json``, weights, tokenizer, ``projection.pt``),
so the model card's code still works on it, and adds the sentence-transformers/pylate files
(``modules.json``, ``sentence_bert_config.json``, ``1_Dense/``, ``config_sentence_transformers.json``).
It is written into a temporary folder beside the output and moved into place only when it is complete
(and verified), so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from colbert_az_pylate.conversion.checkpoint import (
    PROJECTION_FILE,
    TOKENIZER_FILES,
    check_layout,
    hidden_size_of,
    load_projection,
    resolve_source,
)
from colbert_az_pylate.conversion.model_card import converted_model_card
from colbert_az_pylate.conversion.probes import probe_texts
from colbert_az_pylate.conversion.verification import ParityReport
from colbert_az_pylate.conversion.verification import verify as verify_parity
from colbert_az_pylate.errors import CheckpointError, OutputExistsError, ParityError, TokenizerError
from colbert_az_pylate.tokenization import (
    DOCUMENT_LENGTH,
    DOCUMENT_MARKER,
    QUERY_LENGTH,
    QUERY_MARKER,
    add_markers,
    align_first_word,
    check_tokenizer_supported,
)

logger = logging.getLogger(__name__)

# Loaded from tokenizer.json as written, whatever the model type: classes with their own __init__ (such as
# GemmaTokenizer in transformers 5) rebuild the pipeline and would drop the alignment.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
SKIPPED_SOURCE_FILES = frozenset({"README.md", "modules.json", "sentence_bert_config.json"})


@dataclass
class ConversionReport:
    """What a conversion did: sizes, tokenizer fixes and the parity figures (``None`` when not verified)."""

    source: str
    output: str
    hidden_size: int
    embedding_dim: int
    fixes: list[str] = field(default_factory=list)
    parity: ParityReport | None = None

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "output": self.output,
            "hidden_size": self.hidden_size,
            "embedding_dim": self.embedding_dim,
            "fixes": self.fixes,
            "parity": self.parity.to_dict() if self.parity else None,
        }

    def summary(self) -> str:
        lines = [
            f"converted {self.source} -> {self.output} ({self.hidden_size} -> {self.embedding_dim} dimensions)",
            *(f"fixed: {fix}" for fix in self.fixes),
        ]
        if not self.fixes:
            lines.append("fixed: nothing in the tokenizer needed changing")
        lines.append(self.parity.summary() if self.parity else "parity: not verified (verify=False)")
        return "\n".join(lines)


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer as the model card loads it (``AutoTokenizer``), with a clear error."""
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"cannot read the tokenizer in {folder}: {message[:200]}") from exc


def prepare_tokenizer(folder: Path, probes: Sequence[str]) -> tuple[PreTrainedTokenizerBase, list[str]]:
    """The tokenizer with the markers added and aligned with the reference, plus what was changed."""
    tokenizer = load_tokenizer(folder)
    check_tokenizer_supported(tokenizer)
    had_markers = {QUERY_MARKER, DOCUMENT_MARKER} <= set(tokenizer.get_vocab())
    query_id, document_id = add_markers(tokenizer)
    vocab_size = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    if isinstance(vocab_size, int) and max(query_id, document_id) >= vocab_size:
        raise CheckpointError(
            f"the backbone has {vocab_size} embedding rows but {QUERY_MARKER}/{DOCUMENT_MARKER} get ids "
            f"{query_id}/{document_id}: the markers have no trained embeddings in this checkpoint"
        )
    fixes = [] if had_markers else [f"added {QUERY_MARKER}/{DOCUMENT_MARKER} as ids {query_id}/{document_id}"]
    fixes += align_first_word(tokenizer, probes)
    return tokenizer, fixes


def write_pylate_files(folder: Path, projection, tokenizer: PreTrainedTokenizerBase) -> None:
    """Add the sentence-transformers / pylate module files beside the colbert-az layout."""
    from pylate.models import Dense

    embedding_dim, hidden_size = projection.shape
    (folder / "1_Dense").mkdir()
    Dense(hidden_size, embedding_dim, bias=False, init_weight=projection).save(str(folder / "1_Dense"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": DOCUMENT_LENGTH - 1, "do_lower_case": False})
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "model_type": "ColBERT",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "MaxSim",
            "query_prefix": QUERY_MARKER,
            "document_prefix": DOCUMENT_MARKER,
            "query_length": QUERY_LENGTH,
            "document_length": DOCUMENT_LENGTH,
            "attend_to_expansion_tokens": True,
            "skiplist_words": [],
            "do_query_expansion": True,
        },
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Save the aligned tokenizer so that every loader reads ``tokenizer.json`` as written."""
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = TOKENIZER_CLASS
    config["padding_side"] = tokenizer.padding_side
    config.pop("auto_map", None)
    _write_json(config_path, config)


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _copy_checkpoint(source: Path, target: Path) -> None:
    for item in source.iterdir():
        if item.name.startswith(".") or item.name in TOKENIZER_FILES or item.name in SKIPPED_SOURCE_FILES:
            continue
        if item.is_dir():
            continue  # the colbert-az layout keeps everything at the root; stale module folders stay out
        shutil.copy2(item, target / item.name)


def pin_float32(config_path: Path) -> list[str]:
    """Make the backbone load in float32, as the model card's code computes (``AutoModel`` in transformers 4).

    transformers 5 loads weights in the dtype named by ``config.json`` by default; a bfloat16 entry would make
    pylate encode in bfloat16 while the reference runs in float32.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    named = {key: config[key] for key in ("dtype", "torch_dtype") if config.get(key) not in (None, "float32")}
    if not named:
        return []
    config.update(dict.fromkeys(named, "float32"))
    _write_json(config_path, config)
    changed = ", ".join(f"{key} {value}" for key, value in named.items())
    return [f"config.json: {changed} -> float32 (the reference computes in float32)"]


def _move_into_place(staged: Path, output: Path) -> None:
    if output.exists():
        retired = output.with_name(f".{output.name}.old-{staged.name[-8:]}")
        output.rename(retired)
        staged.rename(output)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staged.rename(output)


def convert(
    source: str | Path,
    output: str | Path,
    *,
    revision: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    force: bool = False,
    probes: Sequence[str] | None = None,
    dataset: str | Path | None = None,
    model_id: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Convert a colbert-az checkpoint into a folder that ``pylate.models.ColBERT(output)`` loads exactly.

    Parameters
    ----------
    source
        A hub id (``LocalDoc/colbert-az``) or a local folder in the colbert-az layout.
    output
        The folder to write; it must not exist unless ``overwrite``.
    verify
        Check parity with the model card's code (in a separate pylate process) before writing.
    force
        Write the output even when verification fails.
    probes, dataset
        Probe texts for alignment and verification (default: edge cases + AZ-MIRAGE texts from ``dataset``).
    model_id
        The name the model card's snippet uses (default: the hub id, or the output folder's name).

    >>> from colbert_az_pylate import convert
    >>> report = convert("./colbert-az", "./colbert-az-pylate")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    step = on_step or (lambda message: logger.info(message))
    output = Path(output).expanduser()
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass overwrite=True (--overwrite) to replace it")
    step(f"reading {source}")
    folder = resolve_source(source, revision)
    check_layout(folder)
    hidden_size = hidden_size_of(folder)
    projection = load_projection(folder / PROJECTION_FILE, hidden_size)
    probe_set = list(probes) if probes is not None else probe_texts(dataset)
    step("aligning the tokenizer with the reference")
    tokenizer, fixes = prepare_tokenizer(folder, probe_set)
    report = ConversionReport(str(source), str(output), hidden_size, projection.shape[0], fixes)

    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        step("writing the pylate files")
        _copy_checkpoint(folder, staged)
        report.fixes += pin_float32(staged / "config.json")
        save_tokenizer(tokenizer, staged)
        write_pylate_files(staged, projection, tokenizer)
        original_card = (folder / "README.md").read_text(encoding="utf-8") if (folder / "README.md").is_file() else None
        name = model_id or (str(source) if not Path(str(source)).expanduser().exists() else output.name)
        (staged / "README.md").write_text(
            converted_model_card(original_card, name, projection.shape[0], fixes), encoding="utf-8"
        )
        if verify:
            step(f"verifying parity with the model card's code on {len(probe_set)} probe texts")
            report.parity = verify_parity(staged, folder, probes=probe_set)
            if not report.parity.passed and not force:
                raise ParityError(f"conversion refused, {report.parity.failure()} (use force to write anyway)")
        _move_into_place(staged, output)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return report
