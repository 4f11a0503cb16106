"""Rerank another system's candidates: a TREC run or JSONL ``{query_id, doc_id}`` rows in, a reranked TREC run out.

The queries and documents are read from the files ``colbert-az evaluate`` reads (BEIR ``queries.jsonl`` and
``corpus.jsonl``, or AZ-MIRAGE ``dataset.json`` and ``doc_pool.json``). Every distinct candidate document is encoded
once, however many queries it is a candidate of; each query is then scored against its own candidates by MaxSim
(:func:`colbert_az_pylate.scores.packed_maxsim_scores`), the order :func:`colbert_az_pylate.retrieval.rerank` gives.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, check_count, first_line
from colbert_az_pylate.evaluation.data import _read_jsonl, load_az_mirage, load_beir_corpus, load_beir_queries

__all__ = [
    "RerankedRun",
    "check_candidates",
    "read_candidates",
    "read_queries_and_corpus",
    "rerank_candidates",
    "summary",
    "write_run",
]


def read_candidates(path: str | Path) -> dict[str, list[str]]:
    """Candidates per query from a TREC run (``qid Q0 docid rank score tag``) or JSONL ``{query_id, doc_id}`` rows.

    A ``.jsonl`` file, or one whose first non-blank character is ``{``, is JSONL (candidates in the file's order);
    anything else is a TREC run (candidates by its rank column, the file's order among equal ranks).

    Parameters
    ----------
    path : str or Path
        The candidates file.

    Returns
    -------
    dict[str, list[str]]
        Query id → its candidate document ids, best first for the first stage, queries in the file's order.

    Raises
    ------
    DataFormatError
        An empty file, a bad line (with its number) or a pair given twice.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "bm25.trec"
    ...     _ = path.write_text("q1 Q0 d2 2 7.5 bm25\\nq1 Q0 d1 1 9.0 bm25\\nq2 Q0 d1 1 3.0 bm25\\n")
    ...     read_candidates(path)
    {'q1': ['d1', 'd2'], 'q2': ['d1']}
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"candidates file {path} does not exist" + (" (a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"candidates file {path} is not UTF-8 text ({first_line(exc)})") from exc
    except OSError as exc:
        raise DataFormatError(f"cannot read candidates file {path}: {exc.strerror or first_line(exc)}") from exc
    if not text.strip():
        raise DataFormatError(f"candidates file {path} is empty; give a TREC run or JSONL {{query_id, doc_id}} rows")
    if path.suffix.lower() == ".jsonl" or text.lstrip().startswith("{"):
        pairs = _jsonl_pairs(path)
    else:
        pairs = _trec_pairs(path, text)
    candidates: dict[str, list[tuple[float, int, str]]] = {}
    seen: set[tuple[str, str]] = set()
    for number, (query, doc, rank) in pairs:
        if (query, doc) in seen:
            raise DataFormatError(f"{path} line {number} repeats query {query!r} document {doc!r}; give each once")
        seen.add((query, doc))
        candidates.setdefault(query, []).append((rank, number, doc))
    return {query: [doc for _, _, doc in sorted(ranked)] for query, ranked in candidates.items()}


def _trec_pairs(path: Path, text: str) -> list[tuple[int, tuple[str, str, float]]]:
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        rank = _number(fields[3]) if len(fields) == 6 else None
        if rank is None or _number(fields[4]) is None:
            raise DataFormatError(
                f"{path} line {number} is not a TREC run line 'qid Q0 docid rank score tag' "
                '(or write JSONL rows {"query_id": …, "doc_id": …})'
            )
        pairs.append((number, (fields[0], fields[2], rank)))
    return pairs


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _jsonl_pairs(path: Path) -> list[tuple[int, tuple[str, str, float]]]:
    try:
        rows = _read_jsonl(path)  # evaluation/data.py's reader: bad JSON and non-objects named by line
    except DataFormatError as exc:
        raise DataFormatError(f"candidates file {exc}") from exc
    pairs = []
    for number, row in rows:
        ids = []
        for key in ("query_id", "doc_id"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                raise DataFormatError(f"{path} line {number} needs {key} (a text or a whole number), got {value!r}")
            ids.append(str(value))
        pairs.append((number, (ids[0], ids[1], 0.0)))
    return pairs


def read_queries_and_corpus(queries: str | Path, corpus: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """The queries (id → text) and documents (id → text), read as ``colbert-az evaluate`` reads them.

    Parameters
    ----------
    queries : str or Path
        BEIR ``queries.jsonl`` or AZ-MIRAGE ``dataset.json``.
    corpus : str or Path
        BEIR ``corpus.jsonl`` or AZ-MIRAGE ``doc_pool.json`` (chunks named ``chunk{i}`` unless they carry an id).

    Returns
    -------
    tuple[dict[str, str], dict[str, str]]
        ``(queries, corpus)``.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "paytaxt"}))
    ...     _ = (Path(tmp) / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "Bakı"}))
    ...     read_queries_and_corpus(Path(tmp) / "queries.jsonl", Path(tmp) / "corpus.jsonl")
    ({'q1': 'paytaxt'}, {'d1': 'Bakı'})
    """
    kinds = {Path(queries).suffix.lower(), Path(corpus).suffix.lower()}
    if kinds == {".json"}:
        data = load_az_mirage(queries, corpus)
        texts = data.queries, data.corpus
    elif kinds == {".jsonl"}:
        texts = load_beir_queries(queries), load_beir_corpus(corpus)
    else:
        raise InvalidArgumentError(
            f"--queries {queries} and --corpus {corpus}: give BEIR queries.jsonl and corpus.jsonl, "
            "or AZ-MIRAGE dataset.json and doc_pool.json"
        )
    for table, path, what in ((texts[0], queries, "queries"), (texts[1], corpus, "documents")):
        if not table:
            raise DataFormatError(f"{path} holds no {what}")
    return texts


def check_candidates(candidates: dict[str, list[str]], queries: dict[str, str], corpus: dict[str, str]) -> None:
    """Refuse candidates naming a query or a document that is not in ``queries``/``corpus``, or empty texts.

    Raises
    ------
    DataFormatError
        One line: the first unknown id and how many there are.

    Examples
    --------
    >>> check_candidates({"q1": ["d9"]}, {"q1": "paytaxt"}, {"d1": "Bakı"})
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.DataFormatError: the candidates name 1 document id(s) missing from the corpus, first 'd9'
    """
    if not candidates:
        raise DataFormatError("there are no candidates to rerank")
    for what, names, known in (
        ("query", list(candidates), queries),
        ("document", list(dict.fromkeys(d for docs in candidates.values() for d in docs)), corpus),
    ):
        unknown = [name for name in names if name not in known]
        where = "the queries file" if what == "query" else "the corpus"
        if unknown:
            raise DataFormatError(
                f"the candidates name {len(unknown)} {what} id(s) missing from {where}, first {unknown[0]!r}"
            )
        empty = [name for name in names if not known[name].strip()]
        if empty:
            raise DataFormatError(f"{what} {empty[0]!r} has an empty text in {where}; there is nothing to score")


@dataclass
class RerankedRun:
    """The reranked candidates: query id → [(document id, MaxSim)], best first, and what it took.

    Parameters
    ----------
    ranking : dict[str, list[tuple[str, float]]]
        Per query, its kept candidates best first (ties: the first stage's order).
    candidates : int
        Candidates scored (after ``top_k``).
    documents_encoded : int
        Distinct documents encoded (each once).

    Examples
    --------
    >>> run = RerankedRun({"q1": [("d2", 9.5), ("d1", 7.25)]}, candidates=2, documents_encoded=2)
    >>> print(run.to_trec(), end="")
    q1 Q0 d2 1 9.500000 colbert-az
    q1 Q0 d1 2 7.250000 colbert-az
    """

    ranking: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    candidates: int = 0
    documents_encoded: int = 0

    def to_trec(self, tag: str = "colbert-az") -> str:
        """The run as TREC lines, ``qid Q0 docid rank score tag``."""
        tag = re.sub(r"\s+", "_", tag) or "run"
        return "".join(
            f"{query} Q0 {doc} {rank} {score:.6f} {tag}\n"
            for query, hits in self.ranking.items()
            for rank, (doc, score) in enumerate(hits, start=1)
        )


def rerank_candidates(
    model,
    candidates: dict[str, list[str]],
    queries: dict[str, str],
    corpus: dict[str, str],
    *,
    top_k: int | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = False,
) -> RerankedRun:
    """Rerank each query's candidates by MaxSim, encoding every distinct candidate document once.

    Parameters
    ----------
    model
        A pylate ColBERT, or anything :func:`colbert_az_pylate.load` accepts.
    candidates : dict[str, list[str]]
        Query id → candidate document ids, first stage's best first (:func:`read_candidates`).
    queries, corpus : dict[str, str]
        Id → text (:func:`read_queries_and_corpus`); every id named in ``candidates`` must be there.
    top_k : int, optional
        Candidates kept per query, the first stage's best (default: all).
    batch_size : int, default 32
        Encoding batch size.
    show_progress_bar : bool, default False
        tqdm bars on stderr while encoding.

    Returns
    -------
    RerankedRun
        The ranking; scores equal :func:`colbert_az_pylate.retrieval.rerank` on each query's candidates.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
    >>> corpus = {"d1": "Bakı paytaxtdır.", "d2": "Şəki xan sarayı"}
    >>> run = rerank_candidates(f"{folder}/model", {"q1": ["d1", "d2"]}, {"q1": "Şəki xan sarayı"}, corpus)
    >>> [doc for doc, _ in run.ranking["q1"]], run.documents_encoded
    (['d2', 'd1'], 2)
    >>> import shutil; shutil.rmtree(folder)
    """
    from colbert_az_pylate.evaluation.retrieval import _encode
    from colbert_az_pylate.loading import resolve_model
    from colbert_az_pylate.scores import rerank_scores

    batch_size = check_count(batch_size, "batch_size")
    if top_k is not None:
        top_k = check_count(top_k, "top_k")
    kept = {query: docs[:top_k] if top_k else list(docs) for query, docs in candidates.items()}
    check_candidates(kept, queries, corpus)
    documents = list(dict.fromkeys(doc for docs in kept.values() for doc in docs))
    model, _ = resolve_model(model)
    vectors = _encode_with_bar(_encode, model, [corpus[d] for d in documents], False, batch_size, show_progress_bar)
    query_vectors = _encode_with_bar(_encode, model, [queries[q] for q in kept], True, batch_size, show_progress_bar)
    position = {doc: i for i, doc in enumerate(documents)}
    result = RerankedRun(documents_encoded=len(documents))
    for (query, docs), query_matrix in zip(kept.items(), query_vectors, strict=True):
        chosen = [vectors[position[doc]] for doc in docs]
        order, scores = rerank_scores(query_matrix, chosen)  # as retrieval.rerank: ties keep the first stage's order
        result.ranking[query] = [(docs[i], float(scores[i])) for i in order]
        result.candidates += len(docs)
    return result


def _encode_with_bar(encode, model, texts, is_query, batch_size, show):
    if not show:
        return encode(model, texts, is_query, batch_size)
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), desc="queries" if is_query else "documents", unit="text", leave=False) as bar:
        return encode(model, texts, is_query, batch_size, bar)


def write_run(run: RerankedRun, path: str | Path, tag: str = "colbert-az") -> None:
    """Write ``run`` as a TREC run at ``path`` atomically (the old file or the new one, never half of it)."""
    from colbert_az_pylate.files import atomic_write

    path = Path(path)
    if path.is_dir():
        raise InvalidArgumentError(f"--output {path} is a folder; name the run file to write")
    atomic_write(path, run.to_trec(tag))


def summary(run: RerankedRun, output: str | Path) -> dict:
    """What the CLI prints with ``--json``."""
    return {
        "queries": len(run.ranking),
        "candidates": run.candidates,
        "documents_encoded": run.documents_encoded,
        "output": str(output),
    }
