"""The commands for trying colbert-az offline: ``demo`` (the whole pipeline on a packaged corpus) and ``standin``
(a packaged English model in the colbert-az layout, to try every command without the hub)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from colbert_az_pylate.cli.common import EXIT_PARITY_FAILED
from colbert_az_pylate.errors import OutputExistsError, check_count


def cmd_demo(args: argparse.Namespace) -> int:
    """``colbert-az demo``: convert, verify, index and search the packaged corpus."""
    check_count(args.k, "-k")
    from colbert_az_pylate.retrieval.demo import run_demo  # torch: only when the command runs

    result = run_demo(k=args.k, say=(lambda message: None) if args.json else print)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if result["parity_passed"] else EXIT_PARITY_FAILED


def cmd_standin(args: argparse.Namespace) -> int:
    """Write the offline stand-in (packaged MiniLM in the colbert-az layout) into a new folder."""
    folder = args.output
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputExistsError(f"{folder} exists and is not an empty folder; name a new folder for the stand-in")
    from colbert_az_pylate.standin import STANDIN_NAME, build_minilm_standin  # torch: only when the command runs

    build_minilm_standin(folder)
    print(
        f"wrote {folder}: the {STANDIN_NAME}, an English model in the colbert-az layout, offline; it shows the "
        f"pipeline working, not colbert-az's quality. Next: colbert-az convert {folder} {folder}-pylate",
        file=sys.stderr,
    )
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``standin`` to the ``colbert-az`` sub-commands."""
    demo = commands.add_parser(
        "demo",
        help="convert, verify, index a small Azerbaijani corpus and search it (works offline)",
        description="The whole pipeline on a packaged corpus: LocalDoc/colbert-az when the hub is reachable, "
        "otherwise a stand-in on the packaged MiniLM (said plainly in the output).",
    )
    demo.add_argument("-k", type=int, default=3, help="hits per sample query (default: 3)")
    demo.add_argument("--json", action="store_true", help="print the measurements as JSON")
    demo.set_defaults(handler=cmd_demo)

    standin = commands.add_parser(
        "standin",
        help="write an offline stand-in model in the colbert-az layout (to try every command without the hub)",
        description="The packaged, pretrained all-MiniLM-L6-v2 with [Q]/[D] markers and a seeded 384->128 projection, "
        "in the layout of LocalDoc/colbert-az (config.json, weights, tokenizer, projection.pt). An English model: "
        "for trying the commands offline, not for Azerbaijani quality.",
    )
    standin.add_argument("output", type=pathlib.Path, help="a new (or empty) folder")
    standin.set_defaults(handler=cmd_standin)
