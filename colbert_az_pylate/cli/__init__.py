"""The ``colbert-az`` command: convert, verify, export, evaluate, rerank, train, encode, index, search, demo,
serve.

Human summaries by default, ``--json`` for machines; progress goes to stderr. Exit codes: 0 success, 1 parity
failed, 2 bad input or the system's refusal (one ``error:`` line saying what is wrong and what to do: a read-only
folder, a full disk, an output under a file, a port in use), 3 internal error (one line;
``COLBERT_AZ_DEBUG=1`` shows the traceback), 130 interrupted (Ctrl-C; nothing half-written is kept).
Only the command that runs imports torch, so ``--help`` and argument errors are instant.

One module per command group, each with its commands and an ``add_parser(commands)`` adding their parsers:
:mod:`~colbert_az_pylate.cli.model` (convert, verify, export), :mod:`~colbert_az_pylate.cli.index` (index, encode,
search), :mod:`~colbert_az_pylate.cli.demo` (demo, standin), :mod:`~colbert_az_pylate.cli.evaluate` (evaluate,
rerank), :mod:`~colbert_az_pylate.cli.train` and :mod:`~colbert_az_pylate.cli.serve`; what several share is in
:mod:`~colbert_az_pylate.cli.common`, and :mod:`~colbert_az_pylate.cli.dispatcher` builds the parser and runs the
chosen command.
"""

from colbert_az_pylate.cli.common import (
    DEBUG_ENV,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PARITY_FAILED,
)
from colbert_az_pylate.cli.dispatcher import OneLineErrorParser, build_parser, main

__all__ = [
    "DEBUG_ENV",
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_PARITY_FAILED",
    "OneLineErrorParser",
    "build_parser",
    "main",
]
