"""``train``: the card's distillation recipe on pylate's trainer, with checkpoints that are converted folders."""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.evaluation import SentenceEvaluator

from colbert_az_pylate.conversion.checkpoint import PROJECTION_FILE
from colbert_az_pylate.conversion.converter import save_tokenizer
from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, OutputExistsError, check_count, first_line
from colbert_az_pylate.evaluation.triplets import evaluate_triplets
from colbert_az_pylate.files import replace_synced
from colbert_az_pylate.losses import DistillationInfoNCE
from colbert_az_pylate.training.checks import check_fields
from colbert_az_pylate.training.data import CARD_FALSE_NEGATIVE_RATIO, CARD_NEGATIVES

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARK = "trainer_state.json"  # the trainer writes it last into a checkpoint folder
STAGING = ".final-partial"  # the final model is written here, then moved into the output folder
_WEIGHTS = re.compile(r"^(model.*\.safetensors|pytorch_model.*\.bin|.*\.index\.json)$")


@dataclass
class Recipe:
    """The model card's training recipe; every field can be overridden.

    Values are checked when the recipe is made (kind and range), so a wrong one fails before anything loads.

    Parameters
    ----------
    learning_rate
        AdamW learning rate (card: 1e-6), > 0.
    weight_decay
        AdamW weight decay (card: 0.01), >= 0.
    warmup_ratio
        Share of the steps with a linear warm-up (card: 0.1), in [0, 1).
    lr_scheduler_type
        Scheduler after the warm-up (card: ``"cosine"``).
    per_device_train_batch_size
        Queries per step and device (card: 16).
    gradient_accumulation_steps
        Steps accumulated per update (card: 2; global batch 32 on one device).
    num_train_epochs
        Epochs over the training rows (card: 1).
    bf16
        bfloat16 mixed precision; None (default): where the GPU supports it (the card trained in bf16).
    alpha
        Weight of the KL term of :class:`~colbert_az_pylate.losses.DistillationInfoNCE` (card: 0.7).
    temperature
        InfoNCE temperature (card: 0.05).
    teacher_temperature
        Teacher softmax temperature (card: 1.0).
    negatives
        K, hard negatives per row (card: 8): the data setting of ``prepare_training_data``.
    false_negative_ratio
        A negative scored above this × the positive is dropped (card: 0.9): a data setting too.
    seed
        Seed of the trainer (and of the data sampling in ``colbert-az train``).

    Examples
    --------
    >>> Recipe(learning_rate=2e-5).per_device_train_batch_size
    16
    >>> Recipe(learning_rate="fast")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: Recipe.learning_rate must be a number, got 'fast'
    """

    learning_rate: float = 1e-6
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "cosine"
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 2
    num_train_epochs: float = 1.0
    bf16: bool | None = None  # None: bf16 where the GPU supports it (the card trained in bf16)
    alpha: float = 0.7
    temperature: float = 0.05
    teacher_temperature: float = 1.0
    negatives: int = CARD_NEGATIVES
    false_negative_ratio: float = CARD_FALSE_NEGATIVE_RATIO
    seed: int = 42

    def __post_init__(self) -> None:
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        for name, value in check_fields(values, Recipe, "Recipe").items():
            setattr(self, name, value)
        limits = {
            "learning_rate": (0, None, False),
            "weight_decay": (0, None, True),
            "warmup_ratio": (0, 0.999, True),
            "per_device_train_batch_size": (1, None, True),
            "gradient_accumulation_steps": (1, None, True),
            "num_train_epochs": (0, None, False),
            "alpha": (0, 1, True),
            "temperature": (0, None, False),
            "teacher_temperature": (0, None, False),
            "negatives": (1, None, True),
            "false_negative_ratio": (0, None, False),
        }
        for name, (low, high, inclusive) in limits.items():
            value = getattr(self, name)
            if (value < low if inclusive else value <= low) or (high is not None and value > high):
                bound = f">= {low}" if inclusive else f"> {low}"
                raise InvalidArgumentError(
                    f"{name} must be {bound}" + (f" and <= {high}" if high is not None else "") + f", got {value!r}"
                )


