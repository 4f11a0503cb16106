"""Writing the exported graphs of a pylate ColBERT's backbone: the float32 ONNX graph, OpenVINO's int8-weight
graph and the static int8 query graph (see :mod:`~colbert_az_pylate.encoders.export` for what each is for).

Each function writes one graph to the path it is given; staging and the record are
:mod:`~colbert_az_pylate.encoders.export`'s. ``openvino`` and ``nncf`` are optional extras, imported when used.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from colbert_az_pylate.encoders.records import require_runtime
from colbert_az_pylate.errors import InvalidArgumentError

__all__ = [
    "EDGE_LAYERS",
    "INPUT_NAMES",
    "ONNX_OPSET",
    "calibration_texts",
    "compress_openvino_int8",
    "export_onnx",
    "graph_inputs",
    "quantize_query_graph",
    "query_graph_scope",
    "static_query_graph",
]

ONNX_OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# the query graph keeps these MatMuls unquantized: the first and last EDGE_LAYERS layers, every FFN down projection
# (its input is the widest and has the largest outliers) and the products of two activations (attention scores and
# attention x values); its float parts are computed in bfloat16 where the CPU has it
EDGE_LAYERS = 2


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
        graph = nncf.compress_weights(openvino.Core().read_model(str(source)), mode=nncf.CompressWeightsMode.INT8_ASYM)
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
    >>> from colbert_az_pylate.encoders import export_encoder
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
    from colbert_az_pylate.packaged import SAMPLE_QUERIES, demo_corpus_path

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
