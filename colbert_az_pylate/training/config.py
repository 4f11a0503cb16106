"""``colbert-az train --config recipe.yaml``: the YAML file, checked key by key, and the run it describes.

```yaml
model: ./colbert-az                 # raw colbert-az layout (converted once) or converted folder, or hub id
output: ./colbert-az-finetuned
rows: 3000000                       # N, mixed by weight
heldout_per_source: 1500            # held-out triplets per source (card: 1,500)
short_rows: resample                # or drop: rows left with fewer than K negatives
sources:
  - preset: LocalDoc/msmarco-az-reranked      # column mapping; read from the hub under that name …
    weight: 50
  - preset: LocalDoc/azerbaijani_books_retriever_corpus-reranked
    path: ./data/books                        # … or from a local folder in the same config layout
    weight: 25
  - repo: LocalDoc/azerbaijani_retriever_corpus-reranked
    schema: {corpus_id: pid, corpus_text: passage, query_id: qid, query_text: query, positive_id: pos_pid,
             positive_score: pos_score, negative_id: "neg_{k}_pid", negative_score: "neg_{k}_score"}
    weight: 10
recipe: {learning_rate: 1.0e-6}     # any field of Recipe
trainer: {save_steps: 5000, eval_steps: 5000}   # any SentenceTransformerTrainingArguments field
```

Paths are relative to the working directory. An unknown key anywhere is refused with a one-line error naming the
key and the known ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.training.data import PRESETS, SourceSchema
from colbert_az_pylate.training.dataset import CARD_HELDOUT_PER_SOURCE, TrainingData, prepare_training_data
from colbert_az_pylate.training.trainer import Recipe


def _check_keys(values: dict, known: list[str], where: str) -> None:
    if not isinstance(values, dict):
        raise ColbertAzError(f"{where} must be a mapping of keys to values, got {type(values).__name__}")
    for key in values:
        if key not in known:
            raise ColbertAzError(f"unknown key {key!r} in {where}; known keys: {', '.join(known)}")


def _field_names(cls) -> list[str]:
    return [item.name for item in dataclasses.fields(cls)]


@dataclass
class SourceConfig:
    """One data set: a preset name or an explicit schema, read from ``path`` (local), ``repo`` or the preset."""

    weight: float
    preset: str | None = None
    schema: dict | None = None
    path: str | None = None
    repo: str | None = None
    name: str | None = None
    revision: str | None = None
    split: str = "train"

    def resolved_schema(self) -> SourceSchema:
        if (self.preset is None) == (self.schema is None):
            raise ColbertAzError("each source needs exactly one of preset (a name) or schema (a column mapping)")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ColbertAzError(f"unknown preset {self.preset!r}; known presets: {', '.join(PRESETS)}")
            return PRESETS[self.preset]
        _check_keys(self.schema, _field_names(SourceSchema), "a source's schema")
        try:
            return SourceSchema(**self.schema)
        except TypeError as exc:
            raise ColbertAzError(f"a source's schema is incomplete: {exc}") from exc

    def location(self) -> str:
        if self.path and self.repo:
            raise ColbertAzError("a source takes path (local folder) or repo (hub), not both")
        location = self.path or self.repo or self.preset
        if location is None:
            raise ColbertAzError("a source with a schema needs path (local folder) or repo (hub id)")
        return location


@dataclass
class TrainConfig:
    """A parsed ``recipe.yaml``.

    >>> config = parse_train_config({"model": "m", "output": "o", "rows": 10,
    ...                              "sources": [{"preset": "LocalDoc/msmarco-az-reranked", "weight": 1}]})
    >>> config.recipe.learning_rate, config.sources[0].location()
    (1e-06, 'LocalDoc/msmarco-az-reranked')
    """

    model: str
    output: str
    rows: int
    sources: list[SourceConfig]
    heldout_per_source: int = CARD_HELDOUT_PER_SOURCE
    short_rows: str = "resample"
    device: str | None = None
    resume_from_checkpoint: str | bool | None = None
    recipe: Recipe = field(default_factory=Recipe)
    trainer: dict = field(default_factory=dict)


def parse_train_config(values: dict) -> TrainConfig:
    """A :class:`TrainConfig` from the YAML mapping; unknown or missing keys are one-line errors."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    known = _field_names(TrainConfig)
    _check_keys(values, known, "the config")
    missing = [key for key in ("model", "output", "rows", "sources") if key not in values]
    if missing:
        raise ColbertAzError(f"the config needs {', '.join(missing)}; known keys: {', '.join(known)}")
    if not isinstance(values["sources"], list) or not values["sources"]:
        raise ColbertAzError("sources must be a non-empty list of data sets (preset or schema, path or repo, weight)")
    sources = []
    for number, source in enumerate(values["sources"], start=1):
        _check_keys(source, _field_names(SourceConfig), f"source {number}")
        if "weight" not in source:
            raise ColbertAzError(f"source {number} needs a weight")
        sources.append(SourceConfig(**source))
    recipe = values.get("recipe") or {}
    _check_keys(recipe, _field_names(Recipe), "recipe")
    trainer = values.get("trainer") or {}
    _check_keys(trainer, _field_names(SentenceTransformerTrainingArguments), "trainer")
    if "output_dir" in trainer:
        raise ColbertAzError("give the output folder as output, not trainer.output_dir")
    return TrainConfig(**{**values, "sources": sources, "recipe": Recipe(**recipe), "trainer": trainer})


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and check a ``recipe.yaml`` (see the module docstring for its keys)."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ColbertAzError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ColbertAzError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return parse_train_config(values or {})


def run_train_config(config: TrainConfig, on_step=None) -> tuple[TrainingData, dict[str, dict[str, float]]]:
    """Load the model and the data sets, train, and evaluate the held-out triplets after training.

    Returns the training data (with its row counts) and the final held-out metrics (empty without held-out rows).
    """
    from colbert_az_pylate.evaluation.triplets import evaluate_triplets
    from colbert_az_pylate.loading import load
    from colbert_az_pylate.training.sources import load_source
    from colbert_az_pylate.training.trainer import train

    step = on_step or (lambda message: None)
    step(f"loading {config.model}")
    model = load(config.model, device=config.device)
    sources = []
    for source in config.sources:
        location = source.location()
        step(f"reading {location}")
        loaded = load_source(location, source.resolved_schema(), name=source.name, split=source.split,
                             revision=source.revision)  # fmt: skip
        sources.append((loaded, source.weight))
    data = prepare_training_data(
        sources,
        config.rows,
        heldout_per_source=config.heldout_per_source,
        negatives=config.recipe.negatives,
        false_negative_ratio=config.recipe.false_negative_ratio,
        short_rows=config.short_rows,
        seed=config.recipe.seed,
    )
    step(data.summary().replace("\n", "; "))
    train(model, data.train, config.output, eval_rows=data.heldout or None, recipe=config.recipe,
          resume_from_checkpoint=config.resume_from_checkpoint, **config.trainer)  # fmt: skip
    metrics = evaluate_triplets(model, data.heldout, show_progress_bar=False) if data.heldout else {}
    return data, metrics
