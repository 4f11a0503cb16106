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
import os
import shutil
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
from colbert_az_pylate.conversion.staging import (
    remove_stale_staging,
    remove_stale_verify_folders,
    retired_name,
    staging_folder,
)
from colbert_az_pylate.conversion.verification import ParityReport
from colbert_az_pylate.conversion.verification import verify as verify_parity
from colbert_az_pylate.errors import CheckpointError, OutputExistsError, ParityError, TokenizerError, first_line
from colbert_az_pylate.files import replace_folder
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
    """What a conversion did: sizes, tokenizer fixes and the parity figures (``None`` when not verified).

    Parameters
    ----------
    source : str
        The source as given (hub id or folder).
    output : str
        The output folder as given.
    hidden_size : int
        The backbone's hidden size.
    embedding_dim : int
        The projection's output size (the size of each token vector).
    fixes : list[str]
        What was changed so that pylate tokenizes like the reference, one line each.
    parity : ParityReport, optional
        The verification figures, or ``None`` when not verified.

    Examples
    --------
    >>> report = ConversionReport("./colbert-az", "./colbert-az-pylate", 768, 128, ["added [Q]/[D] as ids 5/6"])
    >>> print(report.summary())
    converted ./colbert-az -> ./colbert-az-pylate (768 -> 128 dimensions)
    fixed: added [Q]/[D] as ids 5/6
    parity: not verified (verify=False)
    """

    source: str
    output: str
    hidden_size: int
    embedding_dim: int
    fixes: list[str] = field(default_factory=list)
    parity: ParityReport | None = None

    def to_dict(self) -> dict:
        """The report as JSON-ready data (``--json``)."""
        return {
            "source": self.source,
            "output": self.output,
            "hidden_size": self.hidden_size,
            "embedding_dim": self.embedding_dim,
            "fixes": self.fixes,
            "parity": self.parity.to_dict() if self.parity else None,
        }

    def summary(self) -> str:
        """A few human-readable lines: what was converted, what was fixed, the parity figures."""
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
    except Exception as exc:  # any loader failure on the user's files
        raise TokenizerError(f"cannot read the tokenizer in {folder}: {first_line(exc)[:200]}") from exc


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


def _check_replaceable(output: Path) -> None:
    """Refuse to replace anything but a model folder (or an empty one): ``--overwrite`` must not wipe a user's files."""
    if not output.is_dir() or output.is_symlink():
        raise OutputExistsError(f"{output} exists and is not a folder; choose another output")
    if any(output.iterdir()) and not any((output / name).is_file() for name in ("config.json", "modules.json")):
        raise OutputExistsError(
            f"{output} is a non-empty folder that holds no model (no config.json or modules.json); "
            "refusing to replace it, choose another output"
        )
    if Path.cwd() == output or output in Path.cwd().parents:
        raise OutputExistsError(f"{output} holds the working directory; refusing to replace it")


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

    The folder is written beside ``output`` under a temporary name and moved into place only when it is
    complete (and verified); an interrupted or killed conversion leaves nothing that a later run does not clean.

    Parameters
    ----------
    source : str or Path
        A hub id (``LocalDoc/colbert-az``) or a local folder in the colbert-az layout (relative paths are taken
        from the working directory and never looked up on the hub).
    output : str or Path
        The folder to write; it must not exist unless ``overwrite``.
    revision : str, optional
        The hub revision of a hub id.
    verify : bool, default True
        Check parity with the model card's code (plain pylate in a separate process) before writing.
    overwrite : bool, default False
        Replace an existing ``output`` (swapped in only when the new folder is complete).
    force : bool, default False
        Write the output even when verification fails.
    probes : Sequence[str], optional
        Probe texts for alignment and verification; :func:`~colbert_az_pylate.conversion.probes.probe_texts`
        by default (edge cases and sentences shipped with the package).
    dataset : str or Path, optional
        An AZ-MIRAGE ``dataset.json`` whose texts are added to the default probes.
    model_id : str, optional
        The name the model card's snippet uses (default: the hub id, or the output folder's name).
    on_step : callable, optional
        Called with a short message at each step (progress); logged by default.

    Returns
    -------
    ConversionReport
        Sizes, the tokenizer fixes applied and the parity figures (``None`` when ``verify=False``).

    Raises
    ------
    OutputExistsError
        ``output`` exists and ``overwrite`` is false, or it would replace the source.
    CheckpointError
        The source is missing, not in the colbert-az layout, or damaged.
    ParityError
        Verification failed and ``force`` is false.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     source = build_checkpoint(Path(tmp) / "colbert-az", "gemma")
    ...     report = convert(source, Path(tmp) / "colbert-az-pylate", verify=False)
    ...     (Path(tmp) / "colbert-az-pylate" / "modules.json").is_file()
    True
    >>> report.fixes[0]
    'added [Q]/[D] as ids 360/361'
    """
    output_arg = output
    step = on_step or (lambda message: logger.info(message))
    output = Path(os.path.abspath(Path(output).expanduser()))
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass overwrite=True (--overwrite) to replace it")
    step(f"reading {source}")
    folder = resolve_source(source, revision)
    if output == folder or output in folder.parents:
        raise OutputExistsError(f"{output} would replace the source {folder}; choose another output folder")
    if output.exists():
        _check_replaceable(output)
    check_layout(folder)
    hidden_size = hidden_size_of(folder)
    projection = load_projection(folder / PROJECTION_FILE, hidden_size)
    probe_set = list(probes) if probes is not None else probe_texts(dataset)
    step("aligning the tokenizer with the reference")
    tokenizer, fixes = prepare_tokenizer(folder, probe_set)
    report = ConversionReport(str(source), str(output_arg), hidden_size, projection.shape[0], fixes)

    output.parent.mkdir(parents=True, exist_ok=True)
    for note in remove_stale_staging(output.parent):
        step(note)
    remove_stale_verify_folders()
    staged = staging_folder(output)
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
        replace_folder(staged, output, retired_name(output))
    finally:  # also on Ctrl-C: nothing half-written is kept
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return report
