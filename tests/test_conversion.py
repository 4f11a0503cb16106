"""Conversion: every tokenizer family converts with exact parity, plain pylate loads it, the card's code too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from model_card_code import ModelCardCode
from tiny_checkpoints import FAMILIES

from colbert_az_pylate import ReferenceColBERT, convert
from colbert_az_pylate.conversion.probes import probe_texts
from colbert_az_pylate.errors import OutputExistsError, ParityError

NEEDS_FIRST_WORD_FIX = {"gemma", "gemma_with_markers", "gemma_padded_vocab", "bytelevel"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_converts_with_exact_parity(converted, family):
    _, report = converted[family]
    parity = report.parity
    assert parity is not None and parity.passed, parity.failure()
    assert parity.token_mismatches == [] and parity.card_code_mismatches == []
    assert parity.max_vector_error <= 1e-5
    assert parity.max_score_relative_error <= 1e-4
    assert parity.texts >= len(probe_texts())


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_overwrite_replaces_the_output(checkpoints, tmp_path, probes):
    output = tmp_path / "out"
    output.mkdir()
    (output / "config.json").write_text("{}")
    (output / "stale.txt").write_text("old")
    report = convert(checkpoints["metaspace"], output, overwrite=True, probes=probes[:20])
    assert report.parity.passed
    assert not (output / "stale.txt").exists() and (output / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["user folder", "file", "source"])
def test_overwrite_never_replaces_what_is_not_a_model_output(checkpoints, tmp_path, kind):
    import shutil

    source = Path(shutil.copytree(checkpoints["wordpiece"], tmp_path / "source"))
    output = {"user folder": tmp_path / "documents", "file": tmp_path / "notes.txt", "source": source}[kind]
    if kind == "user folder":
        output.mkdir()
        (output / "thesis.tex").write_text("years of work")
    elif kind == "file":
        output.write_text("keep me")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputExistsError):
        convert(source, output, overwrite=True, verify=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_failed_verification_leaves_nothing_behind(checkpoints, tmp_path, probes, monkeypatch):
    import colbert_az_pylate.conversion.converter as conversion

    def broken_dense(folder, projection, tokenizer):
        original_write(folder, projection.roll(1, dims=1), tokenizer)

    original_write = conversion.write_pylate_files
    monkeypatch.setattr(conversion, "write_pylate_files", broken_dense)
    with pytest.raises(ParityError, match="token vectors differ"):
        convert(checkpoints["wordpiece"], tmp_path / "out", probes=probes[:20])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_force_writes_an_output_that_failed_verification(checkpoints, tmp_path, probes, monkeypatch):
    import colbert_az_pylate.conversion.converter as conversion

    original_write = conversion.write_pylate_files
    monkeypatch.setattr(conversion, "write_pylate_files", lambda f, p, t: original_write(f, p.roll(1, dims=1), t))
    report = convert(checkpoints["wordpiece"], tmp_path / "out", probes=probes[:20], force=True)
    assert not report.parity.passed and (tmp_path / "out" / "modules.json").is_file()


@pytest.mark.slow
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


# --- interrupted and killed conversions leave nothing behind (real processes) ---------------------------------


def _worker_of(parent_pid: int) -> int | None:
    """The pid of the pylate worker that ``parent_pid`` started (its last argument is the parent's pid)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        args = [arg for arg in args if arg]
        if len(args) >= 2 and args[1].endswith("pylate_worker.py") and args[-1] == str(parent_pid):
            return int(entry.name)
    return None


def _start_cli_convert(source: Path, workdir: Path, system_tmp: Path) -> tuple[subprocess.Popen, int]:
    """``colbert-az convert`` in its own process, returned once its pylate worker runs."""
    import os
    import time

    (workdir / "probes.txt").write_text("Bakı\nAzərbaycan mədəniyyəti\n", encoding="utf-8")
    env = {**os.environ, "TMPDIR": str(system_tmp), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "colbert_az_pylate", "convert", str(source), "./out", "--probes", "probes.txt"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        worker = _worker_of(process.pid)
        if worker:
            return process, worker
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the pylate worker never started: {process.communicate()[1][-2000:]}")


def _wait_gone(pid: int, seconds: float = 20) -> bool:
    import time

    from colbert_az_pylate.conversion.staging import pid_alive

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker through /proc")


@pytest.mark.slow
@needs_proc
def test_sigkill_during_convert_kills_the_worker_and_the_next_run_removes_the_leftovers(
    checkpoints, tmp_path, monkeypatch
):
    import signal
    import tempfile

    workdir, system_tmp = tmp_path / "work", tmp_path / "system-tmp"
    workdir.mkdir()
    system_tmp.mkdir()
    process, worker = _start_cli_convert(checkpoints["wordpiece"], workdir, system_tmp)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert _wait_gone(worker), "the pylate worker outlived its killed parent"
    leftovers = [p.name for p in workdir.iterdir() if p.name.startswith(".out.tmp-")]
    verify_folders = [p.name for p in system_tmp.iterdir() if p.name.startswith("colbert-az-verify-")]
    assert leftovers and verify_folders, "the kill did not happen mid-conversion"

    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    monkeypatch.chdir(workdir)
    convert(checkpoints["wordpiece"], "out", verify=False)
    assert sorted(p.name for p in workdir.iterdir()) == ["out", "probes.txt"]
    assert list(system_tmp.iterdir()) == []


@pytest.mark.slow
@needs_proc
def test_ctrl_c_during_convert_exits_130_with_one_line_and_keeps_nothing(checkpoints, tmp_path):
    import signal

    workdir, system_tmp = tmp_path / "work", tmp_path / "system-tmp"
    workdir.mkdir()
    system_tmp.mkdir()
    process, worker = _start_cli_convert(checkpoints["wordpiece"], workdir, system_tmp)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted")
    assert _wait_gone(worker)
    assert sorted(p.name for p in workdir.iterdir()) == ["probes.txt"]
    assert list(system_tmp.iterdir()) == []


def test_a_kill_between_the_two_renames_of_overwrite_loses_no_output(tmp_path):
    from colbert_az_pylate.conversion.staging import remove_stale_staging

    dead = 999_999_999  # above any pid_max: no such process
    (tmp_path / f".model.old-{dead}-ab12").mkdir()
    (tmp_path / f".model.old-{dead}-ab12" / "config.json").write_text("{}")
    (tmp_path / f".model.tmp-{dead}-cd34").mkdir()
    (tmp_path / f".other.tmp-{dead}-ef56").mkdir()
    alive = tmp_path / f".busy.tmp-{os.getpid()}-gh78"
    alive.mkdir()
    notes = remove_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "model"]
    assert (tmp_path / "model" / "config.json").is_file() and len(notes) == 3


def test_a_new_conversion_removes_what_killed_ones_left_beside_its_output(checkpoints, tmp_path):
    dead = 999_999_999
    stale = tmp_path / f".out.tmp-{dead}-zz99"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    steps = []
    convert(checkpoints["wordpiece"], tmp_path / "out", verify=False, on_step=steps.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert any("removed .out.tmp-" in step for step in steps)


# --- the package's own probe texts ------------------------------------------------------------------------------


def test_default_probes_are_shipped_inside_the_package_whatever_the_working_directory(tmp_path, monkeypatch):
    repository = Path(__file__).resolve().parent.parent  # where ../shared/data/az-mirage sits beside the checkout
    monkeypatch.chdir(repository)
    here = probe_texts()
    monkeypatch.chdir(tmp_path)
    assert probe_texts() == here
    text = " ".join(here)
    assert len(here) >= 60 and all(letter in text for letter in "əöüğışçƏÖÜĞİŞÇ")
    assert any(character.isdigit() for character in text) and "The museum" in text
    assert max(len(t.split()) for t in here) > 256  # longer than the document limit in any tokenizer


def test_no_module_of_the_package_reads_files_outside_it():
    package = Path(__file__).resolve().parent.parent / "colbert_az_pylate"
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "../shared" in line or '"shared"' in line or "parents[2]" in line
    ]
    assert offenders == []


def test_an_az_mirage_file_adds_extra_probes_and_a_missing_one_is_refused(tmp_path):
    from colbert_az_pylate.errors import DataFormatError

    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps([{"query": "Şəki haradadır?", "answer": ["Şimal-qərbdə."]}]), encoding="utf-8")
    assert probe_texts(dataset)[-2:] == ["Şəki haradadır?", "Şimal-qərbdə."]
    with pytest.raises(DataFormatError, match="cannot read the probe data set"):
        probe_texts(tmp_path / "missing.json")
