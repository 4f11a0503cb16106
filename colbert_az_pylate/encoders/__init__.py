"""Fast CPU encoding: the backbone exported to ONNX, run by ONNX Runtime or OpenVINO inside pylate's ``encode``.

``colbert_az_pylate.load(path, encoder="onnx")`` (or ``encoder="openvino", quantize="int8"``) gives a pylate
ColBERT whose transformer runs the exported graph; tokenization, markers, query expansion, projection, skiplist and
normalisation stay pylate's. :func:`export_encoder` writes the graphs beside the pylate files (``colbert-az
export``); :func:`verify_encoder` measures them against the torch encoder (``colbert-az verify --encoder``). Needs
the extras ``[onnx]`` or ``[openvino]``.
"""

from colbert_az_pylate.encoders.export import ENCODERS, QUANTIZATIONS, ExportRecord, check_encoder, export_encoder
from colbert_az_pylate.encoders.parity import EncoderParityReport, verify_encoder
from colbert_az_pylate.encoders.runtime import ExportedBackbone, use_exported_encoder

__all__ = [
    "ENCODERS",
    "QUANTIZATIONS",
    "EncoderParityReport",
    "ExportRecord",
    "ExportedBackbone",
    "check_encoder",
    "export_encoder",
    "use_exported_encoder",
    "verify_encoder",
]
