"""Training: the card's distillation data pipeline; the recipe on pylate's trainer is in ``training.trainer``."""

from colbert_az_pylate.training.data import (
    PRESETS,
    RowStats,
    SourceSchema,
    TrainingSource,
    build_id_rows,
    build_training_rows,
    mix_sources,
)
from colbert_az_pylate.training.dataset import lazy_training_dataset, prepare_training_data, split_heldout
from colbert_az_pylate.training.sources import TextTable, load_source

__all__ = [
    "PRESETS",
    "RowStats",
    "SourceSchema",
    "TextTable",
    "TrainingSource",
    "build_id_rows",
    "build_training_rows",
    "lazy_training_dataset",
    "load_source",
    "mix_sources",
    "prepare_training_data",
    "split_heldout",
]
