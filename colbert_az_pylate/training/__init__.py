"""Training: the card's distillation data pipeline (and, next, its recipe on pylate's trainer)."""

from colbert_az_pylate.training.data import (
    PRESETS,
    RowStats,
    SourceSchema,
    TrainingSource,
    build_training_rows,
    mix_sources,
)

__all__ = ["PRESETS", "RowStats", "SourceSchema", "TrainingSource", "build_training_rows", "mix_sources"]
