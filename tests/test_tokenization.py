"""Tokenization rules: the first-word problem, its fix, and what the fix must leave untouched."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from colbert_az_pylate.tokenization import (
    add_markers,
    align_first_word,
    pylate_token_ids,
    reference_query_inputs,
    reference_token_ids,
    tokenization_mismatches,
)


def _tokenizer(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    add_markers(tokenizer)
    return tokenizer


def test_gemma_style_tokenizer_drops_the_space_before_the_first_word_in_pylate(checkpoints):
    tokenizer = _tokenizer(checkpoints["gemma"])
    text = "Azərbaycan mədəniyyətinin tarixi"
    reference = tokenizer.convert_ids_to_tokens(reference_token_ids(tokenizer, text, is_query=True))
    pylate = tokenizer.convert_ids_to_tokens(pylate_token_ids(tokenizer, text, is_query=True))
    assert reference[:3] == ["<bos>", "[Q]", "▁Azərbaycan"]
    assert pylate[2] != "▁Azərbaycan" and pylate[2].startswith("Az")


@pytest.mark.parametrize("family", ["gemma", "bytelevel"])
def test_first_word_alignment_makes_pylate_ids_equal_the_reference(checkpoints, probes, family):
    tokenizer = _tokenizer(checkpoints[family])
    assert tokenization_mismatches(tokenizer, probes)
    fixes = align_first_word(tokenizer, probes)
    assert len(fixes) == 1
    assert tokenization_mismatches(tokenizer, probes) == []


@pytest.mark.parametrize("family", ["metaspace", "wordpiece"])
def test_tokenizers_without_the_problem_are_left_alone(checkpoints, probes, family):
    tokenizer = _tokenizer(checkpoints[family])

    def pipeline():
        backend = tokenizer.backend_tokenizer
        return str(backend.normalizer), str(backend.pre_tokenizer), str(backend.post_processor)

    before = pipeline()
    assert align_first_word(tokenizer, probes) == []
    assert pipeline() == before


@pytest.mark.parametrize("family", ["gemma", "bytelevel"])
def test_alignment_keeps_the_model_card_tokenization_unchanged(checkpoints, probes, family):
    original, aligned = _tokenizer(checkpoints[family]), _tokenizer(checkpoints[family])
    align_first_word(aligned, probes)
    texts = [*probes, "sual[Q]cavab", "x [D]y", "  a"]
    for text in texts:
        assert (
            reference_query_inputs(original, [text])["input_ids"].tolist()
            == reference_query_inputs(aligned, [text])["input_ids"].tolist()
        ), text


def test_markers_inside_the_text_are_tokenized_like_the_reference(checkpoints, probes):
    tokenizer = _tokenizer(checkpoints["gemma"])
    align_first_word(tokenizer, probes)
    for text in ("sual [Q] cavab [D] son", "sual[Q]cavab[D]son"):
        for is_query in (True, False):
            assert pylate_token_ids(tokenizer, text, is_query=is_query) == reference_token_ids(
                tokenizer, text, is_query=is_query
            )


def test_long_documents_are_truncated_at_256_tokens_like_the_reference(checkpoints, probes):
    tokenizer = _tokenizer(checkpoints["gemma"])
    align_first_word(tokenizer, probes)
    text = " ".join(f"söz{i}" for i in range(600))
    ids = pylate_token_ids(tokenizer, text, is_query=False)
    assert len(ids) == 256 and ids == reference_token_ids(tokenizer, text, is_query=False)


def test_reference_query_is_padded_to_32_mask_tokens_all_attended(checkpoints):
    tokenizer = _tokenizer(checkpoints["wordpiece"])
    enc = reference_query_inputs(tokenizer, ["baku"])
    assert enc["input_ids"].shape == (1, 32)
    assert int(enc["attention_mask"].sum()) == 32
    assert (enc["input_ids"][0, -1] == tokenizer.mask_token_id).item()
    assert (enc["input_ids"] != tokenizer.pad_token_id).all()
