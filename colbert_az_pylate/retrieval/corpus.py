"""Reading a corpus to index: JSONL, CSV/TSV or Parquet files, or a ``datasets`` name, through ``datasets``."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from colbert_az_pylate.errors import ColbertAzError

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
DEMO_CORPUS = "demo_corpus_az.jsonl"


@dataclass
class Corpus:
    """Texts to index with their ids (strings) and metadata (the other columns)."""

    ids: list[str]
    texts: list[str]
    metadata: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def read_corpus(
    source: str | Path,
    *,
    id_column: str = "id",
    text_column: str = "text",
    split: str = "train",
    config: str | None = None,
) -> Corpus:
    """Read ``source`` (a .jsonl/.csv/.tsv/.parquet file or a ``datasets`` name) into a :class:`Corpus`.

    Ids are turned into strings (``7`` becomes ``"7"``); other columns become metadata. Rows with an empty text
    are an error naming the row.

    >>> corpus = read_corpus(demo_corpus_path())
    >>> corpus.ids[0], corpus.metadata[0]["title"]
    ('baki', 'Bakı')
    """
    import datasets

    path = Path(source)
    try:
        if path.exists():
            kind = _FORMATS.get(path.suffix.lower())
            if kind is None:
                raise ColbertAzError(f"cannot read {path.suffix or 'a file without extension'}: use {sorted(_FORMATS)}")
            extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            table = datasets.load_dataset(kind, data_files=str(path), split="train", **extra)
        else:
            table = datasets.load_dataset(str(source), config, split=split)
    except ColbertAzError:
        raise
    except Exception as exc:
        raise ColbertAzError(f"cannot read corpus {source}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    missing = [c for c in (id_column, text_column) if c not in table.column_names]
    if missing:
        raise ColbertAzError(
            f"corpus {source} has no column {missing[0]!r} (columns: {table.column_names}); "
            "name the columns with --id-column/--text-column"
        )
    ids = [str(i) for i in table[id_column]]
    texts = table[text_column]
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ColbertAzError(f"corpus {source} row {row} (id {ids[row]!r}) has no text; drop it or fill it")
    extra_columns = [c for c in table.column_names if c not in (id_column, text_column)]
    columns = {c: table[c] for c in extra_columns}
    metadata = [{c: values[row] for c, values in columns.items()} for row in range(len(ids))] if columns else []
    return Corpus(ids, list(texts), metadata)


def demo_corpus_path() -> Path:
    """The small Azerbaijani corpus shipped with the package (53 passages written for the demo)."""
    return Path(str(resources.files("colbert_az_pylate") / "data" / DEMO_CORPUS))
