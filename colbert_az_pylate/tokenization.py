"""How colbert-az tokenizes queries and documents: the one place for these rules.

The model card's reference code tokenizes ``f"[Q] {text}"`` (queries) and ``f"[D] {text}"`` (documents),
pads queries to 32 tokens, replaces the padding by the mask token and attends to every position, and
truncates documents at 256 tokens. pylate instead tokenizes the bare, stripped text, truncated one token
short, and inserts the marker id right after the first token. Conversion, verification, training and search
all use the functions below, so both ways stay defined once.

>>> QUERY_MARKER, DOCUMENT_MARKER, QUERY_LENGTH, DOCUMENT_LENGTH
('[Q]', '[D]', 32, 256)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase

from colbert_az_pylate.errors import TokenizerError

QUERY_MARKER = "[Q]"
DOCUMENT_MARKER = "[D]"
QUERY_LENGTH = 32
DOCUMENT_LENGTH = 256


def add_markers(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Add ``[Q]``/``[D]`` exactly as the model card does and return their ids (a no-op when present)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [QUERY_MARKER, DOCUMENT_MARKER]})
    return marker_ids(tokenizer)


def marker_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The ids of ``[Q]`` and ``[D]``; raises if the tokenizer lacks either."""
    ids = tokenizer.convert_tokens_to_ids([QUERY_MARKER, DOCUMENT_MARKER])
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise TokenizerError(f"the tokenizer has no {QUERY_MARKER}/{DOCUMENT_MARKER} tokens; call add_markers first")
    return ids[0], ids[1]


