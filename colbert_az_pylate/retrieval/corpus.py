"""Reading a corpus to index: a JSONL/JSON, CSV/TSV or Parquet file, or a dataset on the Hugging Face hub.

Files are read here, not through ``datasets``, so that ids stay exactly as written (``007`` stays ``"007"``) and
every error names the file and the line.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, first_line
from colbert_az_pylate.files import looks_like_local_path
from colbert_az_pylate.packaged import DEMO_CORPUS, SAMPLE_QUERIES, demo_corpus_path  # noqa: F401  (their old home)
from colbert_az_pylate.retrieval.ids import check_document_ids

# questions about the demo corpus: the demo's queries, also part of the int8 query graph's calibration texts

_FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
# A name with one of these endings is a file the user meant, never a hub dataset id.
_DATA_SUFFIXES = {*_FILE_FORMATS, ".ndjson", ".txt", ".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".arrow", ".xlsx"}
_COLUMN_HINT = "pass id_column=/text_column= (--id-column/--text-column on the command line)"


def check_documents(documents: Sequence[str]) -> list[str]:
    """The documents as a list, or a one-line error naming the first empty or non-text one.

    Parameters
    ----------
    documents
        The texts to index (a list, not one string).

    Returns
    -------
    list[str]
        The texts, as a new list.

    Examples
    --------
    >>> check_documents(("Bakı", "Şəki"))
    ['Bakı', 'Şəki']
    >>> check_documents(["Bakı", " "])
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: document 1 is empty or whitespace only; drop it or give it text
    """
    if isinstance(documents, (str, bytes)):
        raise InvalidArgumentError("documents must be a list of texts, not one string; wrap it in a list")
    if not isinstance(documents, Iterable):
        raise InvalidArgumentError(f"documents must be a list of texts, got {type(documents).__name__}")
    documents = list(documents)
    if not documents:
        raise InvalidArgumentError("the corpus is empty: there is nothing to index")
    for position, text in enumerate(documents):
        if not isinstance(text, str):
            raise InvalidArgumentError(f"document {position} is a {type(text).__name__}, not text")
        if not text.strip():
            raise InvalidArgumentError(f"document {position} is empty or whitespace only; drop it or give it text")
    return documents


def check_metadata(metadata, ids: Sequence[str]) -> list[dict] | None:
    """The metadata as a list of dicts that JSON can store (one per document), or a one-line error.

    Checked before any encoding, so a bad entry costs nothing. ``None`` (no metadata) stays ``None``.

    Parameters
    ----------
    metadata
        One dict per document, or ``None``.
    ids
        The documents' ids, named in the message.

    Returns
    -------
    list[dict] | None
        The metadata, as a new list.

    Examples
    --------
    >>> check_metadata([{"lang": "az"}], ["baku"])
    [{'lang': 'az'}]
    >>> check_metadata([{"tags": {"a"}}], ["baku"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: metadata of document 0 (id 'baku') cannot be stored as JSON: ...
    """
    if metadata is None:
        return None
    if isinstance(metadata, (dict, str, bytes)) or not isinstance(metadata, Iterable):
        raise InvalidArgumentError(f"metadata must be a list of dicts, one per document, got {type(metadata).__name__}")
    metadata = list(metadata)
    if len(metadata) != len(ids):
        raise InvalidArgumentError(f"{len(ids)} documents but {len(metadata)} metadata entries; give one per document")
    for position, (entry, doc_id) in enumerate(zip(metadata, ids, strict=True)):
        if not isinstance(entry, dict):
            raise InvalidArgumentError(
                f"metadata of document {position} (id {doc_id!r}) is a {type(entry).__name__}, not a dict"
            )
        try:
            json.dumps(entry, ensure_ascii=False, allow_nan=False)  # NaN would make `search --json` invalid JSON
        except (TypeError, ValueError, RecursionError) as exc:
            reason = first_line(exc)
            if reason.startswith("Out of range float"):
                reason = "NaN or infinity is not JSON (use None for a missing value)"
            raise InvalidArgumentError(
                f"metadata of document {position} (id {doc_id!r}) cannot be stored as JSON: {reason}; "
                "use strings, numbers, booleans, None, lists and dicts"
            ) from exc
    return metadata


@dataclass
class Corpus:
    """Texts to index, with their ids and metadata.

    Parameters
    ----------
    ids
        One id per text, a string exactly as written in the source.
    texts
        The texts, non-empty.
    metadata
        One dict per text holding the source's other columns; empty when it has no other columns.

    Examples
    --------
    >>> corpus = Corpus(["007", "2.50"], ["Bakı", "Gəncə"], [{"lang": "az"}, {"lang": "az"}])
    >>> len(corpus), corpus.ids
    (2, ['007', '2.50'])
    """

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
    """Read a corpus file or hub dataset into a :class:`Corpus`, refusing bad rows with the file and line.

    Parameters
    ----------
    source
        A ``.jsonl``/``.json`` (JSON lines or one array of objects), ``.csv`` (quoted as by Excel or pandas),
        ``.tsv`` (one row per line, no quoting, as MS MARCO's ``collection.tsv``) or ``.parquet`` file, or the
        name of a dataset on the Hugging Face hub. A name that looks like a path is never looked up on the hub.
    id_column
        Column holding the document ids. Ids are kept as written (CSV ``007`` → ``"007"``, JSON ``2`` → ``"2"``);
        a missing, null or empty id is an error naming the line, a repeated id an error naming the id.
    text_column
        Column holding the texts; a missing or empty text is an error naming the line.
    split
        Split of a hub dataset (default ``"train"``).
    config
        Configuration of a hub dataset.

    Returns
    -------
    Corpus
        The ids, texts and, as metadata, the other columns (CSV/TSV values are strings, as written; dates and
        times of a Parquet file or hub dataset are ISO strings).

    Examples
    --------
    >>> corpus = read_corpus(demo_corpus_path())
    >>> len(corpus), corpus.ids[0], corpus.metadata[0]["title"]
    (53, 'baki', 'Bakı')
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "corpus.csv"
    ...     _ = path.write_text("id,text\\n007,Bakı paytaxtdır.\\n2.50,Gəncə\\n", encoding="utf-8")
    ...     read_corpus(path).ids
    ['007', '2.50']
    """
    name = str(source)
    if not name.strip():
        raise InvalidArgumentError("the corpus name is empty; name a corpus file or a hub dataset")
    if id_column == text_column:
        raise InvalidArgumentError(f"the id and text columns are both {id_column!r}; name two different columns")
    path = Path(source)
    if path.is_file():
        kind = _FILE_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise InvalidArgumentError(
                f"cannot read corpus {name}: {path.suffix or 'a file without extension'} is not one of "
                f"{sorted(_FILE_FORMATS)}"
            )
        columns, records = _read_file(path, kind, name, id_column)
    elif path.is_dir():
        raise InvalidArgumentError(f"corpus {name} is a folder; name a {'/'.join(sorted(_FILE_FORMATS))} file")
    elif _looks_like_path(name):
        raise InvalidArgumentError(f"corpus file {name} does not exist")
    else:
        columns, records = _read_hub_dataset(name, config, split)
    if columns is not None:
        missing = [c for c in (id_column, text_column) if c not in columns]
        if missing:
            raise DataFormatError(f"corpus {name} has no column {missing[0]!r} (columns: {columns}); {_COLUMN_HINT}")
    return _corpus_from_records(name, records, id_column, text_column)


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only mean a local file (hub dataset ids are ``name`` or ``owner/name``)."""
    return looks_like_local_path(name) or Path(name).suffix.lower() in _DATA_SUFFIXES


Records = Iterable[tuple[str, dict]]  # (where, e.g. "line 3", the row as a dict)


def _read_file(path: Path, kind: str, name: str, id_column: str) -> tuple[list[str] | None, Records]:
    if kind == "parquet":
        return _read_parquet(path, name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read corpus {name}: {exc.strerror or first_line(exc)}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataFormatError(f"corpus {name} line {line} is not UTF-8 text; save the file as UTF-8") from exc
    if not text.strip():
        raise DataFormatError(f"corpus {name} is empty: there is nothing to index")
    if kind in ("csv", "tsv"):
        return _read_delimited(text, "\t" if kind == "tsv" else ",", name)
    if kind == "json" and text.lstrip().startswith("["):
        return None, _read_json_array(text, name, id_column)
    return None, _read_json_lines(text, name, id_column)


def _raw_numbers(text: str):
    """The same JSON with every number as the string written in the file."""
    return json.loads(text, parse_int=str, parse_float=str, parse_constant=str)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json_lines(text: str, name: str, id_column: str) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"corpus {name} line {number} is not valid JSON ({exc.msg} at column {exc.colno}); "
                "write one JSON object per line"
            ) from exc
        if not isinstance(record, dict):
            raise DataFormatError(
                f"corpus {name} line {number} is a JSON {type(record).__name__}, not an object like "
                '{"id": ..., "text": ...}'
            )
        if _is_number(record.get(id_column)):
            record[id_column] = _raw_numbers(line)[id_column]
        yield f"line {number}", record


def _read_json_array(text: str, name: str, id_column: str) -> Iterator[tuple[str, dict]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"corpus {name} line {exc.lineno} is not valid JSON ({exc.msg})") from exc
    written = None
    for position, record in enumerate(items):
        if not isinstance(record, dict):
            raise DataFormatError(
                f"corpus {name} item {position} is a JSON {type(record).__name__}, not an object like "
                '{"id": ..., "text": ...}'
            )
        if _is_number(record.get(id_column)):
            written = _raw_numbers(text) if written is None else written
            record[id_column] = written[position][id_column]
        yield f"item {position}", record


def _read_delimited(text: str, delimiter: str, name: str) -> tuple[list[str], Records]:
    csv.field_size_limit(2**31 - 1)  # the default, 128 KiB, is shorter than some documents
    # TSV has no quoting (one row per line, as MS MARCO's collection.tsv): a quote is part of the text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DataFormatError(f"corpus {name} line 1 (the header) is malformed: {exc}") from exc
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataFormatError(f"corpus {name}: the header names column {repeated[0]!r} twice")

    def records() -> Iterator[tuple[str, dict]]:
        end = reader.line_num
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                reason = "a quoted field is never closed" if "end of data" in str(exc) else str(exc)
                raise DataFormatError(f"corpus {name} line {start} is malformed: {reason}") from exc
            end = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                hint = " (a .tsv file is split on tabs)" if delimiter == "\t" else " (quote fields holding commas)"
                raise DataFormatError(
                    f"corpus {name} line {start} has {len(row)} fields but the header has {len(header)}{hint}"
                )
            yield f"line {start}", dict(zip(header, row, strict=True))

    return header, records()


def _read_parquet(path: Path, name: str) -> tuple[list[str], Records]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError on a damaged or foreign file
        raise DataFormatError(f"corpus {name} is not a readable Parquet file: {first_line(exc)}") from exc
    return table.column_names, _rows(table.column_names, table.to_pydict())


def _read_hub_dataset(name: str, config: str | None, split: str) -> tuple[list[str], Records]:
    import datasets

    try:
        table = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types for "not found", "offline", "no such split"
        raise InvalidArgumentError(
            f"corpus {name!r} is not a file here, and no dataset of that name could be loaded from the Hugging "
            f"Face hub ({first_line(exc)})"
        ) from exc
    return table.column_names, _rows(table.column_names, {c: table[c] for c in table.column_names})


def _rows(columns: list[str], values: dict[str, list]) -> Iterator[tuple[str, dict]]:
    count = len(values[columns[0]]) if columns else 0
    for row in range(count):
        yield f"row {row}", {c: _json_ready(values[c][row]) for c in columns}


def _json_ready(value):
    """Dates and times of a typed table as ISO text and a NaN (a missing value) as None, so they can be stored as
    JSON metadata."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.isoformat() if isinstance(value, (datetime.date, datetime.time)) else value


def _document_id(record: dict, id_column: str, where: str, name: str) -> str:
    if id_column not in record:
        raise DataFormatError(
            f"corpus {name} {where} has no column {id_column!r} (its columns: {list(record)}); {_COLUMN_HINT}"
        )
    value = record[id_column]
    if _is_number(value) and not (isinstance(value, float) and math.isnan(value)):
        value = str(value)  # Parquet or a hub dataset: a typed number (JSON ids arrive as written)
    if value is None or isinstance(value, float):
        raise DataFormatError(f"corpus {name} {where} has no id (null); give every document an id")
    if not isinstance(value, str):
        raise DataFormatError(
            f"corpus {name} {where} has an id of type {type(value).__name__} ({value!r}); ids are strings or numbers"
        )
    if not value:
        raise DataFormatError(f"corpus {name} {where} has an empty id; give every document an id")
    return value


def _corpus_from_records(name: str, records: Records, id_column: str, text_column: str) -> Corpus:
    ids, texts, metadata = [], [], []
    for where, record in records:
        document_id = _document_id(record, id_column, where, name)
        if text_column not in record:
            raise DataFormatError(
                f"corpus {name} {where} has no column {text_column!r} (its columns: {list(record)}); {_COLUMN_HINT}"
            )
        text = record[text_column]
        if not isinstance(text, str):
            kind = "null" if text is None else f"of type {type(text).__name__}"
            raise DataFormatError(f"corpus {name} {where} (id {document_id!r}) has a text {kind}, not a string")
        if not text.strip():
            raise DataFormatError(f"corpus {name} {where} (id {document_id!r}) has no text; drop it or fill it")
        ids.append(document_id)
        texts.append(text)
        metadata.append({k: v for k, v in record.items() if k not in (id_column, text_column)})
    if not ids:
        raise DataFormatError(f"corpus {name} holds no documents (only a header?): there is nothing to index")
    check_document_ids(ids, where=f"corpus {name}")  # the one id rule: unique non-empty strings
    return Corpus(ids, texts, metadata if any(metadata) else [])
