"""What a new user runs into: each is one ``error:`` line saying what to do, exit 2 — never "internal error"."""

from __future__ import annotations

import pytest

from colbert_az_pylate import cli


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("…")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "no-such-model", "corpus.jsonl", "--out", "shards", "--quantize", "int8"],
        ["verify", "no-such-model", "--quantize", "bf16"],
        ["search", "no-such-index", "Bakı", "--quantize", "int8-query"],
    ],
)
def test_quantize_without_an_exported_encoder_is_refused_not_ignored(capsys, argv):
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    line = _one_error_line(capsys)
    assert "--quantize" in line and "--encoder openvino" in line and "--encoder onnx" in line
