"""Run an exported backbone inside pylate's own ``ColBERT.encode``.

:func:`use_exported_encoder` replaces the transformer of a loaded pylate ColBERT (``model[0].auto_model``) by an
:class:`ExportedBackbone` that runs the exported graph with ONNX Runtime or OpenVINO — the way
sentence-transformers' ONNX/OpenVINO backends replace ``auto_model`` of its ``Transformer`` module. Everything
else stays pylate's code: tokenization, the [Q]/[D] markers, query expansion, truncation, the projection
(pylate's ``Dense``), the skiplist, normalisation, length-sorted batching.
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from colbert_az_pylate.encoders.export import export_encoder
from colbert_az_pylate.encoders.records import (
    ExportRecord,
    check_encoder,
    export_folder,
    graph_problem,
    read_export_record,
    record_keys,
    require_runtime,
)
from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError, first_line
from colbert_az_pylate.signature import SIGNATURE_VERSION, BackboneDigest, ModelSignature, backbone_digest

WARM_UP_TEXT = "Azərbaycanın paytaxtı hansı şəhərdir?"
PRECISIONS = {
    None: "float32",
    "int8": "int8 weights",
    "bf16": "bfloat16",
    "int8-query": "queries: static int8 graph, documents: float32",
}
BF16_UNAVAILABLE = "float32 (bf16 asked for; this CPU has no bfloat16)"


class ExportedBackbone(torch.nn.Module):
    """A transformer backbone that runs an exported graph; called like a Hugging Face model by sentence-transformers.

    Parameters
    ----------
    run : callable
        Maps ``{input name: int64 array}`` to the last hidden states, ``(batch, tokens, hidden)`` float32.
    inputs : list[str]
        The graph's input names.
    config : transformers.PretrainedConfig
        The backbone's configuration (sentence-transformers reads it).
    digest : BackboneDigest
        :func:`~colbert_az_pylate.signature.backbone_digest` of the torch backbone it replaces: the model keeps its
        signature, so an index built with the torch model accepts it.
    description : str
        What runs, e.g. ``"openvino 2025.0, int8 weights"``.
    quantize : str, optional
        ``"int8"`` or ``"bf16"`` when the graph is not float32 (its vectors then differ from torch's beyond 1e-5).

    Examples
    --------
    >>> import numpy as np, hashlib
    >>> from transformers import BertConfig
    >>> digest = BackboneDigest("0" * 64, hashlib.sha256())
    >>> backbone = ExportedBackbone(lambda feeds: np.zeros((*feeds["input_ids"].shape, 4), np.float32),
    ...                             ["input_ids"], BertConfig(), digest, "zeros")
    >>> backbone(input_ids=torch.ones(2, 3, dtype=torch.long)).last_hidden_state.shape
    torch.Size([2, 3, 4])
    """

    def __init__(
        self, run, inputs: list[str], config, digest: BackboneDigest, description: str, quantize: str | None = None
    ) -> None:
        super().__init__()
        self._run, self.inputs, self.config = run, list(inputs), config
        self.signature_digest, self.description, self.quantize = digest, description, quantize

    def forward(self, return_dict: bool = True, **features) -> BaseModelOutput:
        feeds = {name: features[name].detach().cpu().numpy().astype(np.int64, copy=False) for name in self.inputs}
        hidden = self._run(feeds)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(np.ascontiguousarray(hidden, dtype=np.float32)))

    def get_input_embeddings(self):
        raise NotImplementedError("an exported backbone has no torch embeddings; load with encoder='torch' to train")

    def extra_repr(self) -> str:
        return self.description


def _onnx_runner(path: Path, inputs: list[str], threads: int | None, quantize: str | None = None):
    onnxruntime = require_runtime("onnx")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # Threads that sleep when idle leave the cores to the index search and to other processes (threads.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    declared = [node.name for node in session.get_inputs()]  # an unused input may have been pruned
    missing = [name for name in declared if name not in inputs]
    if missing:
        raise CheckpointError(f"{path.name} expects inputs {missing} that pylate's tokenization does not produce")

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {name: feeds[name] for name in declared})[0]

    return run, f"onnx (onnxruntime {onnxruntime.__version__})"


def _openvino_compiled(graph, hint: str, threads: int | None):
    openvino = require_runtime("openvino")
    config: dict = {"INFERENCE_PRECISION_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(graph if not isinstance(graph, Path) else str(graph), "CPU", config)
    declared = [node.get_any_name() for node in compiled.inputs]
    precision = compiled_precision(compiled)
    local = threading.local()  # an infer request serves one thread at a time

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        result = request.infer({name: feeds[name] for name in declared})
        return np.array(result[compiled.outputs[0]], copy=True)

    run.precision = precision  # what OpenVINO computes in: a CPU without bfloat16 computes a bf16 hint in f32
    return run


def compiled_precision(compiled) -> str:
    """The precision a compiled OpenVINO model computes in (``"bf16"``, ``"f32"`` …), as OpenVINO names it."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _openvino_runner(path: Path, inputs: list[str], threads: int | None, quantize: str | None = None):
    openvino = require_runtime("openvino")
    # float32 unless bf16 is asked for: on CPUs with bfloat16 OpenVINO would otherwise pick it (error ~3e-4)
    run = _openvino_compiled(path, "bf16" if quantize == "bf16" else "f32", threads)
    return run, f"openvino {openvino.__version__}"


def _openvino_query_runner(path: Path, threads: int | None):
    """The static int8 query graph compiled twice: at ``[1, query_length]`` (one query, the latency path) and with
    a dynamic batch; its unquantized MatMuls in bfloat16 where the CPU has it (float32 elsewhere)."""
    openvino = require_runtime("openvino")
    graph = openvino.Core().read_model(str(path))
    batched = _openvino_compiled(graph, "bf16", threads)
    single_graph = graph.clone()
    single_graph.reshape({node.get_any_name(): [1, node.get_partial_shape()[1]] for node in graph.inputs})
    single = _openvino_compiled(single_graph, "bf16", threads)
    return lambda feeds: (single if len(feeds["input_ids"]) == 1 else batched)(feeds)


def query_router(query_run, document_run, query_length: int, query_prefix_id: int | None):
    """Send pylate's query batches to ``query_run`` and everything else to ``document_run``.

    A batch is a query batch when it is what pylate's ``tokenize(is_query=True)`` makes with query expansion:
    ``query_length`` tokens, the [Q] marker (``query_prefix_id``) where pylate inserts it (position 1), every
    token attended to. Documents carry the [D] marker there, so they never reach the query graph.

    Examples
    --------
    >>> route = query_router(lambda f: "query", lambda f: "document", 4, 7)
    >>> ids, ones = np.array([[2, 7, 5, 5]]), np.ones((1, 4), np.int64)
    >>> route({"input_ids": ids, "attention_mask": ones}), route({"input_ids": ids + 1, "attention_mask": ones})
    ('query', 'document')
    """

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids, mask = feeds["input_ids"], feeds.get("attention_mask")
        is_query = (
            query_prefix_id is not None
            and ids.ndim == 2
            and ids.shape[1] == query_length
            and bool((ids[:, 1] == query_prefix_id).all())
            and (mask is None or bool((mask == 1).all()))
        )
        return query_run(feeds) if is_query else document_run(feeds)

    return run


def use_exported_encoder(
    model,
    model_folder: str | Path,
    encoder: str,
    quantize: str | None = None,
    *,
    threads: int | None = None,
    export: bool = True,
    warm_up: bool = True,
):
    """Make a loaded pylate ColBERT encode with an exported graph of its backbone; returns the same model.

    Parameters
    ----------
    model
        A pylate ``models.ColBERT`` loaded (with torch) from ``model_folder``.
    model_folder : str or Path
        Its converted folder, holding (or to hold) ``encoders/``.
    encoder : str
        ``"onnx"`` or ``"openvino"``.
    quantize : str, optional
        ``"int8"`` for the int8-weight graph, ``"bf16"`` for bfloat16 compute, ``"int8-query"`` for queries through
        the static int8 query graph and documents through the float32 graph (``encoder="openvino"``).
    threads : int, optional
        Intra-op threads of the runtime (default: the runtime's own choice, the physical cores).
    export : bool, default True
        Export the graph when the folder has none yet (once; kept in the folder), or when its record predates
        signature version 2 (which hashes every weight, :mod:`colbert_az_pylate.signature`). With ``False`` either
        is an error.
    warm_up : bool, default True
        Encode a query and a document once, so the first real call is not the slow one.

    Returns
    -------
    pylate.models.ColBERT
        ``model``, its ``model[0].auto_model`` now an :class:`ExportedBackbone`.

    Raises
    ------
    CheckpointError
        The export is missing or records a version-1 signature (with ``export=False`` or a read-only folder), was
        made from other weights, or a graph file is missing, truncated or altered.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert, load
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = convert(build_checkpoint(Path(tmp) / "raw"), Path(tmp) / "model", verify=False)
    ...     torch_model = load(Path(tmp) / "model", device="cpu")
    ...     reference = torch_model.encode(["Bakı"], is_query=True, show_progress_bar=False)[0]
    ...     model = use_exported_encoder(load(Path(tmp) / "model", device="cpu"), Path(tmp) / "model", "onnx")
    ...     vectors = model.encode(["Bakı"], is_query=True, show_progress_bar=False)[0]
    >>> bool(abs(vectors - reference).max() < 1e-5)
    True
    """
    encoder, quantize = check_encoder(encoder, quantize)
    if encoder == "torch":
        return model
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidArgumentError(f"threads must be a whole number >= 1, got {threads!r}")
    require_runtime(encoder)
    folder = Path(os.path.abspath(Path(model_folder).expanduser()))
    digest = backbone_digest(model[0].auto_model)  # hashed once: the exported backbone keeps it
    record = _usable_record(model, folder, encoder, quantize, digest, export)
    _attach_runtime(model, folder, record, encoder, quantize, threads, digest)
    if warm_up:
        model.encode([WARM_UP_TEXT], is_query=True, show_progress_bar=False)
        model.encode([WARM_UP_TEXT], is_query=False, show_progress_bar=False)
    return model


def _usable_record(model, folder: Path, encoder: str, quantize, digest: BackboneDigest, export: bool) -> ExportRecord:
    """The folder's export record for ``encoder``/``quantize``, its graphs intact and made from ``model``'s weights;
    exported first (when ``export`` allows) if missing or of an older signature version."""
    fingerprint = ModelSignature.of_model(model, backbone=digest).fingerprint
    record = read_export_record(folder)
    graphs = record_keys(encoder, quantize)
    if record is not None and record.signature_version != SIGNATURE_VERSION:
        # an older record did not hash the transformer layers: its graphs may come from other weights
        stale = (
            f"the export in {export_folder(folder)} records a version-{record.signature_version} signature, "
            f"which does not cover every weight; export again with `colbert-az export {folder} --encoder {encoder}`"
        )
        if not export or not os.access(folder, os.W_OK):
            raise CheckpointError(stale)
        record = None  # exported again below, as if missing
    if record is not None and record.fingerprint != fingerprint:
        raise CheckpointError(
            f"the export in {export_folder(folder)} was made from other weights (fingerprint "
            f"{record.fingerprint}, this model's is {fingerprint}); export again with "
            f"`colbert-az export {folder} --encoder {encoder}`"
        )
    missing = [key for key, _ in graphs if record is None or key not in record.graphs]
    if missing:
        if not export:
            raise CheckpointError(
                f"{folder} has no {missing[0]} export; run `colbert-az export {folder} --encoder {encoder}"
                f"{f' --quantize {quantize}' if quantize in ('int8', 'int8-query') else ''}`"
            )
        if not os.access(folder, os.W_OK):
            raise CheckpointError(
                f"{folder} has no {missing[0]} export and is not writable; export it into a writable copy with "
                f"`colbert-az export {folder} OUTPUT --encoder {encoder}`"
            )
        record = export_encoder(folder, encoder, quantize, model=model)
    for _, name in graphs:
        problem = graph_problem(export_folder(folder), record, name, check_hashes=True)
        if problem is not None:
            raise CheckpointError(f"{problem}; export again with `colbert-az export {folder} ...`")
    return record


def _attach_runtime(
    model, folder: Path, record: ExportRecord, encoder: str, quantize, threads: int | None, digest: BackboneDigest
) -> None:
    """Replace ``model[0].auto_model`` by an :class:`ExportedBackbone` running the record's graphs."""
    graphs = record_keys(encoder, quantize)
    path = export_folder(folder) / graphs[0][1]
    transformer = model[0]
    config = transformer.auto_model.config
    transformer.auto_model = None  # the torch weights go before the runtime loads its own copy: one peak, not two
    gc.collect()
    runner = _onnx_runner if encoder == "onnx" else _openvino_runner
    loading = path
    try:
        run, description = runner(path, record.inputs, threads, quantize)
        if len(graphs) > 1:
            loading = export_folder(folder) / graphs[1][1]
            marker = model.query_prefix_id if model.query_prefix_id != model.document_prefix_id else None
            run = query_router(_openvino_query_runner(loading, threads), run, model.query_length, marker)
    except (CheckpointError, InvalidArgumentError):
        raise
    except Exception as exc:  # a graph the runtime cannot read
        raise CheckpointError(f"{encoder} cannot load {loading}: {first_line(exc)[:200]}") from exc
    precision = PRECISIONS[quantize]
    if quantize == "bf16" and getattr(run, "precision", "bf16") != "bf16":
        precision = BF16_UNAVAILABLE
    transformer.auto_model = ExportedBackbone(
        run, record.inputs, config, digest, f"{description}, {precision}", quantize
    )
    transformer.auto_model.precision = precision
