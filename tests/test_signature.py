"""The model signature: every weight that changes the vectors, the tokenizer and the settings, versioned.

The model changed here differs from the original in one tensor of one transformer layer, as a model fine-tuned with
frozen embeddings does: the version-1 fingerprint (embeddings, projection, settings) cannot tell them apart.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from extras import require_extra
from safetensors.torch import load_file, save_file
from tiny_checkpoints import build_checkpoint

from colbert_az_pylate import convert, load
from colbert_az_pylate.errors import CheckpointError, IndexFormatError
from colbert_az_pylate.retrieval.searcher import Searcher
from colbert_az_pylate.retrieval.voyager_index import MANIFEST, VoyagerIndex
from colbert_az_pylate.signature import SIGNATURE_VERSION, ModelSignature

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı XVIII əsrdə tikilmişdir.", "Gəncə qədim şəhərdir."]
LAYER = re.compile(r"(^|\.)(layers|layer)\.1\.")  # a tensor of the second transformer layer


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("signature")
    convert(build_checkpoint(root / "raw", "wordpiece"), root / "model", verify=False)
    return root / "model"


def _change_one_layer(folder: Path) -> str:
    """Add 0.01 to one tensor of one transformer layer of ``folder``'s weights; returns the tensor's name."""
    tensors = load_file(folder / "model.safetensors")
    name = next(key for key in sorted(tensors) if LAYER.search(key) and key.endswith("weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return name


@pytest.fixture(scope="module")
def changed(original, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("changed") / "model"
    shutil.copytree(original, folder)
    name = _change_one_layer(folder)
    assert "embeddings" not in name
    return folder


def test_changing_one_transformer_layer_changes_the_fingerprint_the_version_1_one_does_not(original, changed):
    before, after = ModelSignature.of_model(load(original)), ModelSignature.of_model(load(changed))
    assert before.fingerprint != after.fingerprint
    assert before.legacy_fingerprint == after.legacy_fingerprint  # what made old indexes accept the changed model
    assert before.to_dict()["signature_version"] == after.signature_version == SIGNATURE_VERSION == 2


def test_same_weights_give_the_same_signature_across_a_save_load_round_trip_and_a_move(original, tmp_path):
    from pylate import models

    model = load(original)
    signature = ModelSignature.of_model(model)
    model.save(str(tmp_path / "saved"))
    shutil.copytree(original, tmp_path / "moved")
    saved = ModelSignature.of_model(models.ColBERT(str(tmp_path / "saved"), device="cpu"))
    assert saved.fingerprint == signature.fingerprint and saved.made(signature.to_dict())  # the name is a path
    assert ModelSignature.of_model(load(tmp_path / "moved")).fingerprint == signature.fingerprint
    assert ModelSignature.of_model(model).fingerprint == signature.fingerprint  # hashing changes nothing


def test_settings_and_the_tokenizer_are_part_of_the_fingerprint(original):
    model = load(original)
    before = ModelSignature.of_model(model).fingerprint
    model.document_length += 1
    longer = ModelSignature.of_model(model).fingerprint
    model.document_length -= 1
    model.tokenizer.add_tokens(["Xınalıq"])
    assert len({before, longer, ModelSignature.of_model(model).fingerprint}) == 3


def test_an_index_built_with_the_old_model_refuses_the_changed_model(original, changed, tmp_path):
    searcher = Searcher(str(original), tmp_path / "index", show_progress_bar=False)
    searcher.index(DOCUMENTS)
    assert searcher.search("Şəki sarayı", k=1)[0].id is not None
    with pytest.raises(IndexFormatError, match="fingerprint"):
        Searcher(str(changed), tmp_path / "index", show_progress_bar=False)  # to search or to add: refused
    with pytest.raises(IndexFormatError, match="fingerprint"):
        VoyagerIndex(str(tmp_path), "index", model=ModelSignature.of_model(load(changed)))
    assert len(Searcher(str(original), tmp_path / "index", show_progress_bar=False).index_store) == len(DOCUMENTS)


def _downgrade_to_version_1(manifest_path: Path, legacy: str) -> None:
    """Rewrite an index manifest as an older release wrote it: no signature_version, the version-1 fingerprint."""
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["model"] = {key: manifest["model"][key] for key in ("name", "embedding_size")} | {"fingerprint": legacy}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def test_a_version_1_index_is_accepted_with_one_warning_line_and_refused_when_its_fingerprint_differs(
    original, tmp_path, caplog
):
    model = load(original)
    signature = ModelSignature.of_model(model)
    index = VoyagerIndex(str(tmp_path), "old", embedding_size=signature.embedding_size, model=signature)
    index.add_documents(["baku"], model.encode(["Bakı"], is_query=False, show_progress_bar=False))
    index.close()
    _downgrade_to_version_1(tmp_path / "old" / MANIFEST, signature.legacy_fingerprint)
    with caplog.at_level(logging.WARNING, logger="colbert_az_pylate.signature"):
        reopened = VoyagerIndex(str(tmp_path), "old", model=signature)
    assert len(reopened) == 1
    reopened.close()
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "version-1 signature" in warning and "rebuild" in warning and "\n" not in warning
    with torch.no_grad():
        model[0].auto_model.get_input_embeddings().weight[0, 0] += 1.0  # what version 1 did check
    with pytest.raises(IndexFormatError, match="fingerprint"):
        VoyagerIndex(str(tmp_path), "old", model=ModelSignature.of_model(model))


def test_the_old_exported_graph_is_not_reused_by_the_changed_model(original, tmp_path):
    require_extra("onnxruntime", "onnx")
    from colbert_az_pylate.encoders import export_encoder
    from colbert_az_pylate.encoders.export import read_export_record

    folder = tmp_path / "model"
    shutil.copytree(original, folder)
    export_encoder(folder, "onnx")
    old = read_export_record(folder).fingerprint
    _change_one_layer(folder)  # fine-tuned in place: encoders/ still holds the graph of the old weights
    with pytest.raises(CheckpointError, match="made from other weights"):
        load(folder, encoder="onnx")
    export_encoder(folder, "onnx")  # an explicit export replaces it
    assert read_export_record(folder).fingerprint not in (old, None)
    model, reference = load(folder, encoder="onnx"), load(folder)
    texts = ["Şəki xan sarayı"]
    np.testing.assert_allclose(
        model.encode(texts, is_query=False, show_progress_bar=False)[0],
        reference.encode(texts, is_query=False, show_progress_bar=False)[0],
        atol=1e-5,
    )


def test_a_version_1_export_record_is_never_trusted(original, tmp_path):
    require_extra("onnxruntime", "onnx")
    from colbert_az_pylate.encoders import export_encoder, use_exported_encoder
    from colbert_az_pylate.encoders.export import EXPORT_FOLDER, RECORD_FILE, read_export_record

    folder = tmp_path / "model"
    shutil.copytree(original, folder)
    export_encoder(folder, "onnx")
    path = folder / EXPORT_FOLDER / RECORD_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    del record["signature_version"]
    record["fingerprint"] = ModelSignature.of_model(load(folder)).legacy_fingerprint  # as an older release wrote it
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"version-1 signature.*export again") as refused:
        use_exported_encoder(load(folder), folder, "onnx", export=False)
    assert "\n" not in str(refused.value)
    load(folder, encoder="onnx")  # allowed to export: exported again, as if missing
    assert read_export_record(folder).signature_version == SIGNATURE_VERSION


def test_the_readme_says_what_the_signature_covers_and_what_happens_to_version_1_records():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    claim = readme[readme.index("**One model per index.**") :][:900]
    for phrase in ("every weight", "transformer layers", "tokenizer", "version-1", "warning", "rebuild", "export"):
        assert phrase in claim, phrase
