"""Command-line arguments shared by several commands (``colbert-az encode``, ``index``, ``search``, ``serve`` …):
one definition, imported by the main parser and by the serve command's parser alike.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_encoder_arguments(parser)
>>> parser.parse_args(["--encoder", "openvino", "--quantize", "int8"]).quantize
'int8'
"""

from __future__ import annotations

import argparse

__all__ = ["add_encoder_arguments"]


def add_encoder_arguments(parser: argparse.ArgumentParser, what: str = "what runs the model's backbone") -> None:
    """``--encoder``/``--quantize`` (see :func:`colbert_az_pylate.load`), the same on every command that encodes."""
    parser.add_argument(
        "--encoder",
        default="torch",
        choices=["torch", "onnx", "openvino"],
        help=f"{what}: torch (pylate as is, default), onnx (ONNX Runtime) or openvino; exported once if needed",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8", "bf16", "int8-query"],
        help="int8 weights, bfloat16 compute or int8-query (queries through a static int8 graph, documents float32) "
        "(--encoder openvino; faster, see the README for the cost)",
    )
