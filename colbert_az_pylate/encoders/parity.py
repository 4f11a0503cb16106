"""The parity budget of an exported encoder, measured against pylate's torch encoder on the same folder.

Two kinds of figures:

- vectors: every token vector of the probe texts, as queries and as documents, compared component by component
  (float32 graphs must agree within :data:`VECTOR_TOLERANCE`, the conversion's own bound);
- retrieval: exact MaxSim search of questions over answers (AZ-MIRAGE with ``dataset=``, else the probe texts
  against themselves) — the top-10 agreement with the torch encoder's ranking and the MaxSim relative error. int8
  weights, bfloat16 compute and the int8 query graph are held to :data:`INT8_TOP10_AGREEMENT`; with the int8 query
  graph (``quantize="int8-query"``) documents run the float32 graph and are held to :data:`VECTOR_TOLERANCE` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from colbert_az_pylate.encoders.export import check_encoder
from colbert_az_pylate.encoders.runtime import BF16_UNAVAILABLE, PRECISIONS
from colbert_az_pylate.scores import maxsim_scores, pad_documents

VECTOR_TOLERANCE = 1e-5
INT8_TOP10_AGREEMENT = 0.95
TOP_K = 10


@dataclass
class EncoderParityReport:
    """What :func:`verify_encoder` measured; ``passed`` when the graph is within its budget.

    Parameters
    ----------
    encoder, quantize : str
        What was checked (``quantize`` is ``None`` for float32).
    texts : int
        Probe texts compared vector by vector (each as a query and as a document).
    max_vector_error : float
        Largest absolute difference of a token vector component.
    mean_cosine : float
        Mean cosine between matching token vectors.
    shape_mismatches : int
        Texts whose number of token vectors differs (always 0 unless truncation differs: a bug).
    queries, documents : int
        The retrieval check's size.
    top10_agreement : float
        Mean share of the torch encoder's exact top 10 that the exported encoder's top 10 contains.
    max_score_relative_error, mean_score_relative_error : float
        ``|s - s_torch| / |s_torch|`` over every (query, document) MaxSim score.
    vector_tolerance : float or None
        The bound on ``max_vector_error`` (float32 graphs).
    min_top10_agreement : float or None
        The bound on ``top10_agreement`` (int8 graphs).
    max_document_error : float
        Largest absolute difference of a document token vector component.
    document_tolerance : float or None
        The bound on ``max_document_error`` (``"int8-query"``: documents are float32).
    computed_in : str
        What the exported encoder computed in, as it says (``"bfloat16"``; for ``"bf16"`` on a CPU without
        bfloat16, float32: then bf16 itself was not checked, and the summary says so).

    Examples
    --------
    >>> report = EncoderParityReport("onnx", None, texts=3, max_vector_error=2e-7, vector_tolerance=1e-5)
    >>> report.passed, report.failure()
    (True, '')
    >>> EncoderParityReport("openvino", "int8", texts=3, top10_agreement=0.9, min_top10_agreement=0.95).failure()
    'top-10 agreement 0.900 < 0.95'
    """

    encoder: str
    quantize: str | None
    texts: int
    max_vector_error: float = 0.0
    mean_cosine: float = 1.0
    shape_mismatches: int = 0
    queries: int = 0
    documents: int = 0
    top10_agreement: float = 1.0
    max_score_relative_error: float = 0.0
    mean_score_relative_error: float = 0.0
    vector_tolerance: float | None = None
    min_top10_agreement: float | None = None
    max_document_error: float = 0.0
    document_tolerance: float | None = None
    computed_in: str = ""

    def failure(self) -> str:
        """The first figure out of budget, as one line; empty when none is."""
        if self.shape_mismatches:
            return f"{self.shape_mismatches} texts give a different number of token vectors than torch"
        if self.vector_tolerance is not None and self.max_vector_error > self.vector_tolerance:
            return f"token vectors differ by {self.max_vector_error:.2e} (> {self.vector_tolerance:g})"
        if self.document_tolerance is not None and self.max_document_error > self.document_tolerance:
            return f"document vectors differ by {self.max_document_error:.2e} (> {self.document_tolerance:g})"
        if self.min_top10_agreement is not None and self.top10_agreement < self.min_top10_agreement:
            return f"top-10 agreement {self.top10_agreement:.3f} < {self.min_top10_agreement:g}"
        return ""

    @property
    def passed(self) -> bool:
        """Whether every figure is within the budget."""
        return not self.failure()

    def summary(self) -> str:
        """A few human lines."""
        name = f"{self.encoder} {self.quantize or 'float32'}"
        verdict = "PASSED" if self.passed else f"FAILED: {self.failure()}"
        if self.quantize == "bf16" and self.computed_in == BF16_UNAVAILABLE:
            verdict += " — but bf16 was NOT checked: this CPU has no bfloat16, so it computed in float32"
        return "\n".join(
            [
                f"{name} against pylate's torch encoder: {verdict}",
                f"  vectors ({self.texts} texts as queries and documents): max |diff| {self.max_vector_error:.2e}, "
                f"mean cosine {self.mean_cosine:.6f}"
                + (f", documents max |diff| {self.max_document_error:.2e}" if self.document_tolerance else ""),
                f"  exact search ({self.queries} queries x {self.documents} documents): top-10 agreement "
                f"{self.top10_agreement:.3f}, MaxSim relative error mean {self.mean_score_relative_error:.2e}, "
                f"max {self.max_score_relative_error:.2e}",
            ]
        )

    def to_dict(self) -> dict:
        """The figures as a JSON-ready dict, ``passed`` included."""
        return {**asdict(self), "passed": self.passed}


def _vector_figures(reference: list[np.ndarray], exported: list[np.ndarray]) -> tuple[float, list[float], int]:
    worst, cosines, mismatches = 0.0, [], 0
    for a, b in zip(reference, exported, strict=True):
        if a.shape != b.shape:
            mismatches += 1
            continue
        worst = max(worst, float(np.abs(a - b).max()))
        cosines.extend((a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12))
    return worst, cosines, mismatches


def exact_scores(queries: list[np.ndarray], documents: list[np.ndarray], chunk: int = 16) -> np.ndarray:
    """Exact MaxSim of every query against every document, ``(queries, documents)``.

    Examples
    --------
    >>> q = [np.array([[1.0, 0.0]], np.float32)]
    >>> d = [np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0], [0.6, 0.8]], np.float32)]
    >>> [round(float(s), 2) for s in exact_scores(q, d)[0]]
    [1.0, 0.6]
    """
    padded, mask = pad_documents([torch.from_numpy(np.asarray(d, np.float32)) for d in documents])
    rows = []
    for start in range(0, len(queries), chunk):
        block, _ = pad_documents([torch.from_numpy(np.asarray(q, np.float32)) for q in queries[start : start + chunk]])
        rows.append(maxsim_scores(block, padded, mask).numpy())
    return np.concatenate(rows)


def top_k_agreement(reference: np.ndarray, other: np.ndarray, k: int = TOP_K) -> float:
    """Mean share of each row's top ``k`` under ``reference`` that is also in its top ``k`` under ``other``.

    Examples
    --------
    >>> top_k_agreement(np.array([[3.0, 2.0, 1.0]]), np.array([[1.0, 2.0, 3.0]]), k=2)
    0.5
    """
    k = min(k, reference.shape[1])
    ours = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    theirs = np.argsort(-other, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs, strict=True)]))


def retrieval_texts(dataset: str | Path | None, limit: int) -> tuple[list[str], list[str]]:
    """Questions and answers of the retrieval check: AZ-MIRAGE pairs, or the packaged probes against themselves."""
    from colbert_az_pylate.conversion.probes import load_az_mirage_pairs, packaged_probe_texts

    if dataset is not None:
        pairs = load_az_mirage_pairs(dataset, limit)
        return [q for q, _ in pairs], [a for _, a in pairs]
    texts = packaged_probe_texts()
    return texts, texts


def verify_encoder(
    model: str | Path,
    encoder: str = "onnx",
    quantize: str | None = None,
    *,
    probes: Sequence[str] | None = None,
    dataset: str | Path | None = None,
    limit: int = 500,
    min_top10_agreement: float = INT8_TOP10_AGREEMENT,
) -> EncoderParityReport:
    """Measure an exported encoder against pylate's torch encoder on the same converted folder.

    Parameters
    ----------
    model : str or Path
        A converted folder (exported into once when it has no graph for ``encoder``/``quantize``).
    encoder : str, default "onnx"
        ``"onnx"`` or ``"openvino"``.
    quantize : str, optional
        ``"int8"``, ``"bf16"`` or ``"int8-query"``: held to ``min_top10_agreement`` (``"int8-query"``'s documents
        to :data:`VECTOR_TOLERANCE` too); float32 to :data:`VECTOR_TOLERANCE`.
    probes : Sequence[str], optional
        Texts compared vector by vector (default: the probe texts shipped with the package).
    dataset : str or Path, optional
        An AZ-MIRAGE ``dataset.json``: its questions search its answers in the retrieval check (``limit`` pairs).
    limit : int, default 500
        Question/answer pairs taken from ``dataset``.
    min_top10_agreement : float, default 0.95
        The budget of int8 and bf16.

    Returns
    -------
    EncoderParityReport
        The figures and the verdict.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = convert(build_checkpoint(Path(tmp) / "raw"), Path(tmp) / "model", verify=False)
    ...     report = verify_encoder(Path(tmp) / "model", "onnx")
    >>> report.passed, report.max_vector_error < 1e-5
    (True, True)
    """
    from colbert_az_pylate.conversion.probes import probe_texts
    from colbert_az_pylate.loading import load

    encoder, quantize = check_encoder(encoder, quantize)
    reference = load(model, device="cpu")
    exported = load(model, device="cpu", encoder=encoder, quantize=quantize)
    texts = list(probes) if probes is not None else probe_texts()
    worst, cosines, mismatches, document_worst = 0.0, [], 0, 0.0
    for is_query in (True, False):
        a = reference.encode(texts, is_query=is_query, show_progress_bar=False)
        b = exported.encode(texts, is_query=is_query, show_progress_bar=False)
        w, c, m = _vector_figures(a, b)
        worst, mismatches = max(worst, w), mismatches + m
        document_worst = document_worst if is_query else w
        cosines.extend(c)
    questions, answers = retrieval_texts(dataset, limit)
    scores = []
    for which in (reference, exported):
        q = which.encode(questions, is_query=True, show_progress_bar=False)
        d = which.encode(answers, is_query=False, show_progress_bar=False)
        scores.append(exact_scores(q, d))
    relative = np.abs(scores[1] - scores[0]) / np.maximum(np.abs(scores[0]), 1e-6)
    return EncoderParityReport(
        encoder,
        quantize,
        texts=len(texts),
        max_vector_error=worst,
        mean_cosine=float(np.mean(cosines)) if cosines else 1.0,
        shape_mismatches=mismatches,
        queries=len(questions),
        documents=len(answers),
        top10_agreement=top_k_agreement(scores[0], scores[1]),
        max_score_relative_error=float(relative.max()),
        mean_score_relative_error=float(relative.mean()),
        vector_tolerance=None if quantize else VECTOR_TOLERANCE,
        min_top10_agreement=min_top10_agreement if quantize else None,
        max_document_error=document_worst,
        document_tolerance=VECTOR_TOLERANCE if quantize == "int8-query" else None,
        computed_in=getattr(exported[0].auto_model, "precision", PRECISIONS[quantize]),
    )
