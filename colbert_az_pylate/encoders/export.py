"""Export a converted model's backbone to ONNX (and int8 graphs of it), beside the pylate files.

The exported graphs live in ``<model>/encoders/`` with a record, ``encoders/export.json``, written last:

- ``model.onnx``: the backbone in float32 (token ids → last hidden states), run by ONNX Runtime
  (``encoder="onnx"``) and compiled by OpenVINO (``encoder="openvino"``);
- ``openvino-int8.xml``/``.bin``: the same graph with int8 weights (NNCF weight compression, per output channel,
  asymmetric; activations stay float32), compiled by OpenVINO (``encoder="openvino", quantize="int8"``). It needs
  no calibration data, so nothing of the user's can leak into it.

- ``openvino-int8-query.xml``/``.bin``: a *query* graph for ``quantize="int8-query"``: the backbone at the query's
  static shape (``[batch, query_length]``, the attention mask folded to ones, as pylate's query expansion makes
  it), int8 weights *and* activations (NNCF post-training quantization, transformer preset with SmoothQuant,
  calibrated on texts shipped in the package), the sensitive MatMuls left unquantized (:func:`query_graph_scope`).
  Queries run it; documents run the float32 graph, so they are float32 exactly.

``encoder="openvino", quantize="bf16"`` runs the float32 graph with bfloat16 compute (CPUs with AVX512-BF16 or
AMX; elsewhere OpenVINO computes in float32). int8 is offered where it keeps the parity budget (top-10 agreement
>= 0.95 with float32 exact search on AZ-MIRAGE, MiniLM stand-in): ONNX Runtime's dynamic int8 and OpenVINO's
post-training (activation) int8 were faster but measured 0.85 and 0.88 (``benchmarks/int8_candidates.py``), so
``encoder="onnx"`` is float32 only.

Only the backbone is exported: tokenization, the [Q]/[D] markers, query expansion, the projection, the skiplist
and normalisation stay pylate's own code. The record keeps the fingerprint of the weights the graphs came from
(:class:`~colbert_az_pylate.signature.ModelSignature`: every weight, the tokenizer and the settings), each file's size
and SHA-256, so a folder whose weights changed, or a truncated graph, is refused when it is loaded. A record of an
older signature version (which did not hash the transformer layers) is never trusted: the graphs are exported again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError, OutputExistsError, first_line
from colbert_az_pylate.files import atomic_write, exclusive_lock, replace_folder, replace_synced
from colbert_az_pylate.signature import SIGNATURE_VERSION, ModelSignature

ENCODERS = ("torch", "onnx", "openvino")
QUANTIZATIONS = (None, "int8", "bf16", "int8-query")
EXPORT_FOLDER = "encoders"
RECORD_FILE = "export.json"
LOCK_FILE = ".lock"
RECORD_FORMAT = 1
ONNX_OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# (encoder, quantize) -> the graph file it runs, relative to the export folder
GRAPH_FILES: dict[tuple[str, str | None], str] = {
    ("onnx", None): "model.onnx",
    ("openvino", None): "model.onnx",
    ("openvino", "int8"): "openvino-int8.xml",
    ("openvino", "bf16"): "model.onnx",  # the float32 graph, computed in bfloat16 where the CPU has it
    ("openvino", "int8-query"): "model.onnx",  # documents: the float32 graph; queries: QUERY_GRAPH_FILES
}
# (encoder, quantize) -> the static-shape graph its queries run, when they have their own
QUERY_GRAPH_FILES: dict[tuple[str, str | None], str] = {("openvino", "int8-query"): "openvino-int8-query.xml"}
EXTRA_FILES = {"openvino-int8.xml": ("openvino-int8.bin",), "openvino-int8-query.xml": ("openvino-int8-query.bin",)}
# the query graph keeps these MatMuls unquantized: the first and last EDGE_LAYERS layers, every FFN down projection
# (its input is the widest and has the largest outliers) and the products of two activations (attention scores and
# attention x values); its float parts are computed in bfloat16 where the CPU has it
EDGE_LAYERS = 2
EXTRAS = {"onnx": "onnx", "openvino": "openvino"}


def check_encoder(encoder: str, quantize: str | None = None) -> tuple[str, str | None]:
    """Validate an encoder name and a quantization; returns them normalised.

    Parameters
    ----------
    encoder : str
        ``"torch"`` (pylate as is), ``"onnx"`` (ONNX Runtime) or ``"openvino"``.
    quantize : str, optional
        ``None`` (float32), ``"int8"`` (int8 weights), ``"bf16"`` (bfloat16 compute) or ``"int8-query"`` (queries
        through a static int8 graph, documents float32), with ``"openvino"`` only.

    Returns
    -------
    tuple[str, str | None]
        ``(encoder, quantize)``.

    Examples
    --------
    >>> check_encoder("OpenVINO", "int8")
    ('openvino', 'int8')
    >>> check_encoder("tensorrt")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: unknown encoder 'tensorrt'; choose one of torch, onnx, openvino
    """
    name = encoder.lower() if isinstance(encoder, str) else encoder
    if name not in ENCODERS:
        raise InvalidArgumentError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    level = quantize.lower() if isinstance(quantize, str) else quantize
    if level in ("", "none", "fp32", "float32"):
        level = None
    if level not in QUANTIZATIONS:
        raise InvalidArgumentError(
            f"unknown quantization {quantize!r}; choose int8, bf16 or int8-query, or leave it out (float32)"
        )
    if name != "openvino" and level is not None:
        why = (
            "ONNX Runtime's int8 is out of the quality budget (top-10 agreement 0.85 < 0.95, docs/benchmarks.md)"
            if level == "int8"
            else "bfloat16 compute is OpenVINO's"
            if level == "bf16"
            else "the static int8 query graph is OpenVINO's"
        )
        raise InvalidArgumentError(f"quantize={level!r} (--quantize) needs encoder 'openvino', not {name!r}: {why}")
    return name, level


def require_runtime(encoder: str):
    """Import the runtime of ``encoder`` (``onnxruntime`` or ``openvino``) with a one-line error naming the extra."""
    module = "onnxruntime" if encoder == "onnx" else "openvino"
    try:
        return __import__(module)
    except ImportError as exc:
        raise InvalidArgumentError(
            f"encoder {encoder!r} needs {module}: pip install 'colbert-az-pylate[{EXTRAS[encoder]}]'"
        ) from exc


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ExportRecord:
    """What ``encoders/export.json`` records: the weights the graphs came from and every graph file.

    Parameters
    ----------
    fingerprint : str
        :meth:`ModelSignature.of_model <colbert_az_pylate.signature.ModelSignature.of_model>`'s fingerprint of the
        weights, tokenizer and settings the graphs were exported from.
    inputs : list[str]
        The graph inputs, in order (``input_ids``, ``attention_mask`` and, for BERT, ``token_type_ids``).
    files : dict
        File name (relative to the export folder) -> ``{"bytes": size, "sha256": hex}``.
    graphs : dict
        ``"onnx"`` (float32, both runtimes), ``"openvino-int8"`` and ``"openvino-int8-query"`` -> the file each runs.
    versions : dict
        Library versions the export was made with (informative).
    signature_version : int
        How ``fingerprint`` was computed (a record without one is version 1, which hashed no transformer layer).

    Examples
    --------
    >>> record = ExportRecord("ab12", ["input_ids", "attention_mask"])
    >>> ExportRecord.from_dict(record.to_dict()) == record
    True
    """

    fingerprint: str
    inputs: list[str]
    files: dict[str, dict] = field(default_factory=dict)
    graphs: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    signature_version: int = SIGNATURE_VERSION

    def to_dict(self) -> dict:
        """The record as the JSON object written to ``export.json``."""
        return {
            "format": RECORD_FORMAT,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "files": self.files,
            "graphs": self.graphs,
            "versions": self.versions,
            "signature_version": self.signature_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ExportRecord:
        """A record read back from ``export.json`` (see the class example)."""
        fields = (data["fingerprint"], list(data["inputs"]), data["files"], data["graphs"], data.get("versions", {}))
        return cls(*fields, int(data.get("signature_version", 1)))


def graph_key(encoder: str, quantize: str | None) -> str:
    """The name of the graph that encodes documents in the record: ``"onnx"`` (the float32 graph: both runtimes,
    bf16 and int8-query too) or ``"openvino-int8"``.

    Examples
    --------
    >>> graph_key("openvino", None), graph_key("openvino", "int8"), graph_key("openvino", "int8-query")
    ('onnx', 'openvino-int8', 'onnx')
    """
    return f"{encoder}-{quantize}" if quantize == "int8" else "onnx"


def query_graph_key(encoder: str, quantize: str | None) -> str | None:
    """The name of the static query graph in the record, ``None`` when queries run the document graph.

    Examples
    --------
    >>> query_graph_key("openvino", "int8-query"), query_graph_key("openvino", "int8")
    ('openvino-int8-query', None)
    """
    return f"{encoder}-{quantize}" if (encoder, quantize) in QUERY_GRAPH_FILES else None


def record_keys(encoder: str, quantize: str | None) -> list[tuple[str, str]]:
    """Every graph ``(encoder, quantize)`` runs, as ``(record key, file)``: the document graph first, then the query
    graph if it has one.

    Examples
    --------
    >>> record_keys("openvino", "int8-query")
    [('onnx', 'model.onnx'), ('openvino-int8-query', 'openvino-int8-query.xml')]
    """
    keys = [(graph_key(encoder, quantize), GRAPH_FILES[(encoder, quantize)])]
    if (encoder, quantize) in QUERY_GRAPH_FILES:
        keys.append((query_graph_key(encoder, quantize), QUERY_GRAPH_FILES[(encoder, quantize)]))
    return keys


def export_folder(model_folder: str | Path) -> Path:
    """Where the exported graphs of a converted folder live: ``<model_folder>/encoders``."""
    return Path(model_folder) / EXPORT_FOLDER


def read_export_record(model_folder: str | Path) -> ExportRecord | None:
    """The export record of a converted folder; ``None`` when it has none.

    Parameters
    ----------
    model_folder : str or Path
        A converted folder.

    Returns
    -------
    ExportRecord or None
        The record, or ``None`` when nothing was exported.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     read_export_record(tmp) is None
    True
    """
    path = export_folder(model_folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {RECORD_FORMAT}")
        return ExportRecord.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path} is unreadable ({first_line(exc)}); export again with `colbert-az export {model_folder} ...`"
        ) from exc


def _write_record(folder: Path, record: ExportRecord) -> None:
    atomic_write(folder / RECORD_FILE, json.dumps(record.to_dict(), indent=1))


def graph_inputs(model) -> list[str]:
    """The backbone inputs that pylate's tokenization produces for ``model`` (a pylate ColBERT), in order."""
    features = model.tokenize(["a"], is_query=False)
    accepted = getattr(model[0], "model_forward_params", None) or INPUT_NAMES
    return [name for name in INPUT_NAMES if name in features and name in accepted]


