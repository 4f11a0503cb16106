"""Readers for the evaluation formats: AZ-MIRAGE (dataset.json + doc_pool.json), BEIR, and triplet JSONL.

Each returns an :class:`EvaluationData` (queries, corpus, qrels) and refuses malformed input with the file and
line (or entry) at fault. Nothing is dropped silently: what is left out is counted in ``notes``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import DataFormatError, first_line


@dataclass
class EvaluationData:
    """Queries (id → text), corpus (id → text) and qrels (query id → {document id: relevance}).

    Parameters
    ----------
    queries : dict[str, str]
        Query id → text.
    corpus : dict[str, str]
        Document id → text.
    qrels : dict[str, dict[str, int]]
        Query id → {document id: relevance grade}.
    notes : list[str]
        What was left out while reading, one line each.

    Examples
    --------
    >>> data = EvaluationData({"q1": "paytaxt"}, {"d1": "Bakı paytaxtdır."}, {"q1": {"d1": 1}})
    >>> data.notes
    []
    """

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path} does not exist") from exc
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or first_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path} is not UTF-8 text ({first_line(exc)})") from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not Path(path).is_file():
        raise DataFormatError(f"{path} does not exist")
    rows = []
    number = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(f"{path} line {number} is not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise DataFormatError(f"{path} line {number} is not a JSON object")
                rows.append((number, row))
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path} line {number + 1} is not UTF-8 text") from exc
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc.strerror or first_line(exc)}") from exc
    return rows


def _put(table: dict[str, str], key: str, value: str, where: str) -> None:
    if key in table:
        raise DataFormatError(f"duplicate id {key!r} at {where}; ids must be unique")
    table[key] = value


def _text(value: object, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {what} must be a text, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _support(entry: dict, where: str) -> int:
    support = entry.get("support", 0)
    if isinstance(support, list):
        support = support[0] if support else 0
    if support is None:
        return 0
    if isinstance(support, bool) or not isinstance(support, (int, float, str)):
        raise DataFormatError(f"{where}: support must be 0 or 1, got {_kind(support)}")
    try:
        return int(support)
    except ValueError as exc:
        raise DataFormatError(f"{where}: support must be 0 or 1, got {_kind(support)}") from exc


def load_az_mirage(dataset: str | Path, pool: str | Path) -> EvaluationData:
    """AZ-MIRAGE: ``dataset.json`` (query_id, query, …) and ``doc_pool.json`` (doc_chunk, mapped_id, support).

    A chunk is relevant to the query whose id equals its ``mapped_id`` when ``support`` is 1. Chunks are
    identified by their position in the pool (``"chunk{i}"``) unless they carry a ``doc_id``/``chunk_id``.

    Parameters
    ----------
    dataset : str or Path
        ``dataset.json``: a list of entries with ``query_id`` and ``query``.
    pool : str or Path
        ``doc_pool.json``: a list of chunks with ``doc_chunk``, ``mapped_id`` and ``support``.

    Returns
    -------
    EvaluationData
        Every query, every chunk, and the supporting chunks as qrels.

    Raises
    ------
    DataFormatError
        Naming the file and entry at fault.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "dataset.json").write_text(json.dumps([{"query_id": 7, "query": "Paytaxt?"}]))
    ...     pool = [{"doc_chunk": "Bakı paytaxtdır.", "mapped_id": 7, "support": 1}, {"doc_chunk": "Şəki"}]
    ...     _ = (Path(tmp) / "doc_pool.json").write_text(json.dumps(pool))
    ...     data = load_az_mirage(Path(tmp) / "dataset.json", Path(tmp) / "doc_pool.json")
    >>> data.qrels, len(data.corpus)
    ({'7': {'chunk0': 1}}, 2)
    """
    entries, chunks = _read_json(Path(dataset)), _read_json(Path(pool))
    if not isinstance(entries, list) or not isinstance(chunks, list):
        raise DataFormatError("dataset.json and doc_pool.json must each hold a JSON list")
    queries: dict[str, str] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "query_id" not in entry or "query" not in entry:
            raise DataFormatError(f"{dataset} entry {i} lacks query_id or query")
        where = f"{dataset} entry {i}"
        _put(queries, str(entry["query_id"]), _text(entry["query"], "query", where), where)
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {query: {} for query in queries}
    unknown = 0
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or "doc_chunk" not in chunk:
            raise DataFormatError(f"{pool} entry {i} lacks doc_chunk")
        where = f"{pool} entry {i}"
        doc_id = str(chunk.get("doc_id", chunk.get("chunk_id", f"chunk{i}")))
        _put(corpus, doc_id, _text(chunk["doc_chunk"], "doc_chunk", where), where)
        mapped = str(chunk.get("mapped_id", ""))
        if _support(chunk, where) == 1:
            if mapped in qrels:
                qrels[mapped][doc_id] = 1
            else:
                unknown += 1
    notes = [f"{unknown} supporting chunks map to no query in {Path(dataset).name}"] if unknown else []
    return EvaluationData(queries, corpus, qrels, notes)


def load_beir(folder: str | Path, split: str = "test") -> EvaluationData:
    """BEIR: ``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text), ``qrels/{split}.tsv``.

    Parameters
    ----------
    folder : str or Path
        The BEIR folder.
    split : str, default "test"
        Which qrels file to read.

    Returns
    -------
    EvaluationData
        The queries that have qrels, the whole corpus, and the qrels; qrels lines naming unknown documents or
        queries are left out and counted in ``notes``.

    Raises
    ------
    DataFormatError
        Naming the file and line at fault.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = Path(tmp)
    ...     (folder / "qrels").mkdir()
    ...     _ = (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "Bakı", "text": "paytaxt"}))
    ...     _ = (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "paytaxt"}))
    ...     qrels = ["query-id\\tcorpus-id\\tscore", "q1\\td1\\t1", "q1\\tdX\\t1"]
    ...     _ = (folder / "qrels" / "test.tsv").write_text("\\n".join(qrels) + "\\n")
    ...     data = load_beir(folder)
    >>> data.corpus, data.qrels, data.notes
    ({'d1': 'Bakı paytaxt'}, {'q1': {'d1': 1}}, ['1 qrels lines name documents missing from the corpus (left out)'])
    """
    folder = Path(folder)
    corpus = load_beir_corpus(folder / "corpus.jsonl")
    queries = load_beir_queries(folder / "queries.jsonl")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DataFormatError(f"{qrels_path} does not exist; pass the split that has a qrels file")
    qrels: dict[str, dict[str, int]] = {}
    missing_docs, missing_queries = 0, 0
    number = 0
    try:
        with open(qrels_path, encoding="utf-8", newline="") as handle:
            for number, fields in enumerate(csv.reader(handle, delimiter="\t"), start=1):
                if number == 1 and fields and _grade(fields[-1]) is None:
                    continue  # header
                if len(fields) != 3 or _grade(fields[2]) is None:
                    raise DataFormatError(f"{qrels_path} line {number} must be query-id<TAB>corpus-id<TAB>score")
                query, doc, score = fields[0], fields[1], _grade(fields[2])
                if doc not in corpus:
                    missing_docs += 1
                    continue
                if query not in queries:
                    missing_queries += 1
                    continue
                qrels.setdefault(query, {})[doc] = score
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{qrels_path} line {number + 1} is not UTF-8 text") from exc
    except csv.Error as exc:
        raise DataFormatError(f"{qrels_path} line {number + 1}: {first_line(exc)}") from exc
    notes = []
    if missing_docs:
        notes.append(f"{missing_docs} qrels lines name documents missing from the corpus (left out)")
    if missing_queries:
        notes.append(f"{missing_queries} qrels lines name queries missing from queries.jsonl (left out)")
    return EvaluationData({q: queries[q] for q in qrels}, corpus, qrels, notes)


def load_beir_corpus(path: str | Path) -> dict[str, str]:
    """A BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``): document id → title and text joined by a space.

    Raises
    ------
    DataFormatError
        Naming the file and line at fault (no ``_id``, a non-text field, a repeated id).

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "corpus.jsonl").write_text(json.dumps({"_id": 1, "title": "Bakı", "text": "paytaxt"}))
    ...     load_beir_corpus(Path(tmp) / "corpus.jsonl")
    {'1': 'Bakı paytaxt'}
    """
    path = Path(path)
    corpus: dict[str, str] = {}
    for number, row in _read_jsonl(path):
        if "_id" not in row:
            raise DataFormatError(f"{path} line {number} has no _id")
        where = f"{path} line {number}"
        parts = [_text(row.get(key) or "", key, where) for key in ("title", "text")]
        text = " ".join(part for part in parts if part).strip()
        _put(corpus, str(row["_id"]), text, f"{path.name} line {number}")
    return corpus


def load_beir_queries(path: str | Path) -> dict[str, str]:
    """A BEIR ``queries.jsonl`` (``_id``, ``text``): query id → text.

    Raises
    ------
    DataFormatError
        Naming the file and line at fault.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "paytaxt"}))
    ...     load_beir_queries(Path(tmp) / "queries.jsonl")
    {'q1': 'paytaxt'}
    """
    path = Path(path)
    queries: dict[str, str] = {}
    for number, row in _read_jsonl(path):
        if "_id" not in row or "text" not in row:
            raise DataFormatError(f"{path} line {number} needs _id and text")
        text = _text(row["text"], "text", f"{path} line {number}")
        _put(queries, str(row["_id"]), text, f"{path.name} line {number}")
    return queries


def _grade(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def check_triplet_row(row: object, where: str) -> None:
    """Refuse a triplet row that is not ``query``/``positive`` texts and a list of ``negatives`` texts.

    Parameters
    ----------
    row : object
        One row (a JSON object).
    where : str
        How the message names the row (``"rows.jsonl line 3"``, ``"triplet row 3"``).

    Raises
    ------
    DataFormatError
        One line naming the row and what is wrong, e.g. negatives written as one string (each character would
        count as a negative).

    Examples
    --------
    >>> check_triplet_row({"query": "sual", "positive": "cavab", "negatives": "başqa"}, "row 1")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.DataFormatError: row 1: negatives must be a list of texts, got one text ...
    """
    if not isinstance(row, dict):
        raise DataFormatError(f"{where} is {_kind(row)}, not an object with query, positive, negatives")
    for key in ("query", "positive", "negatives"):
        if key not in row:
            raise DataFormatError(f"{where} has no {key!r} column; rows need query, positive, negatives")
    for key in ("query", "positive"):
        _text(row[key], key, where)
    if not row["query"].strip() or not row["positive"].strip():
        raise DataFormatError(f"{where} has an empty query or positive")
    negatives = row["negatives"]
    if isinstance(negatives, str):
        raise DataFormatError(
            f"{where}: negatives must be a list of texts, got one text (write [{negatives[:30]!r}] for one negative)"
        )
    if not isinstance(negatives, (list, tuple)):
        raise DataFormatError(f"{where}: negatives must be a list of texts, got {_kind(negatives)}")
    if not negatives:
        raise DataFormatError(f"{where} has no negatives; the protocol ranks the positive among them")
    for j, negative in enumerate(negatives):
        if not isinstance(negative, str) or not negative.strip():
            raise DataFormatError(f"{where}: negative {j} must be a non-empty text, got {_kind(negative)}")
    source = row.get("source")
    if source is not None and not isinstance(source, (str, int)):
        raise DataFormatError(f"{where}: source must be a text, got {_kind(source)}")


def load_triplets(path: str | Path) -> list[dict]:
    """Triplet rows from JSONL: ``query``, ``positive``, ``negatives`` (a list of texts), optionally ``source``.

    Parameters
    ----------
    path : str or Path
        The JSONL file.

    Returns
    -------
    list[dict]
        The rows, each checked by :func:`check_triplet_row`.

    Raises
    ------
    DataFormatError
        Naming the file and line at fault.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     row = {"query": "paytaxt", "positive": "Bakı", "negatives": ["Şəki"], "source": "books"}
    ...     _ = (Path(tmp) / "rows.jsonl").write_text(json.dumps(row) + "\\n")
    ...     load_triplets(Path(tmp) / "rows.jsonl")[0]["negatives"]
    ['Şəki']
    """
    rows = _read_jsonl(Path(path))
    if not rows:
        raise DataFormatError(f"{path} holds no triplet rows")
    for number, row in rows:
        check_triplet_row(row, f"{path} line {number}")
    return [row for _, row in rows]