def reference_query_inputs(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = QUERY_LENGTH
) -> dict[str, torch.Tensor]:
    """The model card's ``tokenize_query``: marker, padding to ``max_length`` by mask tokens, all attended."""
    enc = tokenizer(
        [f"{QUERY_MARKER} {text}" for text in texts],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    pad = enc["input_ids"] == tokenizer.pad_token_id
    enc["input_ids"][pad] = tokenizer.mask_token_id
    enc["attention_mask"] = torch.ones_like(enc["input_ids"])
    return dict(enc)


def reference_document_inputs(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = DOCUMENT_LENGTH
) -> dict[str, torch.Tensor]:
    """The model card's ``tokenize_doc`` for a batch (padded on the right, so real tokens keep positions)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        enc = tokenizer(
            [f"{DOCUMENT_MARKER} {text}" for text in texts],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
    finally:
        tokenizer.padding_side = side
    return dict(enc)


def pylate_token_ids(
    tokenizer: PreTrainedTokenizerBase, text: str, *, is_query: bool, max_length: int | None = None
) -> list[int]:
    """The unpadded ids pylate's ``ColBERT.tokenize`` feeds the backbone for ``text``.

    sentence-transformers strips the text and truncates at ``max_length - 1``; pylate then inserts the
    marker id after the first token. Query padding (mask tokens up to ``max_length``) is left out.
    """
    max_length = max_length or (QUERY_LENGTH if is_query else DOCUMENT_LENGTH)
    ids = tokenizer(text.strip(), truncation=True, max_length=max_length - 1)["input_ids"]
    marker = marker_ids(tokenizer)[0 if is_query else 1]
    return [*ids[:1], marker, *ids[1:]]


def document_token_count(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """How many ids pylate feeds the backbone for ``text`` as a document if nothing were truncated.

    Special tokens and the ``[D]`` marker included: a text fits a model whose document length is ``n`` when
    this is at most ``n`` (what :mod:`colbert_az_pylate.retrieval.passages` checks every window against).

    >>> from transformers import AutoTokenizer
    >>> from colbert_az_pylate.standin import minilm_folder
    >>> tokenizer = AutoTokenizer.from_pretrained(minilm_folder()); _ = add_markers(tokenizer)
    >>> document_token_count(tokenizer, "Bakı") == len(pylate_token_ids(tokenizer, "Bakı", is_query=False))
    True
    """
    return len(tokenizer(text.strip(), add_special_tokens=True, verbose=False)["input_ids"]) + 1


def reference_token_ids(
    tokenizer: PreTrainedTokenizerBase, text: str, *, is_query: bool, max_length: int | None = None
) -> list[int]:
    """The unpadded ids the model card's code feeds the backbone for ``text`` (no query padding)."""
    max_length = max_length or (QUERY_LENGTH if is_query else DOCUMENT_LENGTH)
    marker = QUERY_MARKER if is_query else DOCUMENT_MARKER
    return tokenizer(f"{marker} {text}", truncation=True, max_length=max_length)["input_ids"]


@dataclass(frozen=True)
class TokenMismatch:
    """Where pylate's ids for a text first differ from the reference's."""

    text: str
    is_query: bool
    position: int
    expected: str
    actual: str

    def __str__(self) -> str:
        kind = "query" if self.is_query else "document"
        return f"{kind} {self.text[:60]!r}: token {self.position} is {self.actual!r}, reference has {self.expected!r}"


def first_token_mismatch(
    tokenizer: PreTrainedTokenizerBase,
    expected_ids: Sequence[int],
    actual_ids: Sequence[int],
    text: str,
    is_query: bool,
) -> TokenMismatch | None:
    """The first position where two id lists differ, with both tokens spelled out, or ``None``."""
    expected_ids, actual_ids = list(expected_ids), list(actual_ids)
    if expected_ids == actual_ids:
        return None
    position = next(
        (i for i, (e, a) in enumerate(zip(expected_ids, actual_ids, strict=False)) if e != a),
        min(len(expected_ids), len(actual_ids)),
    )

    def spell(ids: list[int]) -> str:
        return tokenizer.convert_ids_to_tokens(ids[position]) if position < len(ids) else "<end>"

    return TokenMismatch(text, is_query, position, spell(expected_ids), spell(actual_ids))


def tokenization_mismatches(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[TokenMismatch]:
    """Texts whose pylate ids differ from the reference ids, as queries and as documents.

    Parity is defined on the stripped text, as sentence-transformers strips every input.
    """
    found = []
    for text in texts:
        stripped = text.strip()
        for is_query in (True, False):
            mismatch = first_token_mismatch(
                tokenizer,
                reference_token_ids(tokenizer, stripped, is_query=is_query),
                pylate_token_ids(tokenizer, stripped, is_query=is_query),
                stripped,
                is_query,
            )
            if mismatch:
                found.append(mismatch)
    return found


def check_tokenizer_supported(tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse tokenizers that pylate cannot be made to reproduce, with the reason."""
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError("the tokenizer has no fast (tokenizer.json) version; save one with tokenizers first")
    if tokenizer.mask_token_id is None:
        raise TokenizerError("the tokenizer has no mask token, which query expansion needs; set mask_token")
    if tokenizer.pad_token_id is None:
        raise TokenizerError("the tokenizer has no pad token, which the reference query padding needs")
    if tokenizer.padding_side != "right":
        raise TokenizerError(
            "the tokenizer pads on the left, so the reference puts query mask tokens before the text, which "
            "pylate cannot reproduce; set padding_side='right' in tokenizer_config.json if that is what you trained"
        )
    first = {tokenizer(text)["input_ids"][0] for text in ("a", "Bakı", "1")}
    if len(first) != 1 or next(iter(first)) not in tokenizer.all_special_ids:
        raise TokenizerError(
            "the tokenizer does not start every text with a special token (such as <bos> or [CLS]); pylate "
            "inserts the marker after the first token, so it cannot reproduce the reference"
        )


def space_symbol(tokenizer: PreTrainedTokenizerBase) -> str:
    """What a space becomes before pre-tokenization (``'▁'`` for Gemma-style normalizers, else ``' '``)."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer.normalize_str(" ") if normalizer is not None else " "


def align_first_word(tokenizer: PreTrainedTokenizerBase, probes: Sequence[str]) -> list[str]:
    """Make pylate's bare-text tokenization equal the reference's ``"[Q] " + text`` one, in place.

    The reference tokenizes the text after ``"[Q] "``, so its first word follows a space; pylate tokenizes
    the stripped text. Where the tokenizer treats a leading space as significant (Gemma-style
    ``Replace(" ", "▁")`` normalizers, byte-level BPE without a prefix space), a ``Metaspace`` pre-tokenizer
    with ``prepend_scheme="first"`` is put in front: it prepends the space symbol only to the piece of text
    that starts the input, which never happens in the reference (its input starts with the marker), so the
    model card's code keeps producing the same ids. Returns what was changed (empty when nothing had to be).
    """
    mismatches = tokenization_mismatches(tokenizer, probes)
    if not mismatches:
        return []
    symbol = space_symbol(tokenizer)
    if len(symbol) != 1:
        raise TokenizerError(
            f"cannot align the first word: the normalizer turns a space into {symbol!r}; first mismatch: "
            f"{mismatches[0]}"
        )
    backend = tokenizer.backend_tokenizer
    prepend = pre_tokenizers.Metaspace(replacement=symbol, prepend_scheme="first", split=False)
    original = backend.pre_tokenizer
    backend.pre_tokenizer = prepend if original is None else pre_tokenizers.Sequence([prepend, original])
    remaining = tokenization_mismatches(tokenizer, probes)
    if remaining:
        backend.pre_tokenizer = original
        raise TokenizerError(f"cannot align the tokenizer with the reference: {remaining[0]}")
    return [
        f"first word: prepended {symbol!r} to the start of the text before pre-tokenization "
        f"({len(mismatches)} probe encodings differed, e.g. {mismatches[0]})"
    ]
