"""The bookkeeping of an export: which encoders and quantizations exist, the graph files each runs in
``<model>/encoders/``, and the record ``encoders/export.json`` that lists them with their sizes and SHA-256.

The graphs themselves are written by :mod:`~colbert_az_pylate.encoders.graphs`, and
:mod:`~colbert_az_pylate.encoders.export` stages them into the folder and updates the record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from colbert_az_pylate.errors import CheckpointError, InvalidArgumentError, first_line
from colbert_az_pylate.files import atomic_write
from colbert_az_pylate.signature import SIGNATURE_VERSION

__all__ = [
    "ENCODERS",
    "EXPORT_FOLDER",
    "EXTRA_FILES",
    "GRAPH_FILES",
    "LOCK_FILE",
    "QUANTIZATIONS",
    "QUERY_GRAPH_FILES",
    "RECORD_FILE",
    "ExportRecord",
    "check_encoder",
    "export_folder",
    "file_entry",
    "graph_key",
    "graph_problem",
    "query_graph_key",
    "read_export_record",
    "record_keys",
    "require_runtime",
    "sha256_of",
    "write_record",
]

ENCODERS = ("torch", "onnx", "openvino")
QUANTIZATIONS = (None, "int8", "bf16", "int8-query")
EXPORT_FOLDER = "encoders"
RECORD_FILE = "export.json"
LOCK_FILE = ".lock"
RECORD_FORMAT = 1

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
    written : list[str]
        The graph files (companion ``.bin`` files included) that the export call returning this record wrote, in
        order: empty when every graph asked for was already there. Not stored in ``export.json`` (a record read
        back has none) and not compared.

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
    written: list[str] = field(default_factory=list, compare=False)

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


def write_record(folder: Path, record: ExportRecord) -> None:
    """Write ``record`` as ``folder/export.json`` (atomically: a reader sees the old record or the new one)."""
    atomic_write(folder / RECORD_FILE, json.dumps(record.to_dict(), indent=1))


def file_entry(path: Path) -> dict:
    """What the record keeps of a graph file: ``{"bytes": size, "sha256": hex}``."""
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


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
