"""``colbert-az train --config recipe.yaml``: the YAML file, checked key by key, and the run it describes.

```yaml
model: ./colbert-az                 # raw colbert-az layout (converted once) or converted folder, or hub id
output: ./colbert-az-finetuned      # must not exist or be empty, unless overwrite (or resuming a checkpoint in it)
overwrite: false                    # true: replace an existing output (never the model itself)
rows: 3000000                       # N, mixed by weight
heldout_per_source: 1500            # held-out triplets per source; default: 1,500, or 10 % of a smaller source
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
# resume_from_checkpoint: ./colbert-az-finetuned/checkpoint-5000   (or true: the latest in output)
```

Paths are relative to the working directory. A source reads ``path`` (a local folder, which must exist) or ``repo``
(a hub id, ``owner/name``; default: the preset's name). Every key and every value's kind is checked before anything
is loaded (``rows: lots``, ``weight: heavy``, ``recipe: {learning_rate: fast}``, ``trainer: {max_steps: two}``, an
unknown key, a missing folder, an existing output): one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from colbert_az_pylate.errors import ConfigError, InvalidArgumentError, first_line
from colbert_az_pylate.files import looks_like_local_path
from colbert_az_pylate.training.checks import check_fields
from colbert_az_pylate.training.data import SourceSchema, resolve_schema
from colbert_az_pylate.training.dataset import TrainingData, prepare_training_data
from colbert_az_pylate.training.trainer import Recipe


@dataclass
class SourceConfig:
    """One data set of the config: a preset name or an explicit schema, read from ``path`` (local) or ``repo`` (hub).

    Parameters
    ----------
    weight
        Its share of the mix (non-negative).
    preset
        A preset name (see ``PRESETS``); exactly one of ``preset`` and ``schema``.
    schema
        A column mapping (the fields of :class:`~colbert_az_pylate.training.data.SourceSchema`).
    path
        A local folder in the data set's config layout.
    repo
        A hub id (default: the preset's name); not with ``path``.
    name
        The source's name in the summary and the held-out metrics (default: the folder or repository name).
    revision, split
        Hub revision and split.

    Examples
    --------
    >>> SourceConfig(weight=1, preset="LocalDoc/msmarco-az-reranked").location()
    'LocalDoc/msmarco-az-reranked'
    """

    weight: float
    preset: str | None = None
    schema: dict | None = None
    path: str | None = None
    repo: str | None = None
    name: str | None = None
    revision: str | None = None
    split: str = "train"

    def resolved_schema(self) -> SourceSchema:
        """The column mapping: the preset's, or the schema given."""
        if (self.preset is None) == (self.schema is None):
            raise ConfigError("each source needs exactly one of preset (a name) or schema (a column mapping)")
        if self.preset is not None:
            try:
                return resolve_schema(self.preset)
            except InvalidArgumentError as exc:
                raise ConfigError(str(exc)) from exc
        schema = check_fields(self.schema, SourceSchema, "a source's schema", ConfigError)
        try:
            return SourceSchema(**schema)
        except TypeError as exc:
            raise ConfigError(f"a source's schema is incomplete: {first_line(exc)}") from exc

    def location(self) -> str:
        """Where the source is read: ``path``, else ``repo``, else the preset's name."""
        if self.path and self.repo:
            raise ConfigError("a source takes path (local folder) or repo (hub), not both")
        location = self.path or self.repo or self.preset
        if location is None:
            raise ConfigError("a source with a schema needs path (local folder) or repo (hub id)")
        return location

    def check(self) -> None:
        """Refuse what can be refused without the file system: the schema, both or neither location, the weight."""
        self.resolved_schema()
        self.location()
        if self.weight < 0:
            raise ConfigError(f"weight must be >= 0, got {self.weight}")

    def check_paths(self) -> None:
        """Refuse a missing local folder: ``path``, or a ``repo`` that can only be a local path."""
        location = self.location()
        if self.path is not None and not Path(self.path).expanduser().is_dir():
            raise ConfigError(f"path {self.path} is not a folder; give the local copy of the data set")
        if self.path is None and looks_like_local_path(location) and not Path(location).expanduser().is_dir():
            raise ConfigError(
                f"{location} looks like a local folder, but there is none; give an existing folder as path "
                "(a hub id is owner/name)"
            )


@dataclass
class TrainConfig:
    """A parsed ``recipe.yaml`` (the module docstring lists its keys).

    Examples
    --------
    >>> config = parse_train_config({"model": "m", "output": "o", "rows": 10,
    ...                              "sources": [{"preset": "LocalDoc/msmarco-az-reranked", "weight": 1}]})
    >>> config.recipe.learning_rate, config.sources[0].location(), config.heldout_per_source
    (1e-06, 'LocalDoc/msmarco-az-reranked', None)
    """

    model: str
    output: str
    rows: int
    sources: list[SourceConfig]
    heldout_per_source: int | None = None  # None: 1,500, or 10 % of a smaller source
    short_rows: Literal["resample", "drop"] = "resample"
    device: str | None = None
    resume_from_checkpoint: str | bool | None = None
    overwrite: bool = False
    recipe: Recipe = field(default_factory=Recipe)
    trainer: dict = field(default_factory=dict)

    def check_paths(self) -> None:
        """Refuse missing local folders (the model, a source), before anything is read or loaded."""
        if looks_like_local_path(self.model) and not Path(self.model).expanduser().is_dir():
            raise ConfigError(f"model {self.model} is not a folder (a raw colbert-az layout or a converted one)")
        for number, source in enumerate(self.sources, start=1):
            try:
                source.check_paths()
            except ConfigError as exc:
                raise ConfigError(f"source {number}: {exc}") from exc


def parse_train_config(values: dict) -> TrainConfig:
    """A :class:`TrainConfig` from the YAML mapping; an unknown or missing key, or a value of the wrong kind, is a
    one-line :class:`~colbert_az_pylate.errors.ConfigError` naming the key. Nothing is loaded.

    Parameters
    ----------
    values
        The YAML mapping.

    Returns
    -------
    TrainConfig

    Examples
    --------
    >>> parse_train_config({"model": "m", "output": "o", "rows": "lots", "sources": []})
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.ConfigError: rows must be a whole number, got 'lots'
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    values = check_fields(
        values, TrainConfig, "the config", ConfigError, skip=("sources", "recipe", "trainer"), prefix=""
    )
    missing = [key for key in ("model", "output", "rows", "sources") if key not in values]
    if missing:
        known = ", ".join(TrainConfig.__dataclass_fields__)
        raise ConfigError(f"the config needs {', '.join(missing)}; known keys: {known}")
    if values["rows"] < 1:
        raise ConfigError(f"rows must be at least 1, got {values['rows']}")
    if values.get("heldout_per_source") is not None and values["heldout_per_source"] < 0:
        raise ConfigError(f"heldout_per_source must be >= 0, got {values['heldout_per_source']}")
    if not isinstance(values["sources"], list) or not values["sources"]:
        raise ConfigError("sources must be a non-empty list of data sets (preset or schema, path or repo, weight)")
    sources = []
    for number, source in enumerate(values["sources"], start=1):
        source = check_fields(source, SourceConfig, f"source {number}", ConfigError, prefix=f"source {number}: ")
        if "weight" not in source:
            raise ConfigError(f"source {number} needs a weight")
        config = SourceConfig(**source)
        try:
            config.check()
        except ConfigError as exc:
            raise ConfigError(f"source {number}: {exc}") from exc
        sources.append(config)
    if sum(source.weight for source in sources) <= 0:
        raise ConfigError("the sources' weights are all zero; give at least one a positive weight")
    recipe = check_fields(values.get("recipe") or {}, Recipe, "recipe", ConfigError)
    try:
        recipe = Recipe(**recipe)
    except InvalidArgumentError as exc:
        raise ConfigError(f"recipe: {exc}") from exc
    trainer = check_fields(values.get("trainer") or {}, SentenceTransformerTrainingArguments, "trainer", ConfigError)
    for key, where in (("output_dir", "output"), ("resume_from_checkpoint", "resume_from_checkpoint")):
        if key in trainer:
            raise ConfigError(f"give trainer.{key} at the top level of the config, as {where}")
    return TrainConfig(**{**values, "sources": sources, "recipe": recipe, "trainer": trainer})


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and check a ``recipe.yaml`` (see the module docstring for its keys).

    Parameters
    ----------
    path
        The YAML file.

    Returns
    -------
    TrainConfig
    """
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or first_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text: {first_line(exc)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {first_line(exc)}") from exc
    return parse_train_config({} if values is None else values)


def run_train_config(config: TrainConfig, on_step=None) -> tuple[TrainingData, dict[str, dict[str, float]]]:
    """Check the output, read the data sets, check the trainer settings, then load the model, train, and evaluate
    the held-out triplets after training.

    Everything that can be refused without the model is refused before it loads: missing folders and the output
    first, then the data, then the trainer's settings.

    Parameters
    ----------
    config
        The parsed config.
    on_step
        Called with a line per step (progress), or None.

    Returns
    -------
    tuple
        The training data (with its row counts) and the final held-out metrics (empty without held-out rows).
    """
    from colbert_az_pylate.evaluation.triplets import evaluate_triplets
    from colbert_az_pylate.loading import load
    from colbert_az_pylate.training.sources import load_source
    from colbert_az_pylate.training.trainer import check_output, train, training_arguments

    step = on_step or (lambda message: None)
    config.check_paths()
    check_output(config.output, overwrite=config.overwrite, resume_from_checkpoint=config.resume_from_checkpoint,
                 model=config.model)  # fmt: skip
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
    trainer = dict(config.trainer)
    if data.heldout:
        trainer.setdefault("eval_strategy", "steps")
    training_arguments(config.output, config.recipe, **trainer)  # refuses settings the trainer would refuse
    step(f"loading {config.model}")
    model = load(config.model, device=config.device)
    train(model, data.train, config.output, eval_rows=data.heldout or None, recipe=config.recipe,
          resume_from_checkpoint=config.resume_from_checkpoint, overwrite=config.overwrite,
          **config.trainer)  # fmt: skip
    metrics = evaluate_triplets(model, data.heldout, show_progress_bar=False) if data.heldout else {}
    return data, metrics
