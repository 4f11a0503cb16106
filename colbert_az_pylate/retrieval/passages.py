"""Long documents as passages: token windows cut with the model's own tokenizer, mapped back to their document.

A document longer than the model's document length (256 tokens for colbert-az, ``[D]`` marker and special tokens
included) would be truncated when encoded, so text past that point could never be found. :func:`split_document`
cuts it into windows that each fit exactly (every window is re-tokenized the way pylate encodes it and shrunk
until it fits), ending at a sentence boundary when one falls in the second half of the window, and overlapping
the previous window by ``overlap`` tokens (snapped forward to a sentence start inside the overlap when there is
one). A document that fits is one passage, stored exactly as before passages existed.

In an index, passage ``n`` of document ``id`` is stored under :func:`passage_id` (``id`` + ``"\\x1f"`` + ``n``),
with a payload naming its document, number, count and character span; the searcher maps hits back to documents
and deletes or replaces every passage of a document together.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.tokenization import document_token_count

__all__ = [
    "DEFAULT_OVERLAP",
    "PASSAGE_SEPARATOR",
    "Passage",
    "PassageReport",
    "index_entries",
    "passage_id",
    "split_document",
]

PASSAGE_SEPARATOR = "\x1f"
DEFAULT_OVERLAP = 32
_WHITESPACE = re.compile(r"\s")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?…;:])\s+|\n\s*)(?=\S)")


@dataclass(frozen=True)
class Passage:
    """One window of a document.

    Parameters
    ----------
    number
        Its position among the document's passages (0, 1, …).
    start
        Character offset of its first character in the document.
    end
        Character offset just past its last character: ``document[start:end] == text``.
    text
        Its text.

    Examples
    --------
    >>> Passage(0, 4, 8, "Bakı").span
    (4, 8)
    """

    number: int
    start: int
    end: int
    text: str

    @property
    def span(self) -> tuple[int, int]:
        """``(start, end)``, the character span in the document."""
        return (self.start, self.end)


@dataclass
class PassageReport:
    """What splitting did to a corpus: how many documents were split, into how many passages.

    Parameters
    ----------
    documents
        Documents indexed.
    split_documents
        Documents longer than the model's document length, split into several passages.
    passages
        Passages those split documents became.
    entries
        Index entries written: one per unsplit document plus every passage.

    Examples
    --------
    >>> report = PassageReport(documents=3, split_documents=1, passages=5, entries=7)
    >>> report.summary()
    '1 of 3 documents split into 5 passages (7 index entries)'
    >>> report.to_dict()["passages"]
    5
    """

    documents: int = 0
    split_documents: int = 0
    passages: int = 0
    entries: int = 0

    def add(self, count: int) -> None:
        """Count one document that became ``count`` passages."""
        self.documents += 1
        self.entries += count
        if count > 1:
            self.split_documents += 1
            self.passages += count

    def summary(self) -> str:
        """One line for the command's summary."""
        return (
            f"{self.split_documents} of {self.documents} documents split into {self.passages} passages "
            f"({self.entries} index entries)"
        )

    def to_dict(self) -> dict:
        """The counts as a JSON-ready dict."""
        return {
            "documents": self.documents,
            "split_documents": self.split_documents,
            "passages": self.passages,
            "entries": self.entries,
        }


def passage_id(document_id: str, number: int) -> str:
    """The index id of passage ``number`` of a split document.

    Parameters
    ----------
    document_id
        The document's id.
    number
        The passage number.

    Returns
    -------
    str
        ``document_id + "\\x1f" + str(number)`` (document ids may not contain ``"\\x1f"``).

    Examples
    --------
    >>> passage_id("law-7", 2)
    'law-7\\x1f2'
    >>> parse_passage_id(passage_id("law-7", 2)), parse_passage_id("law-7")
    (('law-7', 2), None)
    """
    return f"{document_id}{PASSAGE_SEPARATOR}{number}"


def parse_passage_id(entry_id: str) -> tuple[str, int] | None:
    """``(document id, passage number)`` for a passage's index id, ``None`` for a whole document's id."""
    document, separator, number = entry_id.rpartition(PASSAGE_SEPARATOR)
    if not separator or not document or not number.isdigit():
        return None
    return document, int(number)