class _HiddenStates(torch.nn.Module):
    """The backbone as a positional function of its inputs, returning the last hidden states."""

    def __init__(self, backbone: torch.nn.Module, inputs: list[str]) -> None:
        super().__init__()
        self.backbone, self.inputs = backbone, inputs

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.backbone(**dict(zip(self.inputs, tensors, strict=True)), return_dict=True).last_hidden_state


def _sample_features(model, inputs: list[str]) -> tuple[torch.Tensor, ...]:
    """A padded batch of two documents, one at the full document length, to trace the graph with."""
    long_text = " ".join(["Bakı Azərbaycanın paytaxtıdır və Xəzər dənizinin sahilində yerləşir."] * 60)
    features = model.tokenize([long_text, "Şəki xan sarayı"], is_query=False)
    return tuple(features[name] for name in inputs)


def export_onnx(model, path: Path) -> list[str]:
    """Write the backbone of a pylate ColBERT to ``path`` as a float32 ONNX graph; returns its input names.

    Dynamic batch and sequence axes; the TorchScript exporter (``dynamo=False``), which reproduces ModernBERT's
    local/global attention masks for every length (checked by :func:`colbert_az_pylate.encoders.verify_encoder`).
    """
    inputs = graph_inputs(model)
    backbone = model[0].auto_model.eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "last_hidden_state"]}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _HiddenStates(backbone, inputs).eval(),
            _sample_features(model, inputs),
            str(path),
            input_names=inputs,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return inputs


