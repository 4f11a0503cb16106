"""Verification catches what it must, and says which text, position and tokens."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from colbert_az_pylate import verify
from colbert_az_pylate.errors import ParityError
from colbert_az_pylate.scores import maxsim_scores


@pytest.mark.slow
def test_verification_reports_text_position_and_tokens_when_the_fix_is_removed(converted, tmp_path, probes):
    folder = shutil.copytree(converted["gemma"][0], tmp_path / "broken")
    tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
    tokenizer_json["pre_tokenizer"] = None
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    report = verify(folder, probes=probes[:5])
    assert not report.passed
    assert "token 2 is 'a', reference has '▁a'" in report.token_mismatches[0]
    with pytest.raises(ParityError, match="token ids differ"):
        verify(folder, probes=probes[:5], raise_on_failure=True)


@pytest.mark.slow
def test_verification_of_a_good_folder_against_itself_passes(converted, probes):
    report = verify(converted["bytelevel"][0], probes=probes[:10])
    assert report.passed and report.card_code_mismatches == []


def test_maxsim_matches_a_brute_force_loop():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 4, 8, generator=generator)
    documents = torch.randn(5, 6, 8, generator=generator)
    mask = torch.rand(5, 6, generator=generator) > 0.3
    mask[:, 0] = True
    scores = maxsim_scores(queries, documents, mask)
    for q in range(3):
        for d in range(5):
            kept = documents[d][mask[d]]
            expected = sum(max(float(qt @ dt) for dt in kept) for qt in queries[q])
            assert scores[q, d].item() == pytest.approx(expected, abs=1e-5)
