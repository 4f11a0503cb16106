"""Fast CPU encoders: exported ONNX graphs run by ONNX Runtime / OpenVINO inside pylate's own ``encode``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from extras import require_extra
from tiny_checkpoints import FAMILIES

from colbert_az_pylate import load
from colbert_az_pylate.cli import main
from colbert_az_pylate.encoders import ExportedBackbone, export_encoder, verify_encoder
from colbert_az_pylate.encoders.export import EXPORT_FOLDER, RECORD_FILE, read_export_record
from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError

require_extra("onnxruntime", "onnx")
require_extra("openvino", "openvino")


def _copy(converted, family: str, target: Path) -> Path:
    """A private copy of a session-converted model (exports write into the folder)."""
    shutil.copytree(converted[family][0], target, ignore=shutil.ignore_patterns(EXPORT_FOLDER))
    return target


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory) -> Path:
    """The gemma tiny model with the float32 graph and the int8-weight graph exported."""
    folder = _copy(converted, "gemma", tmp_path_factory.mktemp("exported") / "model")
    export_encoder(folder, "onnx")
    export_encoder(folder, "openvino", "int8")
    return folder


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    """The MiniLM stand-in (real pretrained weights), converted."""
    from colbert_az_pylate import convert
    from colbert_az_pylate.standin import build_minilm_standin

    root = tmp_path_factory.mktemp("standin")
    convert(build_minilm_standin(root / "raw"), root / "model", verify=False)
    return root / "model"


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["onnx", "openvino"])
@pytest.mark.parametrize("family", FAMILIES)
def test_float32_graphs_match_torch_within_1e5_for_every_tokenizer_family(converted, tmp_path, family, encoder, probes):
    folder = _copy(converted, family, tmp_path / "model")
    report = verify_encoder(folder, encoder, probes=probes)
    assert report.passed, report.failure()
    assert report.shape_mismatches == 0 and report.max_vector_error <= 1e-5
    assert report.top10_agreement == 1.0


def test_the_exported_encoder_runs_inside_pylates_own_colbert_encode(exported, probes):
    from pylate.models import ColBERT

    torch_model = load(exported, device="cpu")
    model = load(exported, device="cpu", encoder="onnx")
    assert isinstance(model, ColBERT) and isinstance(model[0].auto_model, ExportedBackbone)
    for is_query in (True, False):  # pylate's full output (ids, masks) comes through the graph too
        ours = model.encode(probes[:8], is_query=is_query, output_value=None, show_progress_bar=False)
        theirs = torch_model.encode(probes[:8], is_query=is_query, output_value=None, show_progress_bar=False)
        assert sorted(ours) == sorted(theirs) == ["attention_mask", "input_ids", "masks", "token_embeddings"]
        for key in ("input_ids", "attention_mask", "masks"):
            assert all(np.array_equal(a, b) for a, b in zip(ours[key], theirs[key], strict=True))
        pairs = zip(ours["token_embeddings"], theirs["token_embeddings"], strict=True)
        assert max(float(abs(a - b).max()) for a, b in pairs) < 1e-5


def test_documents_beyond_the_document_length_are_truncated_exactly_like_pylate(exported):
    long_text = " ".join(f"söz{i} Bakı" for i in range(800))
    torch_model = load(exported, device="cpu")
    for encoder, quantize in (("onnx", None), ("openvino", None), ("openvino", "int8"), ("openvino", "bf16")):
        model = load(exported, device="cpu", encoder=encoder, quantize=quantize)
        ours = model.encode([long_text, "Bakı"], is_query=False, show_progress_bar=False)
        theirs = torch_model.encode([long_text, "Bakı"], is_query=False, show_progress_bar=False)
        assert [o.shape for o in ours] == [t.shape for t in theirs]
        assert len(theirs[0]) <= torch_model.document_length


def test_an_index_built_with_torch_is_searched_with_an_exported_encoder(exported, tmp_path):
    from colbert_az_pylate.retrieval.searcher import Searcher

    texts = ["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı", "Nizami Gəncəvi şairdir", "Xəzər dənizi"]
    ids = ["baku", "sheki", "nizami", "xezer"]
    built = Searcher(exported, tmp_path / "index", show_progress_bar=False).index(texts, ids=ids)
    expected = [[(hit.id, hit.score) for hit in hits] for hits in built.search(texts, k=4, exact=True)]
    for encoder in ("onnx", "openvino"):
        searcher = Searcher.open(tmp_path / "index", encoder=encoder)
        assert searcher.signature.made(built.signature.to_dict())
        found = [[(hit.id, hit.score) for hit in hits] for hits in searcher.search(texts, k=4, exact=True)]
        for ours, theirs in zip(found, expected, strict=True):
            assert [i for i, _ in ours] == [i for i, _ in theirs]
            assert np.allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-5)


@pytest.mark.slow
def test_int8_weights_and_bf16_keep_top10_agreement_of_095_on_the_standin(standin, az_mirage):
    report = verify_encoder(standin, "openvino", "int8", dataset=az_mirage, limit=200)
    assert report.passed, report.summary()
    assert report.top10_agreement >= 0.95 and report.min_top10_agreement == 0.95
    assert report.max_vector_error > 1e-4  # int8 is not float32: the figure is measured, not assumed
    bf16 = verify_encoder(standin, "openvino", "bf16", dataset=az_mirage, limit=200)
    assert bf16.passed and bf16.min_top10_agreement == 0.95, bf16.summary()


@pytest.mark.slow
def test_export_writes_beside_the_pylate_files_and_the_folder_still_loads_in_plain_pylate(checkpoints, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(checkpoints["gemma"], workdir / "colbert-az")
    elsewhere = subprocess.run(
        [sys.executable, "-m", "colbert_az_pylate", "export", "./colbert-az", "./colbert-az-onnx", "--encoder", "onnx"],
        capture_output=True, text=True, timeout=600, cwd=workdir,
    )  # fmt: skip
    assert elsewhere.returncode == 0, elsewhere.stderr
    folder = workdir / "colbert-az-onnx"
    assert (folder / "modules.json").is_file() and (folder / EXPORT_FOLDER / "model.onnx").is_file()
    assert sorted(p.name for p in workdir.iterdir()) == ["colbert-az", "colbert-az-onnx"]  # nothing left beside
    from pylate.models import ColBERT

    plain = ColBERT(str(folder), device="cpu").encode(["Bakı"], is_query=True, show_progress_bar=False)[0]
    fast_model = load(folder, encoder="onnx")
    fast = fast_model.encode(["Bakı"], is_query=True, show_progress_bar=False)[0]
    assert float(abs(plain - fast).max()) < 1e-5
    from model_card_code import ModelCardCode  # the card's own code still runs on the exported folder

    query, document = "Azərbaycanın paytaxtı", "Bakı Azərbaycanın paytaxtıdır."
    card = ModelCardCode(str(folder), embedding_dim=128).maxsim_score(query, document)
    q = fast_model.encode([query], is_query=True, show_progress_bar=False)[0]
    d = fast_model.encode([document], is_query=False, show_progress_bar=False)[0]
    assert abs(float((q @ d.T).max(axis=1).sum()) - card) <= 1e-4 * max(abs(card), 1)
    verified = subprocess.run(
        [sys.executable, "-m", "colbert_az_pylate", "verify", "./colbert-az-onnx", "--encoder", "onnx", "--json"],
        capture_output=True, text=True, timeout=600, cwd=workdir,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["passed"] is True


def test_export_is_kept_when_current_and_an_existing_output_is_not_replaced(exported, tmp_path, capsys):
    record_before = (exported / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8")
    graph = exported / EXPORT_FOLDER / "model.onnx"
    stamp = graph.stat().st_mtime_ns
    export_encoder(exported, "openvino", "int8")
    assert graph.stat().st_mtime_ns == stamp
    assert (exported / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8") == record_before
    capsys.readouterr()
    assert main(["export", str(exported), "--encoder", "onnx"]) == 0  # the command says that it wrote nothing
    assert "nothing to export" in capsys.readouterr().out and graph.stat().st_mtime_ns == stamp
    assert main(["export", str(exported), "--encoder", "onnx", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["export", str(exported), str(tmp_path / "taken"), "--encoder", "onnx"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.slow
def test_a_load_with_a_raw_checkpoint_exports_into_the_cache_once(checkpoints, tmp_path):
    from colbert_az_pylate.loading import is_complete

    cache = tmp_path / "cache"
    model = load(checkpoints["wordpiece"], cache_dir=cache, encoder="onnx")
    assert isinstance(model[0].auto_model, ExportedBackbone)
    (folder,) = list(cache.iterdir())
    assert is_complete(folder) and (folder / EXPORT_FOLDER / "model.onnx").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    load(checkpoints["wordpiece"], cache_dir=cache, encoder="onnx")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again


def test_an_export_from_other_weights_is_refused(converted, exported, tmp_path):
    other = _copy(converted, "gemma_padded_vocab", tmp_path / "other")
    shutil.copytree(exported / EXPORT_FOLDER, other / EXPORT_FOLDER)
    with pytest.raises(CheckpointError, match="made from other weights"):
        load(other, encoder="onnx")
    export_encoder(other, "onnx")  # an explicit export replaces it
    assert read_export_record(other).fingerprint != read_export_record(exported).fingerprint
    assert isinstance(load(other, encoder="onnx")[0].auto_model, ExportedBackbone)


@pytest.mark.parametrize(
    ("damage", "encoder", "quantize", "message"),
    [
        ("truncate model.onnx", "onnx", None, "truncated or replaced"),
        ("remove model.onnx", "openvino", None, "is missing"),
        ("flip openvino-int8.bin", "openvino", "int8", "SHA-256"),
        ("remove openvino-int8.bin", "openvino", "int8", "is missing"),
        ("garble export.json", "onnx", None, "unreadable"),
    ],
)
def test_a_damaged_export_is_one_line_exit_2(exported, tmp_path, capsys, damage, encoder, quantize, message):
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    action, name = damage.split()
    path = folder / EXPORT_FOLDER / name
    if action == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif action == "remove":
        path.unlink()
    elif action == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=message):
        load(folder, encoder=encoder, quantize=quantize)
    args = ["verify", str(folder), "--encoder", encoder] + (["--quantize", quantize] if quantize else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress line
    assert err.startswith("error: ") and message in err


def test_verify_bf16_on_a_cpu_without_bfloat16_says_bf16_was_not_checked(exported, probes, monkeypatch, capsys):
    """OpenVINO computes a bf16 hint in float32 where the CPU has no bfloat16: verify must not call that a bf16
    pass. The compiled model's own precision is what decides (here made to say float32, as such a CPU does)."""
    from colbert_az_pylate.encoders import runtime

    monkeypatch.setattr(runtime, "compiled_precision", lambda compiled: "f32")
    report = verify_encoder(exported, "openvino", "bf16", probes=probes)
    assert report.computed_in == runtime.BF16_UNAVAILABLE and report.to_dict()["computed_in"] == report.computed_in
    assert "bf16 was NOT checked" in report.summary().splitlines()[0]
    assert "no bfloat16" in load(exported, encoder="openvino", quantize="bf16")[0].auto_model.description
    assert main(["verify", str(exported), "--encoder", "openvino", "--quantize", "bf16"]) == 0
    assert "bf16 was NOT checked" in capsys.readouterr().out
    monkeypatch.setattr(runtime, "compiled_precision", lambda compiled: "bf16")
    checked = verify_encoder(exported, "openvino", "bf16", probes=probes)
    assert checked.computed_in == "bfloat16" and "NOT checked" not in checked.summary()


