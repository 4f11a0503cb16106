"""The static int8 query graph (``quantize="int8-query"``): queries through it, documents through the float32 graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from extras import require_extra

from colbert_az_pylate import load
from colbert_az_pylate.cli import main
from colbert_az_pylate.encoders import ExportedBackbone, export_encoder, verify_encoder
from colbert_az_pylate.encoders.export import EXPORT_FOLDER, RECORD_FILE, read_export_record
from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError

require_extra("openvino", "openvino")
require_extra("nncf", "openvino")

QUERY_GRAPH = "openvino-int8-query.xml"
TEXTS = ["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı XVIII əsrdə tikilib", "Nizami Gəncəvi şairdir"]


@pytest.fixture(scope="module")
def query_exported(converted, tmp_path_factory) -> Path:
    """The gemma tiny model (ModernBERT, 128-d) with the float32 graph and the static int8 query graph."""
    folder = tmp_path_factory.mktemp("query-graph") / "model"
    shutil.copytree(converted["gemma"][0], folder, ignore=shutil.ignore_patterns(EXPORT_FOLDER))
    export_encoder(folder, "openvino", "int8-query")
    return folder


def test_the_export_records_the_query_graph_with_its_hashes(query_exported):
    record = read_export_record(query_exported)
    assert record.graphs == {"onnx": "model.onnx", "openvino-int8-query": QUERY_GRAPH}
    for name in (QUERY_GRAPH, "openvino-int8-query.bin"):
        assert record.files[name]["bytes"] == (query_exported / EXPORT_FOLDER / name).stat().st_size
        assert len(record.files[name]["sha256"]) == 64
    import openvino

    graph = openvino.Core().read_model(str(query_exported / EXPORT_FOLDER / QUERY_GRAPH))
    shapes = {node.get_any_name(): str(node.get_partial_shape()) for node in graph.inputs}
    assert shapes == {"input_ids": "[?,32]"}  # static query length, the all-ones attention mask folded in
    assert any(op.get_type_name() == "FakeQuantize" for op in graph.get_ordered_ops())  # activations quantized


def test_queries_take_pylates_own_path_into_the_static_graph(query_exported):
    from pylate.models import ColBERT

    torch_model = load(query_exported, device="cpu")
    model = load(query_exported, device="cpu", encoder="openvino", quantize="int8-query")
    assert isinstance(model, ColBERT) and isinstance(model[0].auto_model, ExportedBackbone)
    assert model.query_length == 32 and model.attend_to_expansion_tokens
    ours = model.encode(TEXTS, is_query=True, output_value=None, show_progress_bar=False)
    theirs = torch_model.encode(TEXTS, is_query=True, output_value=None, show_progress_bar=False)
    for key in ("input_ids", "attention_mask", "masks"):  # pylate's tokenization, markers and expansion, unchanged
        assert all(np.array_equal(a, b) for a, b in zip(ours[key], theirs[key], strict=True))
    assert all(len(ids) == 32 and int(ids[1]) == model.query_prefix_id for ids in ours["input_ids"])
    assert all(bool(mask.all()) for mask in ours["attention_mask"])  # query expansion attends to every token
    pairs = list(zip(ours["token_embeddings"], theirs["token_embeddings"], strict=True))
    worst = max(float(abs(a - b).max()) for a, b in pairs)
    cosine = min(float((a * b).sum(axis=1).min()) for a, b in pairs)  # normalised vectors
    assert 1e-6 < worst < 0.05 and cosine > 0.995  # int8, not float32, yet close


def test_one_query_and_a_batch_of_queries_run_the_static_graph_and_agree(query_exported):
    model = load(query_exported, device="cpu", encoder="openvino", quantize="int8-query")
    batch = model.encode(TEXTS, is_query=True, show_progress_bar=False)
    singles = [model.encode([text], is_query=True, show_progress_bar=False)[0] for text in TEXTS]
    assert max(float(abs(a - b).max()) for a, b in zip(batch, singles, strict=True)) < 1e-4


def test_documents_are_unaffected_float32_like_torch(query_exported):
    torch_model = load(query_exported, device="cpu")
    model = load(query_exported, device="cpu", encoder="openvino", quantize="int8-query")
    float32 = load(query_exported, device="cpu", encoder="openvino")
    # a document exactly as long as a query still carries [D], so it is a document
    candidates = [" ".join(["Bakı"] * n + ["ev"] * k) for n in range(1, 32) for k in range(4)]
    length = model.tokenize(candidates, is_query=False, pad=False)["attention_mask"].sum(dim=1).tolist()
    same_length = [text for text, size in zip(candidates, length, strict=True) if size == model.query_length]
    assert same_length
    texts = [*TEXTS, same_length[0], " ".join(f"söz{i} Bakı" for i in range(800))]
    ours = model.encode(texts, is_query=False, show_progress_bar=False)
    theirs = torch_model.encode(texts, is_query=False, show_progress_bar=False)
    exact = float32.encode(texts, is_query=False, show_progress_bar=False)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    assert max(float(abs(a - b).max()) for a, b in zip(ours, theirs, strict=True)) < 1e-5
    assert max(float(abs(a - b).max()) for a, b in zip(ours, exact, strict=True)) < 1e-6


def test_only_query_batches_reach_the_query_graph():
    from colbert_az_pylate.encoders.runtime import query_router

    route = query_router(lambda feeds: "query", lambda feeds: "document", 32, 7)
    ids = np.full((2, 32), 5)
    ids[:, 1] = 7
    ones = np.ones((2, 32), np.int64)
    assert route({"input_ids": ids, "attention_mask": ones}) == "query"
    zeros_at_end = ones.copy()
    zeros_at_end[:, -3:] = 0  # a model that does not attend to expansion tokens: not the folded mask
    assert route({"input_ids": ids, "attention_mask": zeros_at_end}) == "document"
    document = ids.copy()
    document[:, 1] = 8  # the [D] marker
    assert route({"input_ids": document, "attention_mask": ones}) == "document"
    assert route({"input_ids": ids[:, :20], "attention_mask": ones[:, :20]}) == "document"
    assert query_router(lambda f: "query", lambda f: "document", 32, None)({"input_ids": ids}) == "document"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip openvino-int8-query.bin", "SHA-256"),
        ("remove openvino-int8-query.xml", "is missing"),
        ("truncate openvino-int8-query.bin", "truncated or replaced"),
    ],
)
def test_an_altered_query_graph_is_refused_with_one_line(query_exported, tmp_path, capsys, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(query_exported, folder)
    action, name = damage.split()
    path = folder / EXPORT_FOLDER / name
    if action == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif action == "remove":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=message):
        load(folder, encoder="openvino", quantize="int8-query")
    assert main(["verify", str(folder), "--encoder", "openvino", "--quantize", "int8-query"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert isinstance(load(folder, encoder="openvino")[0].auto_model, ExportedBackbone)  # float32 still loads


def test_a_query_graph_from_other_weights_is_refused(converted, query_exported, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(converted["gemma_padded_vocab"][0], other, ignore=shutil.ignore_patterns(EXPORT_FOLDER))
    shutil.copytree(query_exported / EXPORT_FOLDER, other / EXPORT_FOLDER)
    with pytest.raises(CheckpointError, match="made from other weights"):
        load(other, encoder="openvino", quantize="int8-query")


def test_the_query_graph_is_exported_once_and_kept(query_exported):
    stamp = (query_exported / EXPORT_FOLDER / QUERY_GRAPH).stat().st_mtime_ns
    before = (query_exported / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8")
    export_encoder(query_exported, "openvino", "int8-query")
    assert (query_exported / EXPORT_FOLDER / QUERY_GRAPH).stat().st_mtime_ns == stamp
    assert (query_exported / EXPORT_FOLDER / RECORD_FILE).read_text(encoding="utf-8") == before


@pytest.mark.slow
def test_int8_query_is_openvinos_and_verify_reports_its_budget(query_exported, capsys):
    with pytest.raises(InvalidArgumentError, match="static int8 query graph is OpenVINO's"):
        load(query_exported, encoder="onnx", quantize="int8-query")
    assert main(["verify", str(query_exported), "--encoder", "openvino", "--quantize", "int8-query", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["min_top10_agreement"] == 0.95 and report["document_tolerance"] == 1e-5
    assert report["max_document_error"] < 1e-5 < report["max_vector_error"]


def test_verify_exits_1_when_the_query_graph_is_out_of_budget(query_exported, monkeypatch, capsys):
    from colbert_az_pylate.encoders import parity

    real = parity.top_k_agreement
    monkeypatch.setattr(parity, "top_k_agreement", lambda a, b, k=10: real(a, b, k) - 0.2)
    assert main(["verify", str(query_exported), "--encoder", "openvino", "--quantize", "int8-query"]) == 1
    assert "FAILED: top-10 agreement" in capsys.readouterr().out


@pytest.mark.slow
def test_the_query_graph_keeps_top10_agreement_of_095_on_the_standin(tmp_path, az_mirage):
    from colbert_az_pylate import convert
    from colbert_az_pylate.standin import build_minilm_standin

    folder = tmp_path / "model"
    convert(build_minilm_standin(tmp_path / "raw"), folder, verify=False)
    report = verify_encoder(folder, "openvino", "int8-query", dataset=az_mirage, limit=200)
    assert report.passed, report.summary()
    assert report.max_document_error <= 1e-5 < report.max_vector_error