class HeldOutTripletEvaluator(SentenceEvaluator):
    """The card's held-out evaluation (R@1, R@3, MRR, NDCG@10 per source and macro) inside the trainer.

    Parameters
    ----------
    rows
        Triplet rows ``{"query", "positive", "negatives", "source"}`` (``TrainingData.heldout``).
    name
        Prefix of the metric names in the trainer's logs.

    Examples
    --------
    >>> evaluator = HeldOutTripletEvaluator([{"query": "q", "positive": "p", "negatives": ["n"]}])
    >>> evaluator.primary_metric
    'macro_NDCG@10'
    """

    def __init__(self, rows: Sequence[Mapping], name: str = "heldout") -> None:
        super().__init__()
        self.rows, self.name = list(rows), name
        self.primary_metric = "macro_NDCG@10"
        self.greater_is_better = True

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        results = evaluate_triplets(model, self.rows, show_progress_bar=False)
        metrics = {f"{group}_{name}": value for group, values in results.items() for name, value in values.items()}
        return self.prefix_name_to_metrics(metrics, self.name)


class ConvertedCheckpointTrainer(SentenceTransformerTrainer):
    """Saves every checkpoint as a converted folder: plain pylate and the model card's code both load it.

    A ``SentenceTransformerTrainer`` whose saves also write ``projection.pt`` and the aligned tokenizer beside the
    sentence-transformers files; :func:`train` builds it.
    """

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        colbert = getattr(self.model, "module", self.model)
        torch.save({"weight": colbert[1].linear.weight.detach().float().cpu().contiguous()}, folder / PROJECTION_FILE)
        save_tokenizer(colbert.tokenizer, folder)


def training_arguments(output_dir: str | Path, recipe: Recipe, **overrides) -> SentenceTransformerTrainingArguments:
    """Trainer arguments from the recipe (``overrides`` win).

    Parameters
    ----------
    output_dir
        The output folder.
    recipe
        The recipe.
    **overrides
        Any ``SentenceTransformerTrainingArguments`` field (checked: an unknown key or a value of the wrong kind is
        an :class:`~colbert_az_pylate.errors.InvalidArgumentError`, as is a combination the trainer refuses).

    Returns
    -------
    SentenceTransformerTrainingArguments

    Examples
    --------
    >>> args = training_arguments("/tmp/out", Recipe(bf16=False), max_steps=3, use_cpu=True)
    >>> args.learning_rate, args.gradient_accumulation_steps, args.max_steps
    (1e-06, 2, 3)
    """
    overrides = check_fields(overrides, SentenceTransformerTrainingArguments, "the training arguments")
    bf16 = recipe.bf16
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    values = {
        "output_dir": str(output_dir),
        "learning_rate": recipe.learning_rate,
        "weight_decay": recipe.weight_decay,
        "warmup_steps": recipe.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        "lr_scheduler_type": recipe.lr_scheduler_type,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "num_train_epochs": recipe.num_train_epochs,
        "bf16": bf16,
        "seed": recipe.seed,
        "optim": "adamw_torch",
        "save_strategy": "steps",
        "report_to": "none",
    }
    values.update(overrides)
    try:
        arguments = SentenceTransformerTrainingArguments(**values)
    except (ValueError, TypeError) as exc:  # the trainer refuses a value or a combination
        raise InvalidArgumentError(f"the trainer refuses these settings: {first_line(exc)}") from exc
    check_training_length(arguments)
    return arguments


