"""``train``: the card's distillation recipe on pylate's trainer, with checkpoints that are converted folders."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.evaluation import SentenceEvaluator

from colbert_az_pylate.conversion.checkpoint import PROJECTION_FILE
from colbert_az_pylate.conversion.converter import save_tokenizer
from colbert_az_pylate.evaluation.triplets import evaluate_triplets
from colbert_az_pylate.losses import DistillationInfoNCE
from colbert_az_pylate.training.data import CARD_FALSE_NEGATIVE_RATIO, CARD_NEGATIVES

logger = logging.getLogger(__name__)


@dataclass
class Recipe:
    """The model card's training recipe; every field can be overridden.

    ``negatives`` and ``false_negative_ratio`` are the data settings to pass to ``build_training_rows``.
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


class HeldOutTripletEvaluator(SentenceEvaluator):
    """The card's held-out evaluation (R@1, R@3, MRR, NDCG@10 per source and macro) inside the trainer."""

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
    """Saves every checkpoint as a converted folder: plain pylate and the model card's code both load it."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        colbert = getattr(self.model, "module", self.model)
        torch.save({"weight": colbert[1].linear.weight.detach().float().cpu().contiguous()}, folder / PROJECTION_FILE)
        save_tokenizer(colbert.tokenizer, folder)


def training_arguments(output_dir: str | Path, recipe: Recipe, **overrides) -> SentenceTransformerTrainingArguments:
    """Trainer arguments from the recipe (``overrides`` win)."""
    bf16 = recipe.bf16
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    values = {
        "output_dir": str(output_dir),
        "learning_rate": recipe.learning_rate,
        "weight_decay": recipe.weight_decay,
        "warmup_ratio": recipe.warmup_ratio,
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
    return SentenceTransformerTrainingArguments(**values)


def batch_tokenizer(model):
    """``model.tokenize`` for pylate's ``ColBERTCollator``, with documents padded to the batch's longest.

    The collator asks for padding to ``document_length`` (256): padded tokens are masked out of MaxSim, so padding
    to the longest document gives the same scores at a fraction of the cost on short documents. Queries are padded
    to ``query_length`` either way (query expansion).
    """

    def tokenize(texts: list[str], is_query: bool = True, pad: bool = False, **kwargs) -> dict:
        return model.tokenize(texts, is_query=is_query, pad=pad and is_query, **kwargs)

    return tokenize


def _rows_dataset(train_rows: Sequence[Mapping]) -> Dataset:
    if not train_rows:
        raise ValueError("no training rows; build them with colbert_az_pylate.training.build_training_rows")
    sizes = {len(row["documents"]) for row in train_rows} | {len(row["scores"]) for row in train_rows}
    if len(sizes) != 1:
        raise ValueError(
            f"every row needs the same number of documents and scores (1 + K), found sizes {sorted(sizes)}"
        )
    for index, row in enumerate(train_rows):
        if not all(math.isfinite(float(score)) for score in row["scores"]):
            raise ValueError(f"training row {index} has a NaN or infinite teacher score; build_training_rows drops it")
        if not all(str(text).strip() for text in [row["query"], *row["documents"]]):
            raise ValueError(f"training row {index} has an empty query or document; build_training_rows drops it")
    return Dataset.from_list(
        [
            {"query": row["query"], "documents": list(row["documents"]), "scores": list(row["scores"])}
            for row in train_rows
        ]
    )


def train(
    model,
    train_rows: Sequence[Mapping] | Dataset,
    output_dir: str | Path,
    *,
    eval_rows: Sequence[Mapping] | None = None,
    recipe: Recipe | None = None,
    resume_from_checkpoint: str | bool | None = None,
    **training_overrides,
):
    """Fine-tune a pylate ColBERT (from :func:`colbert_az_pylate.load`) with the card's recipe; returns it.

    ``train_rows`` are ``{"query", "documents", "scores"}`` rows (see :mod:`colbert_az_pylate.training.data`), or
    the ``datasets.Dataset`` of :func:`~colbert_az_pylate.training.dataset.prepare_training_data` (texts on access);
    ``eval_rows`` triplet rows for the held-out evaluator. The final model is saved to ``output_dir`` as a
    converted folder.

    >>> from colbert_az_pylate import load
    >>> from colbert_az_pylate.training.trainer import train
    >>> train(load("./colbert-az-pylate"), rows, "./finetuned")  # doctest: +SKIP
    """
    from pylate.utils import ColBERTCollator

    recipe = recipe or Recipe()
    dataset = train_rows if isinstance(train_rows, Dataset) else _rows_dataset(train_rows)
    loss = DistillationInfoNCE(
        model, alpha=recipe.alpha, temperature=recipe.temperature, teacher_temperature=recipe.teacher_temperature
    )
    evaluator = HeldOutTripletEvaluator(eval_rows) if eval_rows else None
    if evaluator is not None:
        training_overrides.setdefault("eval_strategy", "steps")
    args = training_arguments(output_dir, recipe, **training_overrides)
    logger.info("training with %s", asdict(recipe))
    trainer = ConvertedCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        data_collator=ColBERTCollator(batch_tokenizer(model)),
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model(str(output_dir))
    return model
