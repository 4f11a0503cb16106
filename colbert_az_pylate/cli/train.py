"""The ``train`` command: fine-tune with the model card's distillation recipe, configured in YAML."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from colbert_az_pylate.cli.common import markdown_table, progress


def cmd_train(args: argparse.Namespace) -> int:
    """``colbert-az train``: run the YAML recipe; the data counts and held-out metrics as the summary."""
    from colbert_az_pylate.training.config import load_train_config, run_train_config  # torch: only when run

    config = load_train_config(args.config)
    config.overwrite = config.overwrite or args.overwrite
    # The trainer prints its log lines: to stderr, so stdout keeps the summary only; nowhere with --json.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if args.json else sys.stderr):
        data, metrics = run_train_config(config, on_step=progress(not args.json))
    summary = {"output": config.output, "data": data.summary().splitlines(), "heldout": metrics}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join([f"saved {config.output} (a converted folder)", *summary["data"]]))
        if metrics:
            print(markdown_table([{"group": group, **values} for group, values in metrics.items()]))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``colbert-az`` sub-commands."""
    train = commands.add_parser(
        "train",
        help="fine-tune with the model card's distillation recipe (config in YAML)",
        description="Train from a raw colbert-az layout or a converted folder on pylate's trainer; every "
        "checkpoint is a converted folder. See colbert_az_pylate/training/config.py for the YAML keys.",
    )
    train.add_argument("--config", required=True, help="recipe.yaml: model, output, rows, sources, recipe, trainer")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing, non-empty output folder (never the model itself); as overwrite: true in the YAML",
    )
    train.add_argument("--json", action="store_true", help="print the data counts and held-out metrics as JSON")
    train.set_defaults(handler=cmd_train)
