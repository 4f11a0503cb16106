"""Verification: plain pylate on a converted folder against the model card's reference code.

Over the probe texts (edge cases plus real Azerbaijani questions), pylate is loaded in a separate process
(``pylate_worker.py``, which never imports this package) and compared with :class:`ReferenceColBERT`:
identical token ids, per-token vectors within ``vector_tolerance`` (max absolute difference), MaxSim scores
within ``score_tolerance`` relative (``|pylate - reference| / max(|reference|, 1)``). It also checks that the
model card's own tokenization on the converted folder gives the same ids as on the original folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

import colbert_az_pylate.conversion.pylate_worker as pylate_worker
from colbert_az_pylate.conversion.checkpoint import check_layout, is_converted, resolve_source
from colbert_az_pylate.conversion.probes import probe_texts
from colbert_az_pylate.conversion.staging import VERIFY_PREFIX, remove_stale_verify_folders
from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError, ParityError, SourceNotFoundError
from colbert_az_pylate.scores import maxsim_scores, pad_documents
from colbert_az_pylate.tokenization import (
    add_markers,
    first_token_mismatch,
    reference_document_inputs,
    reference_query_inputs,
)

VECTOR_TOLERANCE = 1e-5
SCORE_TOLERANCE = 1e-4


@dataclass
class ParityReport:
    """What verification measured; ``passed`` is true when every figure is within tolerance.

    Parameters
    ----------
    texts : int
        How many probe texts were checked (each as a query and as a document).
    token_mismatches : list[str]
        Texts whose token ids under pylate differ from the reference's, with the first differing position.
    card_code_mismatches : list[str]
        Texts the model card's code tokenizes differently on the converted folder than on the original.
    max_vector_error : float
        Largest absolute difference of a token vector component.
    worst_vector_text : str
        The text where it occurred.
    max_score_relative_error : float
        Largest MaxSim difference relative to ``max(|reference|, 1)``.
    vector_tolerance, score_tolerance : float
        The bounds the figures are held to.

    Examples
    --------
    >>> report = ParityReport(texts=3, max_vector_error=2e-7, max_score_relative_error=1e-7)
    >>> report.passed
    True
    >>> ParityReport(texts=3, max_vector_error=0.5, worst_vector_text="Bakı").failure()
    "token vectors differ by 5.00e-01 (> 1e-05) on 'Bakı'"
    """

    texts: int
    token_mismatches: list[str] = field(default_factory=list)
    card_code_mismatches: list[str] = field(default_factory=list)
    max_vector_error: float = 0.0
    worst_vector_text: str = ""
    max_score_relative_error: float = 0.0
    vector_tolerance: float = VECTOR_TOLERANCE
    score_tolerance: float = SCORE_TOLERANCE

    @property
    def passed(self) -> bool:
        return (
            not self.token_mismatches
            and not self.card_code_mismatches
            and self.max_vector_error <= self.vector_tolerance
            and self.max_score_relative_error <= self.score_tolerance
        )

    def failure(self) -> str:
        """A one-line account of the first failure (empty when passed)."""
        if self.token_mismatches:
            return f"token ids differ from the reference ({len(self.token_mismatches)}): {self.token_mismatches[0]}"
        if self.card_code_mismatches:
            return f"the model card's code tokenizes differently on the output: {self.card_code_mismatches[0]}"
        if self.max_vector_error > self.vector_tolerance:
            return (
                f"token vectors differ by {self.max_vector_error:.2e} (> {self.vector_tolerance:.0e}) "
                f"on {self.worst_vector_text[:60]!r}"
            )
        if self.max_score_relative_error > self.score_tolerance:
            return (
                f"MaxSim scores differ by {self.max_score_relative_error:.2e} relative (> {self.score_tolerance:.0e})"
            )
        return ""

    def summary(self) -> str:
        state = "PASSED" if self.passed else f"FAILED: {self.failure()}"
        return (
            f"parity {state} on {self.texts} probe texts: token ids "
            f"{'identical' if not self.token_mismatches else 'differ'}, max vector error "
            f"{self.max_vector_error:.2e}, max score error {self.max_score_relative_error:.2e} relative"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def run_pylate_worker(model: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Encode ``texts`` with plain pylate in a fresh Python process; returns the worker's arrays.

    The worker gets the absolute path of ``model`` (it runs in its own temporary folder), dies with this
    process, and its temporary folder carries this process's id so that a later run removes it if this
    process is killed.

    Parameters
    ----------
    model : Path
        A local folder pylate can load.
    texts : Sequence[str]
        The texts to encode, each as a query and as a document.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``q_ids_{i}``, ``q_vectors_{i}``, ``d_ids_{i}``, ``d_vectors_{i}`` per text, ``scores`` (queries ×
        documents, pylate's ``colbert_scores``) and ``package_imported``.

    Raises
    ------
    CheckpointError
        When plain pylate cannot load or encode the folder.
    """
    model = Path(os.path.abspath(Path(model).expanduser()))
    if not model.is_dir():
        raise SourceNotFoundError(f"{model} is not a folder; pass a converted model folder")
    remove_stale_verify_folders()
    with tempfile.TemporaryDirectory(prefix=f"{VERIFY_PREFIX}{os.getpid()}-") as tmp:
        probes_path, output_path = Path(tmp) / "probes.json", Path(tmp) / "pylate.npz"
        probes_path.write_text(json.dumps(list(texts), ensure_ascii=False), encoding="utf-8")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, pylate_worker.__file__, str(model), str(probes_path), str(output_path)]
        done = subprocess.run(
            [*command, str(os.getpid())], capture_output=True, text=True, env=env, cwd=tmp, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            raise CheckpointError(
                f"plain pylate cannot load or encode {model}: {lines[-1] if lines else f'exit {done.returncode}'}"
            )
        with np.load(output_path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}


def card_code_mismatches(original: Path, converted: Path, texts: Sequence[str]) -> list[str]:
    """Texts on which the model card's tokenization differs between the two folders.

    Parameters
    ----------
    original, converted : Path
        The source checkpoint and the converted folder.
    texts : Sequence[str]
        The texts to tokenize as queries and as documents, as the model card does.

    Returns
    -------
    list[str]
        One line per text and kind that differs (text, position, tokens); empty when they agree.
    """
    tokenizers = []
    for folder in (original, converted):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        add_markers(tokenizer)
        tokenizers.append(tokenizer)
    found = []
    for text in texts:
        for is_query, build in ((True, reference_query_inputs), (False, reference_document_inputs)):
            before, after = (build(tok, [text])["input_ids"][0].tolist() for tok in tokenizers)
            mismatch = first_token_mismatch(tokenizers[0], before, after, text, is_query)
            if mismatch:
                found.append(str(mismatch))
    return found


def verify(
    model: str | Path,
    reference: str | Path | None = None,
    *,
    probes: Sequence[str] | None = None,
    dataset: str | Path | None = None,
    vector_tolerance: float = VECTOR_TOLERANCE,
    score_tolerance: float = SCORE_TOLERANCE,
    raise_on_failure: bool = False,
) -> ParityReport:
    """Check that plain pylate on the converted folder ``model`` reproduces the model card's code.

    Parameters
    ----------
    model : str or Path
        A converted folder (relative paths are taken from the working directory), or the hub id of one.
    reference : str or Path, optional
        The colbert-az folder the model card's code runs on; ``model`` itself by default (it keeps the layout).
        When given, the card's tokenization on ``model`` must also equal the one on ``reference``.
    probes : Sequence[str], optional
        The texts to check, each as a query and as a document; :func:`probe_texts` by default.
    dataset : str or Path, optional
        An AZ-MIRAGE ``dataset.json`` whose texts are added to the default probes.
    vector_tolerance : float, default 1e-5
        Largest allowed absolute difference of a token vector component.
    score_tolerance : float, default 1e-4
        Largest allowed MaxSim difference relative to ``max(|reference|, 1)``.
    raise_on_failure : bool, default False
        Raise :class:`ParityError` instead of returning a failed report.

    Returns
    -------
    ParityReport
        The figures; ``report.passed`` says whether they are within the tolerances.

    Raises
    ------
    SourceNotFoundError, CheckpointError
        When ``model`` or ``reference`` is missing, not converted, or cannot be loaded (bad input, not a
        parity failure).

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert, verify
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     source = build_checkpoint(Path(tmp) / "colbert-az", "wordpiece")
    ...     _ = convert(source, Path(tmp) / "colbert-az-pylate", verify=False)
    ...     report = verify(Path(tmp) / "colbert-az-pylate", probes=["Bakı", "Azərbaycanın paytaxtı"])
    >>> report.passed, report.texts
    (True, 2)
    """
    model = resolve_source(model)
    reference_folder = resolve_source(reference) if reference is not None else model
    if not is_converted(model):
        raise CheckpointError(
            f"{model} is not a converted folder (no modules.json/config_sentence_transformers.json); "
            "convert it first (colbert-az convert)"
        )
    check_layout(model)
    if reference_folder != model:
        check_layout(reference_folder)
    texts = [text.strip() for text in (probes if probes is not None else probe_texts(dataset))]
    texts = [text for text in texts if text]
    if not texts:
        raise InvalidArgumentError("no probe texts to verify on; pass non-empty texts")

    from colbert_az_pylate.reference import ReferenceColBERT  # imports this package's checkpoint module

    pylate_out = run_pylate_worker(model, texts)
    if bool(pylate_out["package_imported"]):
        raise ParityError("the pylate worker imported colbert_az_pylate; the check would not be of plain pylate")
    yardstick = ReferenceColBERT.from_pretrained(reference_folder)
    report = ParityReport(texts=len(texts), vector_tolerance=vector_tolerance, score_tolerance=score_tolerance)
    if reference_folder.resolve() != model.resolve():
        report.card_code_mismatches = card_code_mismatches(reference_folder, model, texts)

    query_vectors, query_ids = yardstick.encode_queries(texts)
    documents = yardstick.encode_documents(texts)
    expected = {"q": list(zip(query_vectors, query_ids, strict=True)), "d": documents}
    for kind, is_query in (("q", True), ("d", False)):
        for i, text in enumerate(texts):
            ref_vectors, ref_ids = expected[kind][i]
            ids = pylate_out[f"{kind}_ids_{i}"]
            mismatch = first_token_mismatch(yardstick.tokenizer, ref_ids.tolist(), ids.tolist(), text, is_query)
            if mismatch:
                report.token_mismatches.append(str(mismatch))
                continue
            error = float((torch.from_numpy(pylate_out[f"{kind}_vectors_{i}"]) - ref_vectors).abs().max())
            if error > report.max_vector_error:
                report.max_vector_error, report.worst_vector_text = error, text
    if not report.token_mismatches:
        # what yardstick.score(texts, texts) computes, from the vectors already encoded
        reference_scores = maxsim_scores(query_vectors, *pad_documents([vectors for vectors, _ in documents]))
        pylate_scores = torch.from_numpy(pylate_out["scores"])
        relative = (pylate_scores - reference_scores).abs() / reference_scores.abs().clamp(min=1.0)
        report.max_score_relative_error = float(relative.max())
    if raise_on_failure and not report.passed:
        raise ParityError(report.failure())
    return report