def count_entries(entry_ids: Iterable[str]) -> tuple[int, int]:
    """``(passages, documents)`` among ``entry_ids``: a passage's id (see :func:`parse_passage_id`) counts as a
    document once, at its passage 0. The counting rule of the backends that hold their ids in memory.

    >>> count_entries(["a", passage_id("b", 0), passage_id("b", 1)])
    (2, 2)
    """
    passages = documents = 0
    for entry_id in entry_ids:
        parsed = parse_passage_id(entry_id)
        passages += parsed is not None
        documents += parsed is None or parsed[1] == 0
    return passages, documents


def check_overlap(overlap, budget: int) -> int:
    """``overlap`` if it is a whole number of tokens below half the window, else a one-line error."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < budget // 2:
        raise InvalidArgumentError(
            f"overlap must be a whole number of tokens from 0 to {budget // 2 - 1} (under half of the "
            f"{budget}-token window), got {overlap!r}"
        )
    return int(overlap)


def _content_budget(tokenizer, document_length: int) -> int:
    return document_length - 1 - tokenizer.num_special_tokens_to_add(pair=False)


def _token_offsets(tokenizer, text: str, block: int = 8192) -> np.ndarray:
    """Character spans of ``text``'s tokens (no special tokens), tokenized in blocks cut at whitespace.

    Only plans the windows (each is re-tokenized on its own before it is accepted), so cutting a long text
    into blocks, which one call would tokenize several times slower, changes nothing that is stored.
    """
    cuts, position = [0], block
    while position < len(text):
        found = _WHITESPACE.search(text, position)
        if found is None:
            break
        cuts.append(found.start())
        position = found.start() + block
    cuts.append(len(text))
    pieces = [text[a:b] for a, b in itertools.pairwise(cuts)]
    encodings = tokenizer(pieces, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    spans = [
        np.array(mapping, np.int64).reshape(-1, 2) + offset
        for mapping, offset in zip(encodings["offset_mapping"], cuts, strict=False)
    ]
    spans = np.concatenate(spans) if spans else np.zeros((0, 2), np.int64)
    return spans[spans[:, 1] > spans[:, 0]]


def split_document(text: str, tokenizer, document_length: int, overlap: int = DEFAULT_OVERLAP) -> list[Passage]:
    """Cut ``text`` into passages that the model encodes whole (nothing truncated).

    Parameters
    ----------
    text
        The document.
    tokenizer
        The model's tokenizer (``model.tokenizer`` of a converted colbert-az model, with its ``[D]`` marker).
    document_length
        The model's document length (``model.document_length``): the most ids a document is encoded with,
        ``[D]`` and special tokens included.
    overlap
        Tokens a window shares with the previous one (default 32; below half the window).

    Returns
    -------
    list[Passage]
        One passage (the whole text) when it fits, else windows in document order; every window fits
        ``document_length`` when tokenized on its own.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> from colbert_az_pylate.standin import minilm_folder
    >>> from colbert_az_pylate.tokenization import add_markers
    >>> tokenizer = AutoTokenizer.from_pretrained(minilm_folder()); _ = add_markers(tokenizer)
    >>> document = " ".join(f"Sentence number {i} is here." for i in range(40))
    >>> passages = split_document(document, tokenizer, document_length=64, overlap=8)
    >>> len(passages), passages[1].span, passages[1].text[:26]  # overlaps the first by one sentence
    (5, (243, 521), 'Sentence number 9 is here.')
    >>> all(document[p.start : p.end] == p.text for p in passages)
    True
    >>> split_document("Bakı paytaxtdır.", tokenizer, document_length=64, overlap=8)
    [Passage(number=0, start=0, end=16, text='Bakı paytaxtdır.')]
    """
    if not isinstance(document_length, int) or document_length < 1:
        raise InvalidArgumentError(f"document_length must be a whole number >= 1, got {document_length!r}")
    budget = _content_budget(tokenizer, document_length)
    if budget < 4:
        raise InvalidArgumentError(f"document_length {document_length} leaves no room for text in a window")
    overlap = check_overlap(overlap, budget)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    offsets = _token_offsets(tokenizer, stripped)
    if len(offsets) <= budget and document_token_count(tokenizer, stripped) <= document_length:
        return [Passage(0, 0, len(text), text)]
    starts, ends = offsets[:, 0] + lead, offsets[:, 1] + lead
    sentence_starts = np.array([m.end() + lead for m in _SENTENCE_END.finditer(stripped)], np.int64)
    opens_sentence = np.isin(starts, sentence_starts)
    boundaries = np.flatnonzero(opens_sentence).tolist()  # token indices that start a sentence
    total, passages, first = len(starts), [], 0
    while first < total:
        last = min(first + budget, total)  # exclusive
        if last < total:
            at = bisect.bisect_right(boundaries, last) - 1
            if at >= 0 and boundaries[at] > first + budget // 2:
                last = boundaries[at]
        while True:
            start, end = int(starts[first]), int(ends[last - 1])
            piece = text[start:end]
            count = document_token_count(tokenizer, piece)
            if count <= document_length:
                break
            if last - first <= 1:
                raise InvalidArgumentError(
                    f"a single character at offset {start} needs {count} tokens, more than the model's document "
                    f"length {document_length}; remove it from the document"
                )
            last = max(first + 1, last - max(1, count - document_length))
        # The window's own text, without the whitespace at its edges.
        trimmed_start = start + len(piece) - len(piece.lstrip())
        trimmed_end = start + len(piece.rstrip())
        passages.append(Passage(len(passages), trimmed_start, trimmed_end, text[trimmed_start:trimmed_end]))
        if last >= total:
            break
        following = max(last - overlap, first + 1)
        at = bisect.bisect_left(boundaries, following)
        if overlap and at < len(boundaries) and boundaries[at] <= last:
            following = boundaries[at]
        first = following
    return passages


def index_entries(
    documents, ids, metadata, tokenizer, document_length: int, passages: bool = True, overlap: int = DEFAULT_OVERLAP
) -> tuple[list[list[tuple[str, str, dict]]], PassageReport]:
    """Per document, the entries an index stores for it: the document itself, or its passages.

    The one place where a corpus becomes index entries: ``Searcher.index`` and ``colbert-az encode`` both call it,
    so an index built from encoded shards holds exactly what indexing the corpus would.

    Parameters
    ----------
    documents
        The texts (checked by the caller).
    ids
        One id per text.
    metadata
        One dict per text.
    tokenizer
        The model's tokenizer (``model.tokenizer``).
    document_length
        The model's document length (``model.document_length``).
    passages
        Split documents longer than ``document_length`` (default); ``False``: one entry per document.
    overlap
        Tokens a passage shares with the previous one (default 32).

    Returns
    -------
    tuple[list[list[tuple[str, str, dict]]], PassageReport]
        Per document, its entries ``(entry id, text, payload)``; and the counts of what was split.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> from colbert_az_pylate.standin import minilm_folder
    >>> from colbert_az_pylate.tokenization import add_markers
    >>> tokenizer = AutoTokenizer.from_pretrained(minilm_folder()); _ = add_markers(tokenizer)
    >>> long = " ".join(f"Sentence number {i} is here." for i in range(40))
    >>> entries, report = index_entries(["Bakı", long], ["a", "b"], [{}, {}], tokenizer, 64, overlap=8)
    >>> entries[0], [entry_id for entry_id, _, _ in entries[1]][:2], report.entries
    ([('a', 'Bakı', {'text': 'Bakı', 'metadata': {}})], ['b\\x1f0', 'b\\x1f1'], 6)
    """
    report, entries = PassageReport(), []
    for text, doc_id, meta in zip(documents, ids, metadata, strict=True):
        pieces = split_document(text, tokenizer, document_length, overlap) if passages else []
        if len(pieces) <= 1:
            entries.append([(doc_id, text, {"text": text, "metadata": meta})])
        else:
            entries.append(
                [
                    (
                        passage_id(doc_id, piece.number),
                        piece.text,
                        {
                            "text": piece.text,
                            "metadata": meta,
                            "document": doc_id,
                            "passage": piece.number,
                            "passages": len(pieces),
                            "span": list(piece.span),
                        },
                    )
                    for piece in pieces
                ]
            )
        report.add(len(entries[-1]))
    return entries, report