def check_training_length(arguments) -> None:
    """Refuse the values the trainer accepts only to fail once the model is loaded, or to train nothing.

    Parameters
    ----------
    arguments
        ``SentenceTransformerTrainingArguments`` (or anything with its fields).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_training_length(SimpleNamespace(per_device_train_batch_size=4, per_device_eval_batch_size=8,
    ...     gradient_accumulation_steps=1, learning_rate=1e-6, max_steps=-1, num_train_epochs=0))
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: nothing to train: give max_steps > 0 or num_train_epochs > 0
    """
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        check_count(getattr(arguments, name), name)
    if arguments.learning_rate < 0:
        raise InvalidArgumentError(f"learning_rate must be >= 0, got {arguments.learning_rate!r}")
    if arguments.max_steps < -1:
        raise InvalidArgumentError(f"max_steps must be > 0 (or -1: train num_train_epochs), got {arguments.max_steps}")
    if arguments.max_steps <= 0 and arguments.num_train_epochs <= 0:
        raise InvalidArgumentError("nothing to train: give max_steps > 0 or num_train_epochs > 0")


def is_complete_checkpoint(folder: Path) -> bool:
    """True for a ``checkpoint-N`` folder that the trainer finished writing (its state is written last)."""
    return folder.is_dir() and (folder / COMPLETE_MARK).is_file()


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-N`` folder of ``output_dir`` with the highest N, or None.

    Examples
    --------
    >>> latest_checkpoint("/nonexistent") is None
    True
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), path) for path in folder.iterdir() if (m := CHECKPOINT.match(path.name))]
    complete = [(step, path) for step, path in found if is_complete_checkpoint(path)]
    return max(complete)[1] if complete else None


def model_folder(model) -> Path | None:
    """The local folder a pylate ``ColBERT`` was loaded from (None for a hub id or an unknown origin)."""
    colbert = getattr(model, "module", model)
    try:
        name = colbert[0].auto_model.config._name_or_path
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return Path(name) if name and Path(name).is_dir() else None


def check_output(
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    resume_from_checkpoint: str | Path | bool | None = None,
    model: str | Path | None = None,
) -> str | None:
    """Refuse an output folder that training must not write, before anything is loaded; the checkpoint to resume.

    The output must not be (or hold, or lie inside) the model being trained. An existing non-empty output is
    refused unless ``overwrite`` (its contents are then replaced) or ``resume_from_checkpoint`` names a checkpoint
    inside it (continuing that run is what resuming asks for).

    Parameters
    ----------
    output_dir
        The output folder.
    overwrite
        Replace an existing output.
    resume_from_checkpoint
        A checkpoint folder, or True for the latest complete ``checkpoint-N`` of the output.
    model
        The folder of the model to train (local folders only are compared).

    Returns
    -------
    str or None
        The checkpoint folder to resume from (True resolved), or None.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_output(folder / "new") is None
    True
    >>> (folder / "notes.txt").write_text("mine")
    4
    >>> check_output(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.OutputExistsError: output ... exists and is not empty (notes.txt); pass --overwrite ...
    >>> check_output(folder / "out", model=folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.OutputExistsError: output ... lies inside the model being trained ...
    >>> import shutil; shutil.rmtree(folder)
    """
    output = Path(output_dir).expanduser().resolve()
    if model is not None and Path(model).expanduser().is_dir():
        source = Path(model).expanduser().resolve()
        if output == source or output in source.parents or source in output.parents:
            where = "is" if output == source else "holds" if output in source.parents else "lies inside"
            raise OutputExistsError(
                f"output {output_dir} {where} the model being trained ({model}); give another output folder "
                "(the source model is never written)"
            )
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output {output_dir} is a file; give a folder")
    checkpoint = None
    if resume_from_checkpoint is True:
        checkpoint = latest_checkpoint(output)
        if checkpoint is None:
            raise InvalidArgumentError(
                f"resume_from_checkpoint is true but {output_dir} holds no complete checkpoint-N folder; "
                "give the checkpoint folder, or leave resume_from_checkpoint out"
            )
    elif resume_from_checkpoint not in (None, False):
        checkpoint = Path(resume_from_checkpoint).expanduser()
        if not is_complete_checkpoint(checkpoint):
            raise InvalidArgumentError(
                f"resume_from_checkpoint {resume_from_checkpoint} is not a complete checkpoint folder "
                f"(no {COMPLETE_MARK}); give a checkpoint-N folder written by a finished save"
            )
    resuming_here = checkpoint is not None and output in checkpoint.resolve().parents
    if overwrite and resuming_here:
        raise InvalidArgumentError(
            f"overwrite would delete the checkpoint being resumed ({checkpoint}); leave overwrite out to continue "
            "that run"
        )
    contents = sorted(path.name for path in output.iterdir()) if output.is_dir() else []
    if contents and not overwrite and not resuming_here:
        shown = ", ".join(contents[:3]) + (", …" if len(contents) > 3 else "")
        raise OutputExistsError(
            f"output {output_dir} exists and is not empty ({shown}); pass --overwrite (overwrite: true in the "
            "YAML, overwrite=True in Python) to replace it, or resume_from_checkpoint to continue its run"
        )
    return None if checkpoint is None else str(checkpoint)