def compress_openvino_int8(source: Path, target: Path) -> None:
    """int8 weights for OpenVINO: NNCF weight compression (per output channel, asymmetric) of every MatMul and the
    embedding table; activations stay float32. Needs no calibration data."""
    openvino = require_runtime("openvino")
    nncf = _quiet_nncf()
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # nncf draws its progress bar on stdout (`--json` is JSON only)
        graph = nncf.compress_weights(
            openvino.Core().read_model(str(source)), mode=nncf.CompressWeightsMode.INT8_ASYM
        )
    openvino.save_model(graph, str(target), compress_to_fp16=False)


def _quiet_nncf():
    """nncf imported with its log and torch's CUDA probe warning silenced; a one-line error when it is missing."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError as exc:
        raise InvalidArgumentError(
            "int8 for encoder 'openvino' needs nncf: pip install 'colbert-az-pylate[openvino]'"
        ) from exc
    logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf


def static_query_graph(source: Path, inputs: list[str], query_length: int):
    """The float32 graph at the query's shape, as an OpenVINO model: ``[batch, query_length]`` inputs and the
    attention mask folded to ones (pylate's query expansion attends to every query token), so OpenVINO folds the
    mask, position and shape arithmetic into constants.

    Parameters
    ----------
    source : Path
        The float32 ONNX graph (``model.onnx``).
    inputs : list[str]
        Its inputs as recorded (``attention_mask`` among them).
    query_length : int
        pylate's ``query_length`` (32 for colbert-az).

    Returns
    -------
    openvino.Model
        Inputs: ``inputs`` without ``attention_mask``; the batch stays dynamic.
    """
    openvino = require_runtime("openvino")
    from openvino import opset13

    graph = openvino.Core().read_model(str(source))
    parameters = {parameter.get_friendly_name(): parameter for parameter in graph.get_parameters()}
    if "attention_mask" in parameters:
        ones = opset13.broadcast(opset13.constant(np.int64(1)), opset13.shape_of(parameters["input_ids"]))
        parameters["attention_mask"].output(0).replace(ones.output(0))
        graph.remove_parameter(parameters["attention_mask"])
    graph.reshape({name: [-1, query_length] for name in inputs if name != "attention_mask" and name in parameters})
    graph.validate_nodes_and_infer_types()
    return graph


def query_graph_scope(graph, intermediate_size: int, edge_layers: int = EDGE_LAYERS) -> list[str]:
    """The MatMuls of ``graph`` the int8 query graph leaves unquantized (see :data:`EDGE_LAYERS`; fewer edge layers
    when the model has fewer than ``2 * edge_layers + 1`` layers, so that one stays quantized).

    The FFN down projections are the MatMuls whose constant weight has ``intermediate_size`` input rows; the layer of
    a MatMul is read from its name (``layer.3/``, ``layers.3/``: the names torch's exporter gives). Names only, so
    the scope is found in any graph built from the same ONNX file.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = Path(tmp) / "model"
    ...     _ = convert(build_checkpoint(Path(tmp) / "raw"), folder, verify=False)
    ...     _ = export_encoder(folder, "onnx")
    ...     graph = static_query_graph(folder / "encoders" / "model.onnx", ["input_ids", "attention_mask"], 32)
    ...     scope = query_graph_scope(graph, intermediate_size=64)
    >>> len(scope) > 0 and all("MatMul" in name for name in scope)
    True
    """
    import re

    matmuls = [op for op in graph.get_ordered_ops() if op.get_type_name() == "MatMul"]

    def layer(op) -> int | None:
        found = re.search(r"layers?[._](\d+)[/.]", op.get_friendly_name())
        return int(found.group(1)) if found else None

    def is_weight(port) -> bool:
        node = port.get_source_output().get_node()
        while node.get_type_name() in ("Convert", "Transpose", "Reshape") and node.inputs():
            node = node.input(0).get_source_output().get_node()
        return node.get_type_name() == "Constant"

    layers = sorted({n for n in map(layer, matmuls) if n is not None})
    edge_layers = min(edge_layers, (len(layers) - 1) // 2)  # a model of few layers keeps some quantized
    edges = set(layers[:edge_layers] + layers[-edge_layers:]) if edge_layers > 0 else set()
    scope = []
    for op in matmuls:
        weights = [port for port in op.inputs() if is_weight(port)]
        down = any(
            port.get_partial_shape().is_static and int(port.get_partial_shape().to_shape()[0]) == intermediate_size
            for port in weights
        )
        if down or not weights or layer(op) in edges:
            scope.append(op.get_friendly_name())
    return scope


def calibration_texts() -> list[str]:
    """The texts the int8 query graph is calibrated on, all shipped in the package: the probe sentences, the demo's
    sample queries, and the demo corpus (each title, text and sentence). No user text reaches the graph.

    Examples
    --------
    >>> texts = calibration_texts()
    >>> len(texts) > 200 and "Azərbaycanın paytaxtı hansı şəhərdir?" in texts
    True
    """
    from colbert_az_pylate.conversion.probes import packaged_probe_texts
    from colbert_az_pylate.retrieval.corpus import SAMPLE_QUERIES, demo_corpus_path

    texts = [*packaged_probe_texts()[:-1], *SAMPLE_QUERIES]  # not the joined text: a query keeps 32 tokens of it
    for line in demo_corpus_path().read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts += [row.get("title", ""), row["text"]]
            texts += [part.strip() + "." for part in row["text"].split(".") if len(part.strip()) > 10]
    return [text for text in texts if text]


def quantize_query_graph(model, source: Path, target: Path, inputs: list[str]) -> None:
    """The int8 query graph: :func:`static_query_graph` quantized by NNCF (int8 weights and activations, transformer
    preset, SmoothQuant), calibrated on :func:`calibration_texts` tokenized as pylate tokenizes queries, the MatMuls
    of :func:`query_graph_scope` left unquantized; written to ``target`` (``.xml`` and ``.bin``)."""
    openvino = require_runtime("openvino")
    nncf = _quiet_nncf()
    import io

    graph = static_query_graph(source, inputs, model.query_length)
    fed = [name for name in inputs if name != "attention_mask"]
    samples = []
    for text in calibration_texts():
        features = model.tokenize([text], is_query=True)
        samples.append({name: features[name].numpy().astype(np.int64) for name in fed})
    config = model[0].auto_model.config
    scope = query_graph_scope(graph, int(config.intermediate_size))
    with contextlib.redirect_stdout(io.StringIO()):  # nncf draws its progress bar on stdout
        quantized = nncf.quantize(
            graph,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
            ignored_scope=nncf.IgnoredScope(names=scope, validate=False),
        )
    openvino.save_model(quantized, str(target), compress_to_fp16=False)


def _versions() -> dict[str, str]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for module in ("onnxruntime", "openvino", "nncf"):  # the ones this export used (already imported)
        version = getattr(sys.modules.get(module), "__version__", None)
        if version:
            versions[module] = str(version)
    return versions


def _file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def export_encoder(
    model_folder: str | Path,
    encoder: str = "onnx",
    quantize: str | None = None,
    *,
    model=None,
    on_step: Callable[[str], None] | None = None,
) -> ExportRecord:
    """Export a converted folder's backbone for ``encoder`` (and ``quantize``), beside its pylate files.

    Idempotent: a graph already exported from the same weights is kept; one exported from other weights is
    replaced. Files are written under temporary names and the record last, so an interrupted export leaves the
    folder as it was.

    Parameters
    ----------
    model_folder : str or Path
        A converted folder (``colbert-az convert``'s output).
    encoder : str, default "onnx"
        ``"onnx"`` or ``"openvino"`` (both run the same float32 graph).
    quantize : str, optional
        ``"int8"`` (with ``"openvino"``) also writes the int8-weight graph; ``"bf16"`` needs only the float32 one.
    model : pylate.models.ColBERT, optional
        The folder's model already loaded with torch (saves loading it again).
    on_step : callable, optional
        Called with a short message at each step.

    Returns
    -------
    ExportRecord
        The updated record.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = convert(build_checkpoint(Path(tmp) / "raw"), Path(tmp) / "model", verify=False)
    ...     record = export_encoder(Path(tmp) / "model", "onnx")
    ...     files = sorted(p.name for p in (Path(tmp) / "model" / "encoders").iterdir() if p.name[0] != ".")
    ...     sorted(record.graphs), files
    (['onnx'], ['export.json', 'model.onnx'])
    """
    from colbert_az_pylate.conversion.checkpoint import is_converted, open_converted

    encoder, quantize = _check_exportable(encoder, quantize)
    step = on_step or (lambda message: None)
    folder = Path(os.path.abspath(Path(model_folder).expanduser()))
    if not folder.is_dir() or not is_converted(folder):
        raise InvalidArgumentError(
            f"{model_folder} is not a converted folder; convert it first (`colbert-az convert SOURCE OUTPUT`) "
            "or export into an OUTPUT folder"
        )
    target = export_folder(folder)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} is a file; remove it to export")
    if model is None:
        step(f"loading {folder}")
        model = open_converted(folder, device="cpu")
    fingerprint = ModelSignature.of_model(model).fingerprint
    target.mkdir(exist_ok=True)
    with exclusive_lock(target / LOCK_FILE):  # processes exporting at once (serve --workers) take turns
        return _export_locked(model, folder, target, fingerprint, encoder, quantize, step)


def _export_locked(model, folder: Path, target: Path, fingerprint: str, encoder, quantize, step) -> ExportRecord:
    record = read_export_record(folder) if (target / RECORD_FILE).is_file() else None
    if record is None or record.fingerprint != fingerprint or record.signature_version != SIGNATURE_VERSION:
        record = ExportRecord(fingerprint, graph_inputs(model))
    staging = target / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        wanted = dict([("onnx", GRAPH_FILES[("onnx", None)]), *record_keys(encoder, quantize)])
        for key, name in wanted.items():
            if key in record.graphs and graph_problem(target, record, name) is None:
                continue
            step(f"exporting {key} graph ({name})")
            if key == "onnx":
                export_onnx(model, staging / name)
                if (staging / "model.onnx.data").exists():  # an external-data graph (over 2 GB) is not expected
                    raise CheckpointError("the exported graph needs external data; this model is too large")
            elif key == query_graph_key(encoder, quantize):
                quantize_query_graph(model, target / GRAPH_FILES[("onnx", None)], staging / name, record.inputs)
            else:
                compress_openvino_int8(target / GRAPH_FILES[("onnx", None)], staging / name)
            names = [name, *EXTRA_FILES.get(name, ())]
            for file_name in names:
                replace_synced(staging / file_name, target / file_name)
                record.files[file_name] = _file_entry(target / file_name)
            record.graphs[key] = name
            record.versions = _versions()
            _write_record(target, record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def graph_problem(target: Path, record: ExportRecord, name: str, check_hashes: bool = False) -> str | None:
    """What is wrong with a recorded graph and its companion files in ``target``: missing, another size than
    recorded (truncated or replaced) or, with ``check_hashes``, another SHA-256 (altered); ``None`` when intact."""
    for file_name in (name, *EXTRA_FILES.get(name, ())):
        path, entry = target / file_name, record.files.get(file_name) or {}
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != entry.get("bytes"):
            return f"{path} has {size} bytes, the export recorded {entry.get('bytes')} (truncated or replaced)"
        if check_hashes and sha256_of(path) != entry.get("sha256"):
            return f"{path} does not match its recorded SHA-256 (altered)"
    return None


def _check_exportable(encoder: str, quantize: str | None) -> tuple[str, str | None]:
    """The encoder and quantization of an export, checked, with the runtime it needs importable."""
    encoder, quantize = check_encoder(encoder, quantize)
    if encoder == "torch":
        raise InvalidArgumentError("encoder 'torch' is pylate itself and needs no export; choose onnx or openvino")
    require_runtime(encoder)
    return encoder, quantize


def export_model(
    source: str | Path,
    output: str | Path | None = None,
    encoder: str = "onnx",
    quantize: str | None = None,
    *,
    overwrite: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> tuple[Path, ExportRecord]:
    """``colbert-az export``: the exported graphs beside the pylate files, in place or in a new folder.

    Parameters
    ----------
    source : str or Path
        A converted folder, a raw colbert-az checkpoint (folder or hub id, converted and verified into ``output``)
        or the hub id of a converted model.
    output : str or Path, optional
        Where to write: a new folder holding the pylate files plus ``encoders/`` (it must not exist unless
        ``overwrite``); by default (or when it is ``source`` itself) the graphs are added to ``source``.
    encoder, quantize : str
        As for :func:`export_encoder`.
    overwrite : bool, default False
        Replace an existing ``output`` (a model folder; swapped in only when complete).
    on_step : callable, optional
        Called with a short message at each step.

    Returns
    -------
    tuple[Path, ExportRecord]
        The folder written and its export record.

    Examples
    --------
    >>> import tempfile
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder, record = export_model(build_checkpoint(Path(tmp) / "raw"), Path(tmp) / "model-onnx")
    ...     sorted(p.name for p in folder.iterdir() if p.name in ("modules.json", "encoders", "projection.pt"))
    ['encoders', 'modules.json', 'projection.pt']
    """
    from colbert_az_pylate.conversion.checkpoint import is_converted, resolve_source
    from colbert_az_pylate.conversion.converter import _check_replaceable, convert
    from colbert_az_pylate.conversion.staging import remove_stale_staging, retired_name, staging_folder

    encoder, quantize = _check_exportable(encoder, quantize)
    folder = resolve_source(source)
    target = folder if output is None else Path(os.path.abspath(Path(output).expanduser()))
    if target != folder:
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
        if folder in target.parents:
            raise OutputExistsError(f"{target} lies inside the source {folder}; choose another output folder")
        if is_converted(folder):
            if target.exists():
                _check_replaceable(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(target.parent)
            staged = staging_folder(target)
            try:
                skip = shutil.ignore_patterns(EXPORT_FOLDER, ".*")
                mode = staged.stat().st_mode & 0o7777  # the umask's, not the source folder's (copytree copies that)
                shutil.copytree(folder, staged, ignore=skip, dirs_exist_ok=True)
                staged.chmod(mode)
                replace_folder(staged, target, retired_name(target))
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        else:
            convert(source, target, overwrite=overwrite, on_step=on_step)
    return target, export_encoder(target, encoder, quantize, on_step=on_step)
