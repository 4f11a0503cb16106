"""Training: the card's distillation data pipeline (``data``, ``sources``, ``dataset``), the recipe on pylate's
trainer (``trainer``: :class:`Recipe`, :func:`train`) and the YAML config of ``colbert-az train`` (``config``).

``Recipe`` and ``train`` are imported on first use (they bring torch and the trainer), so reading data stays light.

>>> from colbert_az_pylate.training import Recipe, train
>>> Recipe().learning_rate
1e-06
"""

from colbert_az_pylate.training.data import (
    PRESETS,
    RowStats,
    SourceSchema,
    TrainingSource,
    build_id_rows,
    build_training_rows,
    mix_sources,
    resolve_schema,
    row_texts,
)
from colbert_az_pylate.training.dataset import (
    TrainingData,
    lazy_training_dataset,
    prepare_training_data,
    split_heldout,
)
from colbert_az_pylate.training.sources import TextTable, load_source

_TRAINER = ("Recipe", "train")

__all__ = [
    "PRESETS",
    "Recipe",
    "RowStats",
    "SourceSchema",
    "TextTable",
    "TrainingData",
    "TrainingSource",
    "build_id_rows",
    "build_training_rows",
    "lazy_training_dataset",
    "load_source",
    "mix_sources",
    "prepare_training_data",
    "resolve_schema",
    "row_texts",
    "split_heldout",
    "train",
]


def __getattr__(name: str):
    if name in _TRAINER:
        from colbert_az_pylate.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
