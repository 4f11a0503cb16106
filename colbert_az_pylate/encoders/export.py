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

This module stages the graphs into the folder and keeps the record; the graphs are written by
:mod:`~colbert_az_pylate.encoders.graphs` and the record's bookkeeping is :mod:`~colbert_az_pylate.encoders.records`
(their names stay importable from here).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from colbert_az_pylate.encoders.graphs import (
    EDGE_LAYERS,
    INPUT_NAMES,
    ONNX_OPSET,
    calibration_texts,
    compress_openvino_int8,
    export_onnx,
    graph_inputs,
    quantize_query_graph,
    query_graph_scope,
    static_query_graph,
)
from colbert_az_pylate.encoders.records import (
    ENCODERS,
    EXPORT_FOLDER,
    EXTRA_FILES,
    GRAPH_FILES,
    LOCK_FILE,
    QUANTIZATIONS,
    QUERY_GRAPH_FILES,
    RECORD_FILE,
    ExportRecord,
    check_encoder,
    export_folder,
    file_entry,
    graph_key,
    graph_problem,
    query_graph_key,
    read_export_record,
    record_keys,
    require_runtime,
    sha256_of,
    write_record,
)
from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError, OutputExistsError
from colbert_az_pylate.files import exclusive_lock, replace_folder, replace_synced
from colbert_az_pylate.signature import SIGNATURE_VERSION, ModelSignature

__all__ = [  # this module's own functions, and the names of records and graphs it has always offered
    "EDGE_LAYERS",
    "ENCODERS",
    "EXPORT_FOLDER",
    "EXTRA_FILES",
    "GRAPH_FILES",
    "INPUT_NAMES",
    "LOCK_FILE",
    "ONNX_OPSET",
    "QUANTIZATIONS",
    "QUERY_GRAPH_FILES",
    "RECORD_FILE",
    "ExportRecord",
    "calibration_texts",
    "check_encoder",
    "compress_openvino_int8",
    "export_encoder",
    "export_folder",
    "export_model",
    "export_onnx",
    "graph_inputs",
    "graph_key",
    "graph_problem",
    "quantize_query_graph",
    "query_graph_key",
    "query_graph_scope",
    "read_export_record",
    "record_keys",
    "require_runtime",
    "sha256_of",
    "static_query_graph",
]


def _versions() -> dict[str, str]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for module in ("onnxruntime", "openvino", "nncf"):  # the ones this export used (already imported)
        version = getattr(sys.modules.get(module), "__version__", None)
        if version:
            versions[module] = str(version)
    return versions


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
        The updated record; its ``written`` lists exactly the graph files this call wrote (none when every graph
        asked for was already exported from the same weights).

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
    record.written = []  # this call's files only: a graph kept from an earlier export is not listed
    for left in target.glob(".staging-*"):  # an export killed mid-way (we hold the lock: none is running)
        shutil.rmtree(left, ignore_errors=True)
    staging = target / f".staging-{os.getpid()}"
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
                record.files[file_name] = file_entry(target / file_name)
                record.written.append(file_name)
            record.graphs[key] = name
            record.versions = _versions()
            write_record(target, record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


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
        The folder written and its export record (``record.written``: the graph files this call wrote; the record's
        ``graphs`` also lists those of earlier exports).

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
