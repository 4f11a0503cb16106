"""Conversion: every tokenizer family converts with exact parity, plain pylate loads it, the card's code too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from model_card_code import ModelCardCode

from colbert_az_pylate import ReferenceColBERT, convert
from colbert_az_pylate.errors import OutputExistsError, ParityError
from colbert_az_pylate.fixtures import FAMILIES

NEEDS_FIRST_WORD_FIX = {"gemma", "gemma_with_markers", "gemma_padded_vocab", "bytelevel"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_converts_with_exact_parity(converted, family):
    _, report = converted[family]
    parity = report.parity
    assert parity is not None and parity.passed, parity.failure()
    assert parity.token_mismatches == [] and parity.card_code_mismatches == []
    assert parity.max_vector_error <= 1e-5
    assert parity.max_score_relative_error <= 1e-4
    assert parity.texts >= 17


@pytest.mark.parametrize("family", FAMILIES)
def test_first_word_fix_is_applied_exactly_where_the_tokenizer_needs_it(converted, family):
    _, report = converted[family]
    fixed_first_word = any(fix.startswith("first word") for fix in report.fixes)
    assert fixed_first_word == (family in NEEDS_FIRST_WORD_FIX)


def test_markers_already_in_the_published_tokenizer_are_reused(converted):
    _, report = converted["gemma_with_markers"]
    assert not any(fix.startswith("added") for fix in report.fixes)


PYLATE_PROBE = textwrap.dedent(
    """
    import json, sys
    from pylate import models
    model = models.ColBERT(sys.argv[1], device="cpu")
    tok = model.tokenizer
    print(json.dumps({
        "query_length": model.query_length,
        "document_length": model.document_length,
        "attend_to_expansion_tokens": model.attend_to_expansion_tokens,
        "do_query_expansion": model.do_query_expansion,
        "skiplist": model.skiplist,
        "query_prefix_id": model.query_prefix_id,
        "document_prefix_id": model.document_prefix_id,
        "marker_ids": tok.convert_tokens_to_ids(["[Q]", "[D]"]),
        "dense_out": model[1].out_features,
        "dense_bias": model[1].linear.bias is not None,
        "modules": len(model),
        "imported_package": "colbert_az_pylate" in sys.modules,
    }))
    """
)


@pytest.mark.parametrize("family", ["gemma", "wordpiece"])
def test_plain_pylate_loads_the_output_with_the_reference_settings(converted, family):
    folder, report = converted[family]
    done = subprocess.run([sys.executable, "-c", PYLATE_PROBE, str(folder)], capture_output=True, text=True, check=True)
    settings = json.loads(done.stdout.strip().splitlines()[-1])
    assert settings["query_length"] == 32 and settings["document_length"] == 256
    assert settings["attend_to_expansion_tokens"] is True and settings["do_query_expansion"] is True
    assert settings["skiplist"] == []
    assert [settings["query_prefix_id"], settings["document_prefix_id"]] == settings["marker_ids"]
    assert settings["dense_out"] == report.embedding_dim and settings["dense_bias"] is False
    assert settings["modules"] == 2 and settings["imported_package"] is False


@pytest.mark.parametrize("family", ["gemma", "bytelevel", "wordpiece"])
def test_model_card_code_scores_the_same_on_the_output_as_on_the_original(checkpoints, converted, family):
    folder, report = converted[family]
    before = ModelCardCode(str(checkpoints[family]), report.embedding_dim)
    after = ModelCardCode(str(folder), report.embedding_dim)
    reference = ReferenceColBERT.from_pretrained(checkpoints[family])
    query, document = "Azərbaycan mədəniyyətinin tarixi", "Azərbaycan mədəniyyəti zəngin tarixə malikdir."
    expected = before.maxsim_score(query, document)
    assert after.maxsim_score(query, document) == pytest.approx(expected, rel=1e-6)
    assert reference.score([query], [document]).item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(before.tokenize_query(query)["input_ids"], after.tokenize_query(query)["input_ids"])


def test_output_keeps_the_colbert_az_layout_and_adds_the_pylate_files(converted):
    folder, _ = converted["gemma"]
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "projection.pt",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Dense/config.json",
        "README.md",
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["query_prefix"] == "[Q]" and config["document_prefix"] == "[D]"
    assert config["skiplist_words"] == [] and config["attend_to_expansion_tokens"] is True
    card = (folder / "README.md").read_text()
    assert "Using this model with pylate" in card and "models.ColBERT(" in card
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_stock_pylate_on_the_raw_checkpoint_differs_from_the_reference(checkpoints, probes):
    """The problem this package exists for: pylate on the raw folder scores differently."""
    from colbert_az_pylate.conversion.verification import run_pylate_worker

    source = checkpoints["gemma"]
    out = run_pylate_worker(source, ["Azərbaycan mədəniyyətinin tarixi"])
    reference = ReferenceColBERT.from_pretrained(source)
    _, ids = reference.encode_queries(["Azərbaycan mədəniyyətinin tarixi"])
    assert out["q_ids_0"].tolist() != ids[0].tolist()


def test_existing_output_is_refused_without_overwrite(checkpoints, converted, probes):
    folder, _ = converted["wordpiece"]
    with pytest.raises(OutputExistsError, match="already exists"):
        convert(checkpoints["wordpiece"], folder, probes=probes)


def test_overwrite_replaces_the_output(checkpoints, tmp_path, probes):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    report = convert(checkpoints["metaspace"], output, overwrite=True, probes=probes[:20])
    assert report.parity.passed
    assert not (output / "stale.txt").exists() and (output / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_verification_leaves_nothing_behind(checkpoints, tmp_path, probes, monkeypatch):
    import colbert_az_pylate.conversion.converter as conversion

    def broken_dense(folder, projection, tokenizer):
        original_write(folder, projection.roll(1, dims=1), tokenizer)

    original_write = conversion.write_pylate_files
    monkeypatch.setattr(conversion, "write_pylate_files", broken_dense)
    with pytest.raises(ParityError, match="token vectors differ"):
        convert(checkpoints["wordpiece"], tmp_path / "out", probes=probes[:20])
    assert list(tmp_path.iterdir()) == []


def test_force_writes_an_output_that_failed_verification(checkpoints, tmp_path, probes, monkeypatch):
    import colbert_az_pylate.conversion.converter as conversion

    original_write = conversion.write_pylate_files
    monkeypatch.setattr(conversion, "write_pylate_files", lambda f, p, t: original_write(f, p.roll(1, dims=1), t))
    report = convert(checkpoints["wordpiece"], tmp_path / "out", probes=probes[:20], force=True)
    assert not report.parity.passed and (tmp_path / "out" / "modules.json").is_file()


def test_bfloat16_config_is_pinned_to_float32_so_pylate_computes_like_the_reference(checkpoints, tmp_path, probes):
    import shutil

    source = Path(shutil.copytree(checkpoints["metaspace"], tmp_path / "source"))
    config = json.loads((source / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (source / "config.json").write_text(json.dumps(config))
    report = convert(source, tmp_path / "out", probes=probes[:20])
    assert report.parity.passed, report.parity.failure()
    assert any("bfloat16 -> float32" in fix for fix in report.fixes)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "float32"
