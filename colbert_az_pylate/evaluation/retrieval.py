"""Exact (brute-force MaxSim) full-corpus retrieval: the quality yardstick for evaluation and indexes."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, first_line
from colbert_az_pylate.evaluation.metrics import check_run, ranked_documents
from colbert_az_pylate.scores import maxsim_scores, pad_documents


def exact_run(
    model,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    k: int = 10,
    batch_size: int = 32,
    chunk_size: int = 512,
    show_progress_bar: bool = True,
) -> dict[str, dict[str, float]]:
    """Top-``k`` documents of ``corpus`` for every query by exact MaxSim with ``model`` (a pylate ColBERT).

    Parameters
    ----------
    model
        A ``pylate.models.ColBERT`` (anything with its ``encode``).
    queries : Mapping[str, str]
        Query id → text.
    corpus : Mapping[str, str]
        Document id → text.
    k : int, default 10
        Documents kept per query.
    batch_size : int, default 32
        Encoding batch size.
    chunk_size : int, default 512
        Documents scored at once.
    show_progress_bar : bool, default True
        Show progress bars on stderr.

    Returns
    -------
    dict[str, dict[str, float]]
        Query id → {document id: MaxSim score}, best first.

    Examples
    --------
    >>> import numpy as np
    >>> class OneHotWords:  # a stand-in encoder: MaxSim counts the query words a document holds
    ...     words = ["bakı", "paytaxt", "şəki"]
    ...     def encode(self, texts, is_query, **kwargs):
    ...         eye = np.eye(len(self.words), dtype=np.float32)
    ...         return [np.stack([eye[self.words.index(w)] for w in text.split()]) for text in texts]
    >>> exact_run(OneHotWords(), {"q1": "bakı paytaxt"}, {"d1": "şəki", "d2": "bakı"}, show_progress_bar=False)
    {'q1': {'d2': 1.0, 'd1': 0.0}}
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
    if not corpus:
        raise DataFormatError("the corpus is empty; nothing to retrieve from")
    doc_ids = list(corpus)
    doc_vectors = [
        torch.as_tensor(v)
        for v in model.encode(
            [corpus[d] for d in doc_ids], is_query=False, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
    ]
    query_ids = list(queries)
    query_vectors = torch.stack(
        [
            torch.as_tensor(v)
            for v in model.encode(
                [queries[q] for q in query_ids], is_query=True, batch_size=batch_size, show_progress_bar=False
            )
        ]
    )
    scores = torch.empty(len(query_ids), len(doc_ids))
    for start in tqdm(range(0, len(doc_ids), chunk_size), desc="Scoring", disable=not show_progress_bar):
        scores[:, start : start + chunk_size] = maxsim_scores(
            query_vectors, *pad_documents(doc_vectors[start : start + chunk_size])
        )
    top = scores.topk(min(k, len(doc_ids)), dim=1)
    return {
        query: {doc_ids[j]: float(s) for s, j in zip(values.tolist(), indices.tolist(), strict=True)}
        for query, values, indices in zip(query_ids, top.values, top.indices, strict=True)
    }


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str) -> None:
    """Save ``run`` in TREC format (``qid Q0 docid rank score tag``), ranked by score.

    Parameters
    ----------
    run : Mapping[str, Mapping[str, float]]
        Query id → {document id: score}.
    path : str or Path
        The file to write (replaced if it exists).
    tag : str
        The run name written in the last column.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_trec_run({"q1": {"d1": 0.5, "d2": 0.9}}, Path(tmp) / "run.trec", "colbert-az")
    ...     print((Path(tmp) / "run.trec").read_text(), end="")
    q1 Q0 d2 1 0.900000 colbert-az
    q1 Q0 d1 2 0.500000 colbert-az
    """
    check_run(run)
    tag = re.sub(r"\s+", "_", tag) or "run"
    try:
        with open(path, "w", encoding="utf-8") as handle:
            for query, scores in run.items():
                for rank, doc in enumerate(ranked_documents(scores, len(scores)), start=1):
                    handle.write(f"{query} Q0 {doc} {rank} {scores[doc]:.6f} {tag}\n")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write the run file {path}: {exc.strerror or first_line(exc)}") from exc


def run_tags(models: Sequence[str]) -> list[str]:
    """A distinct, file-name-safe tag per model, from the end of its path or hub id.

    The last path component when it is unique; otherwise as many trailing components as make it unique
    (``r1/model`` and ``r2/model`` give ``r1-model`` and ``r2-model``), and a number as a last resort.

    Parameters
    ----------
    models : Sequence[str]
        Model folders or hub ids, as given.

    Returns
    -------
    list[str]
        One tag per model, in order, no two alike.

    Examples
    --------
    >>> run_tags(["r1/model", "r2/model", "LocalDoc/colbert-az", "./other"])
    ['r1-model', 'r2-model', 'colbert-az', 'other']
    >>> run_tags(["a/m", "a/m/"])
    ['a-m', 'a-m-2']
    """
    parts = [
        [re.sub(r"[^\w.-]+", "_", part) for part in Path(str(name)).parts if part not in ("/", "\\", ".", "..", "~")]
        or ["run"]
        for name in models
    ]
    depth = [1] * len(parts)
    while True:
        tags = ["-".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        counts = Counter(tags)
        grow = [i for i, tag in enumerate(tags) if counts[tag] > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    unique: list[str] = []
    for tag in tags:
        candidate, number = tag, 1
        while candidate in unique or (candidate != tag and candidate in tags):
            number += 1
            candidate = f"{tag}-{number}"
        unique.append(candidate)
    return unique
