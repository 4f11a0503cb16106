"""Reading a reranked data set (hub repository or local folder in the same config layout) as a TrainingSource.

A data set has configs ``corpus``, ``queries`` (unless the query text sits in the pairs table) and a pairs config
(``triplets`` or ``hard_negatives``), as named by its :class:`~colbert_az_pylate.training.data.SourceSchema`. On the
hub each config is read with ``datasets.load_dataset(repo, config, split=...)``; a local folder holds one file per
config (``corpus.parquet``, ``corpus.jsonl`` or ``corpus.json``) or one folder of such files per config. Tables stay
memory-mapped Arrow: only the ids are indexed in memory, a text is read when it is looked up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.training.data import PRESETS, SourceSchema, TrainingSource

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class TextTable(Mapping):
    """Texts by id over a ``datasets.Dataset``: ids indexed in memory, texts read from Arrow on access.

    >>> from datasets import Dataset
    >>> table = TextTable(Dataset.from_dict({"pid": [7, 8], "passage": ["a", "b"]}), "pid", "passage")
    >>> table["8"], len(table)
    ('b', 2)
    """

    def __init__(self, dataset, id_column: str, text_column: str, name: str = "table") -> None:
        missing = [column for column in (id_column, text_column) if column not in dataset.column_names]
        if missing:
            raise ValueError(f"{name}: columns {missing} are missing; it has {dataset.column_names}")
        self._texts, self._column = dataset.select_columns([text_column]), text_column
        self._index = {str(key): row for row, key in enumerate(dataset[id_column])}

    def __getitem__(self, key: str) -> str:
        return self._texts[self._index[str(key)]][self._column]

    def get(self, key, default=None):
        position = self._index.get(str(key))
        return default if position is None else self._texts[position][self._column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _local_table(folder: Path, config: str):
    from datasets import load_dataset

    for suffix, builder in _BUILDERS.items():
        if (folder / f"{config}{suffix}").is_file():
            return load_dataset(builder, data_files=str(folder / f"{config}{suffix}"), split="train")
    if (folder / config).is_dir():
        for suffix, builder in _BUILDERS.items():
            files = sorted(str(path) for path in (folder / config).rglob(f"*{suffix}"))
            if files:
                return load_dataset(builder, data_files=files, split="train")
    raise ValueError(
        f"{folder} has no {config!r} table: expected {config}.parquet, {config}.jsonl, {config}.json or {config}/"
    )


def read_config(location: str | Path, config: str, split: str = "train", revision: str | None = None, loader=None):
    """One config of a data set as a ``datasets.Dataset``: from a local folder, or from the hub with ``loader``
    (default ``datasets.load_dataset``); a hub that cannot be reached is a one-line :class:`ColbertAzError`."""
    if Path(location).is_dir():
        return _local_table(Path(location), config)  # a local table is the split
    if loader is None:
        from datasets import load_dataset as loader
    try:
        return loader(str(location), config, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError …)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "HF_HUB_OFFLINE is set and it is not cached" if offline else reason
        raise ColbertAzError(
            f"cannot read config {config!r} of {location} from the hub ({hint}); "
            "download it with `huggingface-cli download --repo-type dataset` and give the local folder"
        ) from exc


def load_source(
    location: str | Path,
    schema: SourceSchema | str,
    *,
    name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    loader: Callable | None = None,
) -> TrainingSource:
    """A :class:`TrainingSource` from a hub repository or a local folder in its config layout.

    ``schema`` is a :class:`SourceSchema` or the name of a preset (see ``PRESETS``).

    >>> from colbert_az_pylate.training.sources import load_source
    >>> source = load_source("LocalDoc/msmarco-az-reranked", "LocalDoc/msmarco-az-reranked")  # doctest: +SKIP
    >>> rows = build_id_rows(source)  # doctest: +SKIP
    """
    if isinstance(schema, str):
        if schema not in PRESETS:
            raise ValueError(f"unknown preset {schema!r}; known presets: {sorted(PRESETS)}")
        schema = PRESETS[schema]
    name = name or Path(str(location)).name
    pairs = read_config(location, schema.pairs_config, split, revision, loader)
    corpus = TextTable(
        read_config(location, schema.corpus_config, split, revision, loader),
        schema.corpus_id,
        schema.corpus_text,
        f"{name}/{schema.corpus_config}",
    )
    if schema.queries_config is None:
        queries_table, queries_name = pairs, f"{name}/{schema.pairs_config}"
    else:
        queries_table = read_config(location, schema.queries_config, split, revision, loader)
        queries_name = f"{name}/{schema.queries_config}"
    queries = TextTable(queries_table, schema.query_id, schema.query_text, queries_name)
    return TrainingSource(name, pairs, queries, corpus, schema)
