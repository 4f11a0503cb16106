"""The command line's error policy, start-up cost and quiet output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from colbert_az_pylate import cli
from colbert_az_pylate.cli import dispatcher
from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colbert_az_pylate", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def _with_handler(monkeypatch, handler):
    parser = cli.build_parser()
    original = parser.parse_args

    def parse(argv=None):
        args = original(argv)
        args.handler = handler
        return args

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(dispatcher, "build_parser", lambda: parser)  # the name main() reads


def test_help_and_argument_errors_do_not_import_torch():
    code = (
        "import sys\n"
        "from colbert_az_pylate.cli import main\n"
        "for argv in (['--help'], ['search'], ['index', 'm', 'c', '--index', 'i', '--batch-size', 'x']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'pylate', 'datasets') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_package_import_is_lazy_but_complete():
    code = "import sys, colbert_az_pylate as c; print('torch' in sys.modules); print(callable(c.load), c.convert)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    first, second = done.stdout.strip().splitlines()
    assert first == "False" and second.startswith("True <function convert")


@pytest.mark.parametrize("error", [InvalidArgumentError("k must be a positive integer, got 0"), DataFormatError("x")])
def test_our_errors_exit_2_with_one_line(monkeypatch, capsys, error):
    def handler(args):
        raise error

    _with_handler(monkeypatch, handler)
    assert cli.main(["demo"]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: {error}\n"


def test_an_unexpected_exception_is_an_internal_error_in_one_line(monkeypatch, capsys):
    def handler(args):
        raise ValueError("a library's message\nwith a second line")

    _with_handler(monkeypatch, handler)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["demo"]) == cli.EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error: ValueError: a library's message (")
    assert cli.DEBUG_ENV in err


def test_debug_variable_shows_the_traceback(monkeypatch):
    def handler(args):
        raise RuntimeError("boom")

    _with_handler(monkeypatch, handler)
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["demo"])


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys):
    def handler(args):
        raise KeyboardInterrupt

    _with_handler(monkeypatch, handler)
    assert cli.main(["demo"]) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_json_commands_print_nothing_but_json(converted, tmp_path):
    """No third-party progress bars, log lines or warnings on stderr; stdout parses as JSON."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"Bakı mətn {i}"}) + "\n" for i in range(5)), encoding="utf-8"
    )
    model = str(converted["gemma"][0])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    for args in (
        ["index", model, str(corpus), "--index", str(tmp_path / "idx"), "--json"],
        ["search", str(tmp_path / "idx"), "Bakı", "--json"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "colbert_az_pylate", *args], capture_output=True, text=True, timeout=600, env=env
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        json.loads(done.stdout)


def test_without_json_progress_goes_to_stderr_and_stdout_holds_the_result_alone(converted, tmp_path):
    """A long command shows what it does on stderr (its steps, the encoding's progress bar, even when stderr is not
    a terminal) and prints only its result on stdout, so `colbert-az index ... > result.txt` keeps a clean file."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"Bakı mətn {i}"}) + "\n" for i in range(5)), encoding="utf-8"
    )
    model = str(converted["gemma"][0])
    for args, result in (
        (["index", model, str(corpus), "--index", str(tmp_path / "idx")], "indexed 5 documents into"),
        (["encode", model, str(corpus), "--out", str(tmp_path / "enc")], "encoded 1 of 1 shards into"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "colbert_az_pylate", *args], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("\n") == 1 and done.stdout.startswith(result)
        assert "… read 5 documents" in done.stderr and "Traceback" not in done.stderr
        assert "\r" not in done.stdout and "it/s" not in done.stdout