def _clear_folder(folder: Path) -> None:
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _remove_incomplete_checkpoints(folder: Path) -> None:
    """After an interruption: a checkpoint folder the trainer did not finish is not a checkpoint."""
    if folder.is_dir():
        for path in folder.iterdir():
            if CHECKPOINT.match(path.name) and not is_complete_checkpoint(path):
                shutil.rmtree(path, ignore_errors=True)


def _publish(staging: Path, output: Path) -> None:
    """Move the final model from ``staging`` into ``output``, weights last.

    Each move is one rename, synced (the file's data before the rename, the folder after), so the order holds
    after a power cut too. The weights of an earlier final model go first and the new ones come last, so a folder
    interrupted half-way has no weights and no loader takes it for a finished model.
    """
    for path in output.iterdir():
        if path.is_file() and _WEIGHTS.match(path.name):
            path.unlink()
    entries = sorted(staging.iterdir(), key=lambda p: (bool(_WEIGHTS.match(p.name)), p.name.endswith(".index.json")))
    for path in entries:
        target = output / path.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        replace_synced(path, target)
    staging.rmdir()


def _rows_dataset(train_rows: Sequence[Mapping]) -> Dataset:
    if not train_rows:
        raise InvalidArgumentError("no training rows; build them with colbert_az_pylate.training.build_training_rows")
    sizes = {len(row["documents"]) for row in train_rows} | {len(row["scores"]) for row in train_rows}
    if len(sizes) != 1:
        raise DataFormatError(
            f"every row needs the same number of documents and scores (1 + K), found sizes {sorted(sizes)}"
        )
    for index, row in enumerate(train_rows):
        if not all(math.isfinite(float(score)) for score in row["scores"]):
            raise DataFormatError(
                f"training row {index} has a NaN or infinite teacher score; build_training_rows drops it"
            )
        if not all(str(text).strip() for text in [row["query"], *row["documents"]]):
            raise DataFormatError(f"training row {index} has an empty query or document; build_training_rows drops it")
    return Dataset.from_list(
        [
            {"query": row["query"], "documents": list(row["documents"]), "scores": list(row["scores"])}
            for row in train_rows
        ]
    )


def batch_tokenizer(model):
    """``model.tokenize`` for pylate's ``ColBERTCollator``, with documents padded to the batch's longest.

    The collator asks for padding to ``document_length`` (256): padded tokens are excluded from MaxSim, so padding
    to the longest document gives the same scores at a fraction of the cost on short documents. Queries are padded
    to ``query_length`` either way (query expansion).

    Parameters
    ----------
    model
        A pylate ``ColBERT``.

    Returns
    -------
    Callable
        ``tokenize(texts, is_query=True, pad=False, **kwargs)``, as the collator calls it.
    """

    def tokenize(texts: list[str], is_query: bool = True, pad: bool = False, **kwargs) -> dict:
        return model.tokenize(texts, is_query=is_query, pad=pad and is_query, **kwargs)

    return tokenize


