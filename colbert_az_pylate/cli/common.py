"""What several ``colbert-az`` commands share: the exit codes, the ``--encoder``/``--quantize`` arguments (one
definition for ``encode``, ``index``, ``search``, ``serve`` …), progress lines on stderr and the Markdown table.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_encoder_arguments(parser)
>>> parser.parse_args(["--encoder", "openvino", "--quantize", "int8"]).quantize
'int8'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from colbert_az_pylate.retrieval.backends import SEARCH_MODES  # light: the registry imports nothing heavy

__all__ = [
    "DEBUG_ENV",
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_PARITY_FAILED",
    "add_encoder_arguments",
    "markdown_table",
    "progress",
]

EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
DEBUG_ENV = "COLBERT_AZ_DEBUG"


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


def progress(enabled: bool) -> Callable[[str], None]:
    """A ``step(message)`` that prints ``… message`` to stderr when ``enabled`` (not with ``--json``).

    >>> progress(False)("nothing is printed")
    """

    def step(message: str) -> None:
        if enabled:
            print(f"… {message}", file=sys.stderr, flush=True)

    return step


def markdown_table(rows: list[dict]) -> str:
    """``rows`` (dicts with the same keys) as a Markdown table; floats with four decimals.

    >>> print(markdown_table([{"model": "m", "ndcg@10": 0.5}]))
    | model | ndcg@10 |
    |---|---|
    | m | 0.5000 |
    """
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{value:.4f}" if isinstance(value, float) else str(value) for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_mode_arguments(parser: argparse.ArgumentParser, what: str, candidates: bool = True) -> None:
    """``--mode`` (one of the search modes) and ``--candidates`` (how deep BM25 ranks before a rerank or fusion)."""
    parser.add_argument("--mode", choices=SEARCH_MODES, default=None, help=what)
    if candidates:
        parser.add_argument(
            "--candidates",
            type=int,
            default=100,
            metavar="N",
            help="how deep BM25 (and for fusion, MaxSim) ranks before the rerank or the fusion (default: 100)",
        )
