"""The ``colbert-az`` dispatcher: one parser built from every command group's ``add_parser``, the chosen command
run, and every error turned into its exit code (see :mod:`colbert_az_pylate.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from colbert_az_pylate.cli import demo, evaluate, index, model, serve, train
from colbert_az_pylate.cli.common import (
    DEBUG_ENV,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PARITY_FAILED,
)
from colbert_az_pylate.console import quiet_third_party
from colbert_az_pylate.errors import (
    ColbertAzError,
    InvalidArgumentError,
    ParityError,
    first_line,
    system_condition,
)

COMMAND_GROUPS = (model, index, demo, evaluate, train, serve)  # in this order in `colbert-az --help`


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line naming the command and where to read its usage (exit 2),
    like every other bad input."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """The ``colbert-az`` parser: each command group adds its sub-commands."""
    parser = OneLineErrorParser(
        prog="colbert-az",
        description="LocalDoc/colbert-az as an exact pylate model: convert, verify, evaluate, index, search, train.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser)
    for group in COMMAND_GROUPS:
        group.add_parser(commands)
    return parser


def _check_quantize(args: argparse.Namespace) -> None:
    """``--quantize`` needs an exported encoder: refused, not ignored, on torch (every command that has both)."""
    if getattr(args, "quantize", None) and getattr(args, "encoder", None) == "torch":
        raise InvalidArgumentError(
            f"--quantize {args.quantize} needs --encoder openvino (--encoder onnx runs float32 only); "
            "without --encoder, torch runs float32 as is"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``colbert-az`` command; returns its exit code (see :mod:`colbert_az_pylate.cli`)."""
    try:
        args = build_parser().parse_args(argv)
        _check_quantize(args)
        quiet_third_party()
        return args.handler(args)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARITY_FAILED
    except ColbertAzError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `colbert-az search … | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        situation = system_condition(exc)  # a read-only folder, a full disk, a port in use: not our bug
        if situation is not None:
            print(f"error: {situation}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(
            f"internal error: {type(exc).__name__}: {first_line(exc)} "
            f"(a bug in colbert-az-pylate; rerun with {DEBUG_ENV}=1 for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