def train(
    model,
    train_rows: Sequence[Mapping] | Dataset,
    output_dir: str | Path,
    *,
    eval_rows: Sequence[Mapping] | None = None,
    recipe: Recipe | None = None,
    resume_from_checkpoint: str | bool | None = None,
    overwrite: bool = False,
    callbacks: Sequence | None = None,
    **training_overrides,
):
    """Fine-tune a pylate ColBERT (from :func:`colbert_az_pylate.load`) with the card's recipe; returns it.

    Every checkpoint (``output_dir/checkpoint-N``) and the final model (``output_dir``) is a converted folder that
    plain pylate and the model card's code load. The final model is written beside and moved in, weights last; an
    interrupted run (Ctrl-C) leaves no unfinished checkpoint and no half-written final model.

    Parameters
    ----------
    model
        A pylate ``ColBERT``; it is trained in place.
    train_rows
        ``{"query", "documents", "scores"}`` rows (see :mod:`colbert_az_pylate.training.data`), or the
        ``datasets.Dataset`` of :func:`~colbert_az_pylate.training.dataset.prepare_training_data` (texts on access).
    output_dir
        Where checkpoints and the final model go. It must not exist or be empty unless ``overwrite`` (its contents
        are then replaced) or ``resume_from_checkpoint`` names a checkpoint inside it; it is never the model's own
        folder (see :func:`check_output`).
    eval_rows
        Triplet rows for the held-out evaluator (``TrainingData.heldout``), evaluated every ``eval_steps``.
    recipe
        The recipe (default: the card's :class:`Recipe`).
    resume_from_checkpoint
        A checkpoint folder, or True for the latest complete checkpoint of ``output_dir``: optimizer, scheduler,
        step and data order are restored.
    overwrite
        Replace an existing, non-empty ``output_dir``.
    callbacks
        ``transformers.TrainerCallback`` objects for the trainer (e.g. to record the loss log).
    **training_overrides
        Any ``SentenceTransformerTrainingArguments`` field (``max_steps``, ``save_steps``, ``use_cpu`` …).

    Returns
    -------
    pylate.models.ColBERT
        The trained model (the same object).

    Examples
    --------
    >>> from colbert_az_pylate import load
    >>> from colbert_az_pylate.training import Recipe, train
    >>> rows = [{"query": "sual", "documents": ["cavab", "başqa"], "scores": [5.0, 1.0]}] * 8
    >>> train(load("./colbert-az-pylate"), rows, "./finetuned", recipe=Recipe(), max_steps=2)  # doctest: +SKIP
    """
    from pylate.utils import ColBERTCollator

    recipe = recipe or Recipe()
    if not isinstance(recipe, Recipe):
        raise InvalidArgumentError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    output = Path(output_dir)
    checkpoint = check_output(
        output, overwrite=overwrite, resume_from_checkpoint=resume_from_checkpoint, model=model_folder(model)
    )
    dataset = train_rows if isinstance(train_rows, Dataset) else _rows_dataset(train_rows)
    loss = DistillationInfoNCE(
        model, alpha=recipe.alpha, temperature=recipe.temperature, teacher_temperature=recipe.teacher_temperature
    )
    evaluator = HeldOutTripletEvaluator(eval_rows) if eval_rows else None
    if evaluator is not None:
        training_overrides.setdefault("eval_strategy", "steps")
    args = training_arguments(output, recipe, **training_overrides)
    logger.info("training with %s", asdict(recipe))
    trainer = ConvertedCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        data_collator=ColBERTCollator(batch_tokenizer(model)),
        callbacks=list(callbacks) if callbacks else None,
    )
    staging = output / STAGING
    if args.should_save:
        if overwrite and output.is_dir():
            _clear_folder(output)
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(staging))
    except BaseException:
        if args.should_save:
            _remove_incomplete_checkpoints(output)
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if args.should_save:
        _publish(staging, output)
    trainer.accelerator.wait_for_everyone()
    return model
