"""What a new user runs into: each is one ``error:`` line saying what to do, exit 2 — never "internal error"."""

from __future__ import annotations

import errno
import os
import socket

import pytest
from extras import require_extra

from colbert_az_pylate import cli
from colbert_az_pylate.cli import dispatcher


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


def _raising(monkeypatch, exc):
    parser = cli.build_parser()
    original = parser.parse_args

    def parse(argv=None):
        args = original(argv)

        def handler(args):
            raise exc

        args.handler = handler
        return args

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(dispatcher, "build_parser", lambda: parser)  # the name main() reads


@pytest.mark.parametrize(
    ("exc", "advice"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/srv/index/.lock"), "writable"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/index"), "writable file system"),
        (OSError(errno.ENOSPC, "No space left on device", "/srv/index/graph.voy"), "free some space"),
        (OSError(errno.EADDRINUSE, "Address already in use"), "--port"),
    ],
)
def test_a_system_condition_is_bad_input_not_an_internal_error(monkeypatch, capsys, exc, advice):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _raising(monkeypatch, exc)
    assert cli.main(["demo"]) == cli.EXIT_BAD_INPUT
    line = _one_error_line(capsys)
    assert exc.strerror in line and advice in line and "internal error" not in line
    if exc.filename:
        assert exc.filename in line


def test_an_output_under_a_file_is_bad_input(checkpoints, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    argv = ["convert", str(checkpoints["wordpiece"]), str(blocker / "model"), "--no-verify"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    line = _one_error_line(capsys)
    assert str(blocker) in line and "not a folder" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_bad_input(checkpoints, tmp_path, capsys):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert cli.main(["convert", str(checkpoints["wordpiece"]), str(parent / "model"), "--no-verify"]) == 2
    finally:
        parent.chmod(0o755)
    line = _one_error_line(capsys)
    assert "Permission denied" in line and str(parent) in line


def test_serve_on_a_port_in_use_is_refused_before_serving(tmp_path, capsys):
    require_extra("uvicorn", "serve")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = cli.main(["serve", str(tmp_path), "--host", "127.0.0.1", "--port", str(port), "--read-only"])
    assert code == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "serving" not in err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "--port" in err


def test_convert_and_export_folders_get_the_umask_mode_not_0700(checkpoints, tmp_path):
    require_extra("onnxruntime", "onnx")
    from colbert_az_pylate import convert
    from colbert_az_pylate.encoders.export import export_model

    previous = os.umask(0o027)
    try:
        convert(checkpoints["wordpiece"], tmp_path / "model", verify=False)
        folder, _ = export_model(tmp_path / "model", tmp_path / "model-onnx", "onnx")
    finally:
        os.umask(previous)
    for path in (tmp_path / "model", folder, folder / "encoders"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o750), path


@pytest.mark.parametrize("command", ["index", "encode"])
def test_a_bad_corpus_is_refused_before_torch_is_imported(tmp_path, command):
    import subprocess
    import sys

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "Bakı"}\n{"id": "a", "text": "Gəncə"}\n', encoding="utf-8")
    output = ["--index" if command == "index" else "--out", str(tmp_path / "index")]
    code = (
        "import sys\n"
        "from colbert_az_pylate.cli import main\n"
        f"code = main([{command!r}, 'no-such-model', {str(corpus)!r}, *{output!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "'a'" in done.stderr and not (tmp_path / "index").exists()


def test_standin_writes_a_colbert_az_folder_that_converts_and_refuses_a_used_folder(tmp_path, capsys):
    """`colbert-az standin DIR`: an offline model folder to try every command on, said plainly to be a stand-in."""
    from colbert_az_pylate.conversion.checkpoint import check_layout

    folder = tmp_path / "colbert-az"
    assert cli.main(["standin", str(folder)]) == 0
    check_layout(folder)  # the colbert-az layout: config, weights, tokenizer, projection.pt
    said = capsys.readouterr().err
    assert "stand-in" in said and "not colbert-az's quality" in said and f"colbert-az convert {folder}" in said
    assert cli.main(["standin", str(folder)]) == 2
    assert "is not an empty folder" in _one_error_line(capsys)
    assert cli.main(["convert", str(folder), str(tmp_path / "converted"), "--no-verify"]) == 0
