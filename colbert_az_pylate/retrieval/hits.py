"""What a search returns (:class:`Hit`), and :func:`rerank`: MaxSim over given texts, no index needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from colbert_az_pylate.errors import InvalidArgumentError, check_count
from colbert_az_pylate.loading import resolve_model
from colbert_az_pylate.retrieval.corpus import check_documents
from colbert_az_pylate.scores import rerank_scores

__all__ = ["RERANK_BATCH_SIZE", "Hit", "rerank"]

RERANK_BATCH_SIZE = 8
"""Texts per forward pass when :func:`rerank` runs on a CPU: the fastest of the batch sizes measured on 100
candidates of mixed length (``benchmarks/rerank_speed.py``, ``benchmarks/results/rerank-speed.json``
"batch_sizes"; a test keeps the two equal). A small batch pads short texts less; on an accelerator the batch is 32."""


@dataclass
class Hit:
    """One ranked result.

    Parameters
    ----------
    id
        The document's id.
    score
        Its MaxSim score for the query (higher is better).
    text
        The document's text, as indexed.
    metadata
        The metadata stored with it.
    passage
        The number of the passage that scored (0 for a document indexed whole); ``None`` when unknown.
    span
        ``(start, end)``: where ``text`` lies in the document, in characters (``document[start:end] == text``);
        for a long document split into passages, the best passage's.

    Examples
    --------
    >>> Hit("baku", 12.5, "Bakı paytaxtdır.", {"lang": "az"}, passage=0, span=(0, 16)).to_dict()
    {'id': 'baku', 'score': 12.5, 'text': 'Bakı paytaxtdır.', 'metadata': {'lang': 'az'}, 'passage': 0, 'span': [0, 16]}
    """

    id: str
    score: float
    text: str | None = None
    metadata: dict = field(default_factory=dict)
    passage: int | None = None
    span: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        """The hit as a JSON-ready dict."""
        return {
            "id": self.id,
            "score": self.score,
            "text": self.text,
            "metadata": self.metadata,
            "passage": self.passage,
            "span": list(self.span) if self.span is not None else None,
        }


def rerank(model, query: str, documents: Sequence[str], batch_size: int | None = None) -> list[Hit]:
    """Rank ``documents`` for ``query`` by exact MaxSim, no index needed.

    Parameters
    ----------
    model
        A pylate ColBERT, or anything :func:`colbert_az_pylate.load` accepts (a converted folder, a raw colbert-az
        folder, a hub id).
    query
        The query text.
    documents
        The texts to rank.
    batch_size
        Encoding batch size; by default :data:`RERANK_BATCH_SIZE` on a CPU and 32 on an accelerator.

    Returns
    -------
    list[Hit]
        Every document, best first; a hit's id is the document's position in ``documents``.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
    >>> [hit.id for hit in rerank(f"{folder}/model", "Şəki xan sarayı", ["Bakı paytaxtdır.", "Şəki xan sarayı"])]
    ['1', '0']
    >>> import shutil; shutil.rmtree(folder)
    """
    documents = check_documents(documents)
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgumentError("the query must be a non-empty text")
    model, _ = resolve_model(model)
    batch_size = rerank_batch_size(model) if batch_size is None else check_count(batch_size, "batch_size")
    query_vectors = model.encode([query], is_query=True, batch_size=batch_size, show_progress_bar=False)[0]
    vectors = model.encode(documents, is_query=False, batch_size=batch_size, show_progress_bar=len(documents) > 256)
    order, scores = rerank_scores(query_vectors, list(vectors))
    return [Hit(str(i), float(scores[i]), documents[i]) for i in order]


def rerank_batch_size(model) -> int:
    """:data:`RERANK_BATCH_SIZE` when ``model`` runs on a CPU (or says nothing of its device), else 32."""
    device = getattr(model, "device", None)
    return RERANK_BATCH_SIZE if getattr(device, "type", "cpu") == "cpu" else 32
