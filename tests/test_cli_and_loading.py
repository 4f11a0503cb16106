"""The ``colbert-az`` command and ``load``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from colbert_az_pylate import load
from colbert_az_pylate.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colbert_az_pylate", *args], capture_output=True, text=True, timeout=600
    )


def test_help_lists_convert_and_verify():
    done = _run("--help")
    assert done.returncode == 0 and "convert" in done.stdout and "verify" in done.stdout


@pytest.mark.slow
def test_convert_prints_json_with_parity_figures(checkpoints, tmp_path, probes):
    probe_file = tmp_path / "probes.txt"
    probe_file.write_text("\n".join(text.replace("\n", " ") for text in probes[:20]), encoding="utf-8")
    done = _run("convert", str(checkpoints["bytelevel"]), str(tmp_path / "out"), "--json", "--probes", str(probe_file))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["parity"]["passed"] is True and report["parity"]["max_vector_error"] <= 1e-5
    assert any(fix.startswith("first word") for fix in report["fixes"])


@pytest.mark.slow
def test_verify_prints_a_human_summary(converted, tmp_path, capsys):
    probe_file = tmp_path / "probes.txt"
    probe_file.write_text("Bakı\nAzərbaycan mədəniyyəti\n", encoding="utf-8")
    assert main(["verify", str(converted["wordpiece"][0]), "--probes", str(probe_file)]) == 0
    assert "parity PASSED on 2 probe texts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "/no/such/folder", "/tmp/x"], "is not a folder"),
        (["convert", "Owner/missing-model", "/tmp/x"], "pass the local folder instead"),
        (["verify", "/tmp", "--probes", "/no/probes.txt"], "cannot read probe file"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_existing_output_exits_2(converted, checkpoints, capsys):
    assert main(["convert", str(checkpoints["wordpiece"]), str(converted["wordpiece"][0])]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_load_converts_a_raw_checkpoint_once_into_the_cache(checkpoints, tmp_path, monkeypatch):
    import colbert_az_pylate.loading as loading

    calls = []
    original = loading.convert
    monkeypatch.setattr(loading, "convert", lambda *a, **k: calls.append(a) or original(*a, **k, probes=["Bakı"]))
    first = load(checkpoints["metaspace"], device="cpu", cache_dir=tmp_path)
    second = load(checkpoints["metaspace"], device="cpu", cache_dir=tmp_path)
    assert len(calls) == 1
    assert first.document_length == second.document_length == 256
    assert first.skiplist == [] and first.attend_to_expansion_tokens


def test_load_reads_a_converted_folder_directly(converted):
    model = load(converted["gemma"][0], device="cpu")
    vectors = model.encode(["Bakı"], is_query=True, show_progress_bar=False)
    assert vectors[0].shape == (32, converted["gemma"][1].embedding_dim)


@pytest.mark.slow
def test_readme_convert_and_verify_work_with_relative_paths_from_another_working_directory(checkpoints, tmp_path):
    import shutil

    workdir = tmp_path / "work"
    shutil.copytree(checkpoints["gemma"], workdir / "colbert-az")
    (workdir / "probes.txt").write_text("Bakı\nAzərbaycan mədəniyyəti\n", encoding="utf-8")

    def run_in(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "colbert_az_pylate", *args], capture_output=True, text=True, timeout=600, cwd=workdir
        )

    converted = run_in("convert", "./colbert-az", "./colbert-az-pylate", "--probes", "probes.txt")
    assert converted.returncode == 0, converted.stderr
    assert "parity PASSED on 2 probe texts" in converted.stdout
    verified = run_in("verify", "./colbert-az-pylate", "--reference", "./colbert-az", "--probes", "probes.txt")
    assert verified.returncode == 0, verified.stderr
    assert "parity PASSED on 2 probe texts" in verified.stdout
    assert sorted(p.name for p in workdir.iterdir()) == ["colbert-az", "colbert-az-pylate", "probes.txt"]


def test_a_local_path_is_never_taken_for_a_hub_id(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    assert main(["verify", "owner/missing"]) == 2  # the form of a hub id, but its first part is a local folder
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing", "truncated weights", "not converted"])
def test_verify_of_a_missing_or_unloadable_model_is_bad_input_not_a_parity_failure(converted, tmp_path, damage, capsys):
    import shutil

    folder = tmp_path / "model"
    if damage == "truncated weights":
        shutil.copytree(converted["wordpiece"][0], folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "not converted":
        shutil.copytree(converted["wordpiece"][0], folder)
        (folder / "modules.json").unlink()
    assert main(["verify", str(folder)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("… ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "parity" not in errors[0]


def test_a_truncated_file_in_the_load_cache_is_rebuilt_instead_of_failing_forever(checkpoints, tmp_path, monkeypatch):
    import colbert_az_pylate.loading as loading

    calls = []
    original = loading.convert
    monkeypatch.setattr(loading, "convert", lambda *a, **k: calls.append(a) or original(*a, **k, verify=False))
    load(checkpoints["wordpiece"], device="cpu", cache_dir=tmp_path)
    (cached,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    weights = cached / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    model = load(checkpoints["wordpiece"], device="cpu", cache_dir=tmp_path)
    assert len(calls) == 2
    assert model.encode(["Bakı"], is_query=True, show_progress_bar=False)[0].shape[0] == 32
    assert len(load(checkpoints["wordpiece"], device="cpu", cache_dir=tmp_path).tokenizer) > 0 and len(calls) == 2


def test_load_of_a_converted_folder_with_truncated_weights_is_a_checkpoint_error(converted, tmp_path):
    import shutil

    from colbert_az_pylate.errors import CheckpointError

    folder = shutil.copytree(converted["wordpiece"][0], tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load(folder, device="cpu")