def test_bad_encoder_names_and_settings_are_one_line_errors(exported, capsys):
    with pytest.raises(InvalidArgumentError, match="unknown encoder 'tensorrt'"):
        load(exported, encoder="tensorrt")
    with pytest.raises(InvalidArgumentError, match="needs encoder 'openvino', not 'torch'"):
        load(exported, quantize="int8")
    with pytest.raises(InvalidArgumentError, match="out of the quality budget"):
        load(exported, encoder="onnx", quantize="int8")
    with pytest.raises(InvalidArgumentError, match="bfloat16 compute is OpenVINO's"):
        load(exported, encoder="onnx", quantize="bf16")
    with pytest.raises(InvalidArgumentError, match="unknown quantization"):
        load(exported, encoder="openvino", quantize="int4")
    with pytest.raises(InvalidArgumentError, match="threads must be"):
        load(exported, encoder="onnx", threads=0)
    capsys.readouterr()
    for argv in (["search", str(exported), "q", "--encoder", "tensorrt"], ["export", str(exported), "--encoder", "x"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "invalid choice" in err


def test_a_loaded_model_with_an_encoder_argument_is_refused(exported, tmp_path):
    from colbert_az_pylate.retrieval.searcher import Searcher

    with pytest.raises(InvalidArgumentError, match="need the model's folder"):
        Searcher(load(exported), tmp_path / "index", encoder="onnx")


def test_an_interrupted_export_leaves_the_folder_as_it_was(converted, tmp_path, monkeypatch):
    from colbert_az_pylate.encoders import export as export_module

    folder = _copy(converted, "wordpiece", tmp_path / "model")
    export_encoder(folder, "openvino")
    before = sorted(p.name for p in (folder / EXPORT_FOLDER).iterdir())
    record = (folder / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "compress_openvino_int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_encoder(folder, "openvino", "int8")
    assert sorted(p.name for p in (folder / EXPORT_FOLDER).iterdir()) == before
    assert (folder / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8") == record
    assert isinstance(load(folder, encoder="onnx")[0].auto_model, ExportedBackbone)


def test_the_leftover_of_a_killed_export_is_removed_by_the_next_export(converted, tmp_path):
    """A SIGKILLed export cannot clean up after itself: its ``.staging-<pid>`` folder (another, dead process's)
    is removed by the next export of that folder, which holds the export lock, so none is running."""
    import subprocess
    import sys

    folder = _copy(converted, "wordpiece", tmp_path / "model")
    export_encoder(folder, "onnx")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = folder / EXPORT_FOLDER / f".staging-{gone.pid}"
    left.mkdir()
    (left / "model.onnx").write_bytes(b"half a graph")
    export_encoder(folder, "onnx")  # nothing to export: the leftover goes all the same
    assert not list((folder / EXPORT_FOLDER).glob(".staging-*"))
    assert isinstance(load(folder, encoder="onnx")[0].auto_model, ExportedBackbone)


def test_an_export_lists_exactly_the_graph_files_it_wrote(converted, tmp_path):
    """`colbert-az export` reports what this call wrote, not every graph the record holds from earlier exports."""
    from colbert_az_pylate.encoders.export import export_model

    folder = _copy(converted, "wordpiece", tmp_path / "model")
    assert export_encoder(folder, "onnx").written == ["model.onnx"]
    record = export_encoder(folder, "openvino", "int8")
    assert record.written == ["openvino-int8.xml", "openvino-int8.bin"]  # the float32 graph was kept, not written
    assert sorted(record.graphs) == ["onnx", "openvino-int8"]
    again = export_encoder(folder, "onnx")
    assert again.written == [] and sorted(again.graphs) == ["onnx", "openvino-int8"]
    written_to, record = export_model(folder, None, "openvino", "int8")
    assert written_to == folder and record.written == []
    assert "written" not in json.loads((folder / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8"))
    assert read_export_record(folder).written == []


def test_a_read_only_folder_without_an_export_says_how_to_export(converted, tmp_path):
    folder = _copy(converted, "wordpiece", tmp_path / "model")
    if os.geteuid() == 0:  # root writes anywhere: check the refusal through the export=False path instead
        from colbert_az_pylate.encoders import use_exported_encoder

        with pytest.raises(CheckpointError, match="colbert-az export"):
            use_exported_encoder(load(folder), folder, "onnx", export=False)
        return
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="not writable"):
            load(folder, encoder="onnx")
    finally:
        folder.chmod(0o755)


def test_texts_are_batched_by_length_so_padding_stays_minimal(exported):
    model = load(exported, device="cpu", encoder="onnx")
    backbone = model[0].auto_model
    shapes, run = [], backbone._run

    def recording(feeds):
        shapes.append(feeds["input_ids"].shape)
        return run(feeds)

    backbone._run = recording
    short, long = "Bakı", " ".join(["Şəki xan sarayı XVIII əsrdə tikilib"] * 12)
    vectors = model.encode([short, long] * 4, is_query=False, batch_size=4, show_progress_bar=False)
    assert [len(v) for v in vectors[:2]] == [len(vectors[2]), len(vectors[3])]  # results come back in input order
    assert len(shapes) == 2 and shapes[0][1] > 3 * shapes[1][1]  # the long texts together, then the short ones


def test_load_warms_the_runtime_up_with_a_query_and_a_document(exported, monkeypatch):
    from colbert_az_pylate.encoders import runtime

    seen, make = [], runtime._onnx_runner

    def counting(*args, **kwargs):
        run, description = make(*args, **kwargs)
        return (lambda feeds: seen.append(feeds["input_ids"].shape) or run(feeds)), description

    monkeypatch.setattr(runtime, "_onnx_runner", counting)
    model = load(exported, device="cpu", encoder="onnx", threads=1)
    assert len(seen) == 2 and seen[0] == (1, model.query_length)  # a query at its padded shape, then a document


def test_exported_encoders_run_on_the_cpu_only(exported):
    with pytest.raises(InvalidArgumentError, match="runs on the CPU"):
        load(exported, device="cuda", encoder="onnx")
    assert str(load(exported, encoder="onnx").device) == "cpu"


def test_a_failed_attach_leaves_the_torch_models_signature_following_its_weights(exported, tmp_path):
    import torch

    from colbert_az_pylate.encoders import use_exported_encoder
    from colbert_az_pylate.retrieval.voyager_index import ModelSignature

    model = load(exported)
    with pytest.raises(CheckpointError):
        use_exported_encoder(model, tmp_path, "onnx", export=False)  # no export there
    before = ModelSignature.of_model(model).fingerprint
    with torch.no_grad():
        model[0].auto_model.get_input_embeddings().weight[0, 0] += 1.0  # fine-tuned afterwards
    assert ModelSignature.of_model(model).fingerprint != before


@pytest.mark.slow
def test_export_json_prints_json_only_and_nothing_on_stderr(converted, tmp_path):
    folder = _copy(converted, "wordpiece", tmp_path / "model")
    done = subprocess.run(
        [sys.executable, "-m", "colbert_az_pylate", "export", str(folder), "--encoder", "openvino", "--quantize",
         "int8", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["graphs"]) == ["onnx", "openvino-int8"]
    assert done.stderr == ""


def test_encode_runs_with_an_exported_encoder_and_never_mixes_quantized_shards(exported, tmp_path, capsys):
    from colbert_az_pylate.retrieval.encoding import EncodedCorpus

    corpus = tmp_path / "corpus.jsonl"
    texts = ["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı", "Nizami Gəncəvi şairdir"]
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)), encoding="utf-8")
    base = ["encode", str(exported), str(corpus), "--shard-size", "2", "--json"]
    assert main([*base, "--out", str(tmp_path / "torch")]) == 0
    assert main([*base, "--out", str(tmp_path / "onnx"), "--encoder", "onnx"]) == 0
    torch_shards = list(EncodedCorpus.open(tmp_path / "torch").shards())
    onnx_shards = list(EncodedCorpus.open(tmp_path / "onnx").shards())
    assert len(torch_shards) == len(onnx_shards) == 2
    for (_, torch_vectors), (_, onnx_vectors) in zip(torch_shards, onnx_shards, strict=True):
        assert np.allclose(np.asarray(torch_vectors, np.float32), np.asarray(onnx_vectors, np.float32), atol=2e-3)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "torch"), "--encoder", "openvino", "--quantize", "int8"]) == 2
    assert "another encoder" in capsys.readouterr().err  # int8 shards never join a float32 encoding
