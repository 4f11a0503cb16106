"""Readers for the evaluation formats: AZ-MIRAGE (dataset.json + doc_pool.json), BEIR, and triplet JSONL.

Each returns an :class:`EvaluationData` (queries, corpus, qrels) and refuses malformed input with the file and
line (or entry) at fault. Nothing is dropped silently: what is left out is counted in ``notes``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvaluationData:
    """Queries (id → text), corpus (id → text) and qrels (query id → {document id: relevance})."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not Path(path).is_file():
        raise ValueError(f"{path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number} is not a JSON object")
            rows.append((number, row))
    return rows


def _put(table: dict[str, str], key: str, value: str, where: str) -> None:
    if key in table:
        raise ValueError(f"duplicate id {key!r} at {where}; ids must be unique")
    table[key] = value


def _support(entry: dict) -> int:
    support = entry.get("support", 0)
    return int(support[0] if isinstance(support, list) and support else support or 0)


def load_az_mirage(dataset: str | Path, pool: str | Path) -> EvaluationData:
    """AZ-MIRAGE: ``dataset.json`` (query_id, query, …) and ``doc_pool.json`` (doc_chunk, mapped_id, support).

    A chunk is relevant to the query whose id equals its ``mapped_id`` when ``support`` is 1. Chunks are
    identified by their position in the pool (``"chunk{i}"``) unless they carry a ``doc_id``/``chunk_id``.
    """
    entries, chunks = _read_json(Path(dataset)), _read_json(Path(pool))
    if not isinstance(entries, list) or not isinstance(chunks, list):
        raise ValueError("dataset.json and doc_pool.json must each hold a JSON list")
    queries: dict[str, str] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "query_id" not in entry or "query" not in entry:
            raise ValueError(f"{dataset} entry {i} lacks query_id or query")
        _put(queries, str(entry["query_id"]), entry["query"], f"{dataset} entry {i}")
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {query: {} for query in queries}
    unknown = 0
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or "doc_chunk" not in chunk:
            raise ValueError(f"{pool} entry {i} lacks doc_chunk")
        doc_id = str(chunk.get("doc_id", chunk.get("chunk_id", f"chunk{i}")))
        _put(corpus, doc_id, chunk["doc_chunk"], f"{pool} entry {i}")
        mapped = str(chunk.get("mapped_id", ""))
        if _support(chunk) == 1:
            if mapped in qrels:
                qrels[mapped][doc_id] = 1
            else:
                unknown += 1
    notes = [f"{unknown} supporting chunks map to no query in {Path(dataset).name}"] if unknown else []
    return EvaluationData(queries, corpus, qrels, notes)


def load_beir(folder: str | Path, split: str = "test") -> EvaluationData:
    """BEIR: ``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text), ``qrels/{split}.tsv``."""
    folder = Path(folder)
    corpus: dict[str, str] = {}
    for number, row in _read_jsonl(folder / "corpus.jsonl"):
        if "_id" not in row:
            raise ValueError(f"{folder / 'corpus.jsonl'} line {number} has no _id")
        text = " ".join(part for part in (row.get("title", ""), row.get("text", "")) if part).strip()
        _put(corpus, str(row["_id"]), text, f"corpus.jsonl line {number}")
    queries: dict[str, str] = {}
    for number, row in _read_jsonl(folder / "queries.jsonl"):
        if "_id" not in row or "text" not in row:
            raise ValueError(f"{folder / 'queries.jsonl'} line {number} needs _id and text")
        _put(queries, str(row["_id"]), row["text"], f"queries.jsonl line {number}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise ValueError(f"{qrels_path} does not exist; pass the split that has a qrels file")
    qrels: dict[str, dict[str, int]] = {}
    missing_docs, missing_queries = 0, 0
    with open(qrels_path, encoding="utf-8", newline="") as handle:
        for number, fields in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if number == 1 and fields and not fields[-1].lstrip("-").isdigit():
                continue  # header
            if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
                raise ValueError(f"{qrels_path} line {number} must be query-id<TAB>corpus-id<TAB>score")
            query, doc, score = fields[0], fields[1], int(fields[2])
            if doc not in corpus:
                missing_docs += 1
                continue
            if query not in queries:
                missing_queries += 1
                continue
            qrels.setdefault(query, {})[doc] = score
    notes = []
    if missing_docs:
        notes.append(f"{missing_docs} qrels lines name documents missing from the corpus (left out)")
    if missing_queries:
        notes.append(f"{missing_queries} qrels lines name queries missing from queries.jsonl (left out)")
    return EvaluationData({q: queries[q] for q in qrels}, corpus, qrels, notes)


def load_triplets(path: str | Path) -> list[dict]:
    """Triplet rows from JSONL: ``query``, ``positive``, ``negatives`` (list) and optionally ``source``."""
    return [row for _, row in _read_jsonl(Path(path))]
