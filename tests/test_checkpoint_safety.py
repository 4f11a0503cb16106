"""Bad input: unsafe or malformed projections, missing files, broken tokenizers, unreachable hub ids.

Each is refused with a one-line message and leaves no output behind.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from colbert_az_pylate import convert
from colbert_az_pylate.conversion.checkpoint import load_projection, resolve_source
from colbert_az_pylate.errors import (
    CheckpointError,
    SourceNotFoundError,
    TokenizerError,
    UnsafeProjectionError,
)


class RunsCodeOnLoad:
    """A pickle payload: unpickling it runs a shell command that creates ``sentinel``."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.sentinel))}",))


@pytest.fixture
def source(checkpoints, tmp_path) -> Path:
    """A private copy of the gemma checkpoint that a test may damage."""
    return Path(shutil.copytree(checkpoints["gemma"], tmp_path / "source"))


def _assert_refused(source: Path, tmp_path: Path, error: type[Exception], match: str) -> str:
    with pytest.raises(error, match=match) as caught:
        convert(source, tmp_path / "out", verify=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["source"], "partial output left behind"
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_pickled_callable_in_projection_is_refused_and_never_runs(source, tmp_path, tmp_path_factory):
    sentinels = tmp_path_factory.mktemp("pickle-sentinels")  # outside tmp_path, whose contents _assert_refused checks
    control = sentinels / "control"
    pickle.loads(pickle.dumps(RunsCodeOnLoad(control)))  # the payload does run when unpickled unguarded
    assert control.exists(), "the payload must create its file when run, or the check below proves nothing"
    sentinel = sentinels / "pwned"
    torch.save({"weight": torch.zeros(4, 32), "hook": RunsCodeOnLoad(sentinel)}, source / "projection.pt")
    _assert_refused(source, tmp_path, UnsafeProjectionError, "other than tensors")
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"weight": torch.zeros(8, 32), "bias": torch.zeros(8)}, "exactly one entry 'weight'"),
        ({"weight": torch.zeros(8, 32), "extra": torch.zeros(1)}, "exactly one entry 'weight'"),
        ({"weight": torch.zeros(8, 16)}, "hidden size is 32"),
        ({"weight": torch.zeros(32)}, "2-D"),
        ({"weight": torch.zeros(2, 8, 32)}, "2-D"),
        ({"weight": torch.zeros(8, 32, dtype=torch.long)}, "floating-point"),
        ([torch.zeros(8, 32)], "2-D"),
    ],
)
def test_malformed_projection_is_refused(source, tmp_path, content, match):
    torch.save(content, source / "projection.pt")
    _assert_refused(source, tmp_path, UnsafeProjectionError, match)


def test_bare_weight_tensor_is_accepted(tmp_path):
    path = tmp_path / "bare_projection.pt"
    torch.save(torch.ones(8, 32), path)
    assert load_projection(path, 32).shape == (8, 32)


def test_truncated_projection_is_refused(source, tmp_path):
    data = (source / "projection.pt").read_bytes()
    (source / "projection.pt").write_bytes(data[: len(data) // 2])
    _assert_refused(source, tmp_path, UnsafeProjectionError, "not a readable torch file")


@pytest.mark.parametrize("missing", ["projection.pt", "config.json", "model.safetensors"])
def test_missing_file_is_named(source, tmp_path, missing):
    (source / missing).unlink()
    _assert_refused(source, tmp_path, CheckpointError, missing.split(".")[0])


def test_unreadable_tokenizer_is_refused(source, tmp_path):
    (source / "tokenizer.json").write_text("{not json")
    _assert_refused(source, tmp_path, TokenizerError, "cannot read the tokenizer")


def test_tokenizer_without_mask_token_is_refused(source, tmp_path):
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.pop("mask_token", None)
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    _assert_refused(source, tmp_path, TokenizerError, "no mask token")


def test_left_padding_tokenizer_is_refused_with_the_reason(source, tmp_path):
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["padding_side"] = "left"
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    _assert_refused(source, tmp_path, TokenizerError, "pads on the left")


def test_markers_without_trained_embedding_rows_are_refused(source, tmp_path):
    config = json.loads((source / "config.json").read_text())
    config["vocab_size"] -= 2
    (source / "config.json").write_text(json.dumps(config))
    _assert_refused(source, tmp_path, CheckpointError, "no trained embeddings")


def test_unreachable_hub_id_says_how_to_use_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceNotFoundError, match="pass the local folder instead"):
        resolve_source("LocalDoc/colbert-az-does-not-exist")


def test_missing_local_folder_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(SourceNotFoundError, match="is not a folder"):
        resolve_source(tmp_path / "nowhere")


def test_truncated_weights_are_refused_before_anything_is_written(source, tmp_path):
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = _assert_refused(source, tmp_path, CheckpointError, "truncated or damaged")
    assert "model.safetensors" in message
