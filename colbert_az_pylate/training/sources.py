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

from colbert_az_pylate.errors import DataFormatError, first_line
from colbert_az_pylate.files import looks_like_local_path
from colbert_az_pylate.training.data import SourceSchema, TrainingSource, resolve_schema

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class TextTable(Mapping):
    """Texts by id over a ``datasets.Dataset``: ids indexed in memory, texts read from Arrow on access.

    Ids are compared as strings (``7`` and ``"7"`` are the same id).

    Parameters
    ----------
    dataset
        The table.
    id_column, text_column
        Its id and text columns.
    name
        What the table is called in error messages.

    Examples
    --------
    >>> from datasets import Dataset
    >>> table = TextTable(Dataset.from_dict({"pid": [7, 8], "passage": ["a", "b"]}), "pid", "passage")
    >>> table["8"], len(table)
    ('b', 2)
    """

    def __init__(self, dataset, id_column: str, text_column: str, name: str = "table") -> None:
        missing = [column for column in (id_column, text_column) if column not in dataset.column_names]
        if missing:
            raise DataFormatError(f"{name}: columns {missing} are missing; it has {dataset.column_names}")
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


def _read_local(builder: str, files, where: str):
    from datasets import load_dataset

    try:
        return load_dataset(builder, data_files=files, split="train")
    except Exception as exc:  # datasets wraps a malformed file in its own internals
        cause = exc.__cause__ or exc.__context__ or exc
        raise DataFormatError(f"cannot read {where}: {type(cause).__name__}: {first_line(cause)}") from exc


def _local_table(folder: Path, config: str):
    for suffix, builder in _BUILDERS.items():
        if (folder / f"{config}{suffix}").is_file():
            return _read_local(builder, str(folder / f"{config}{suffix}"), str(folder / f"{config}{suffix}"))
    if (folder / config).is_dir():
        for suffix, builder in _BUILDERS.items():
            files = sorted(str(path) for path in (folder / config).rglob(f"*{suffix}"))
            if files:
                return _read_local(builder, files, f"{folder / config}/*{suffix}")
    raise DataFormatError(
        f"{folder} has no {config!r} table: expected {config}.parquet, {config}.jsonl, {config}.json or {config}/"
    )


def read_config(location: str | Path, config: str, split: str = "train", revision: str | None = None, loader=None):
    """One config of a data set as a ``datasets.Dataset``, from a local folder or from the hub.

    Parameters
    ----------
    location
        A local folder (one file or folder per config), or a hub id (``owner/name``).
    config
        The config (table) to read: ``corpus``, ``queries``, ``hard_negatives`` …
    split
        Split of a hub config (a local table is the split).
    revision
        Hub revision (commit, tag or branch).
    loader
        Reads a hub config (default ``datasets.load_dataset``).

    Returns
    -------
    datasets.Dataset

    Raises
    ------
    DataFormatError
        A missing local folder (a location that cannot be a hub id), a missing or malformed table, or a hub data set
        that cannot be read (one line, saying to download it and give the folder as ``path``).
    """
    if Path(location).is_dir():
        return _local_table(Path(location), config)  # a local table is the split
    if Path(location).exists():
        raise DataFormatError(f"{location} is a file; a source is a folder with one table per config")
    if looks_like_local_path(location):
        raise DataFormatError(f"no folder {location}: check the path (a hub id looks like owner/name)")
    if loader is None:
        from datasets import load_dataset as loader
    try:
        return loader(str(location), config, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError …)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = "HF_HUB_OFFLINE is set and it is not cached" if offline else first_line(exc)
        raise DataFormatError(
            f"cannot read config {config!r} of {location} from the hub ({hint}), and there is no local folder "
            f"{location}; download it (`huggingface-cli download --repo-type dataset {location} --local-dir DIR`) "
            "and give DIR as the source's path (path: in the YAML)"
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

    Parameters
    ----------
    location
        A local folder (``corpus.parquet``/``.jsonl``/``.json`` or a ``corpus/`` folder of them, and so on per
        config), or a hub id.
    schema
        A :class:`SourceSchema`, or the name of a preset (see ``PRESETS``).
    name
        The source's name (default: the folder or repository name).
    split, revision
        Hub split and revision.
    loader
        Reads a hub config (default ``datasets.load_dataset``).

    Returns
    -------
    TrainingSource
        Pairs as a ``datasets.Dataset``, texts as :class:`TextTable` (read on access).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from datasets import Dataset
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> Dataset.from_list([{"passage_id": 1, "content": "cavab"}, {"passage_id": 2, "content": "başqa"}]).to_json(
    ...     str(folder / "corpus.jsonl")) > 0
    True
    >>> Dataset.from_list([{"query_id": "q", "query": "sual"}]).to_json(str(folder / "queries.jsonl")) > 0
    True
    >>> Dataset.from_list([{"query_id": "q", "passage_id": 1, "pos_score": 5.0, "neg_1_id": 2, "neg_1_score": 1.0}]
    ...                   ).to_parquet(str(folder / "hard_negatives.parquet")) > 0
    True
    >>> source = load_source(folder, "LocalDoc/azerbaijani_books_retriever_corpus-reranked", name="books")
    >>> source.queries["q"], source.corpus["2"]
    ('sual', 'başqa')
    >>> import shutil; shutil.rmtree(folder)
    """
    schema = resolve_schema(schema)
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
