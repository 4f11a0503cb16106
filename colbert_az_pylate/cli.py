"""The ``colbert-az`` command: ``convert`` and ``verify``.

Human summaries by default, ``--json`` for machines; bad input ends with a one-line ``error:`` message and
exit code 2, a failed parity check with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from colbert_az_pylate.errors import ColbertAzError, ParityError

EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2


def _progress(enabled: bool):
    def step(message: str) -> None:
        if enabled:
            print(f"… {message}", file=sys.stderr, flush=True)

    return step


def _read_probes(path: str | None) -> list[str] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
    except OSError as exc:
        raise ColbertAzError(f"cannot read probe file {path}: {exc.strerror}") from exc
    if not texts:
        raise ColbertAzError(f"probe file {path} holds no text; put one probe text per line")
    return texts


def cmd_convert(args: argparse.Namespace) -> int:
    from colbert_az_pylate.conversion import convert

    report = convert(
        args.source,
        args.output,
        revision=args.revision,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        force=args.force,
        probes=_read_probes(args.probes),
        dataset=args.dataset,
        on_step=_progress(not args.json),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.parity is None or report.parity.passed else EXIT_PARITY_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    from colbert_az_pylate.conversion import verify

    _progress(not args.json)(f"verifying {args.model} against the model card's code")
    report = verify(args.model, args.reference, probes=_read_probes(args.probes), dataset=args.dataset)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.passed else EXIT_PARITY_FAILED


def _markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{value:.4f}" if isinstance(value, float) else str(value) for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from colbert_az_pylate.evaluation import data, protocols
    from colbert_az_pylate.evaluation.retrieval import write_trec_run
    from colbert_az_pylate.loading import load

    step = _progress(not args.json)
    if args.protocol == "triplets":
        rows = data.load_triplets(args.data)
    elif args.protocol == "az-mirage":
        if not args.pool:
            raise ColbertAzError("the az-mirage protocol needs --pool doc_pool.json beside --data dataset.json")
        dataset = data.load_az_mirage(args.data, args.pool)
    else:
        dataset = data.load_beir(args.data, args.split)
    table, report = [], {}
    for name in args.models:
        step(f"evaluating {name} ({args.protocol})")
        model = load(name, device=args.device)
        if args.protocol == "triplets":
            result = protocols.evaluate_triplet_rows(model, rows, show_progress_bar=not args.json)
        else:
            result = protocols.evaluate_retrieval(model, dataset, show_progress_bar=not args.json)
            if args.run_dir:
                Path(args.run_dir).mkdir(parents=True, exist_ok=True)
                tag = Path(name).name or name
                write_trec_run(result.run, Path(args.run_dir) / f"{tag}.{args.protocol}.trec", tag)
        for note in result.notes:
            step(note)
        report[name] = {
            "metrics": result.metrics,
            "evaluated": result.evaluated,
            "skipped": result.skipped,
            "notes": result.notes,
        }
        for group, metrics in result.metrics.items():
            table.append(
                {"model": name, "group": group, **metrics, "queries": result.evaluated, "skipped": result.skipped}
            )
    print(json.dumps(report, indent=2) if args.json else _markdown_table(table))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colbert-az",
        description="LocalDoc/colbert-az as an exact pylate model: convert it, verify it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert a colbert-az checkpoint into a folder plain pylate loads",
        description="Convert backbone + projection.pt into a pylate folder that scores exactly like the "
        "model card's code; verified before it is written.",
    )
    convert.add_argument("source", help="hub id (LocalDoc/colbert-az) or local folder in the colbert-az layout")
    convert.add_argument("output", help="folder to write (must not exist unless --overwrite)")
    convert.add_argument("--revision", help="hub revision (branch, tag or commit)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    convert.add_argument("--no-verify", action="store_true", help="skip the parity check (not recommended)")
    convert.add_argument("--force", action="store_true", help="write the output even if parity fails")
    convert.set_defaults(handler=cmd_convert)

    verify = commands.add_parser(
        "verify",
        help="check that plain pylate on a converted folder reproduces the model card's code",
        description="Compare pylate (in its own process) with the model card's reference code on probe texts.",
    )
    verify.add_argument("model", help="converted folder")
    verify.add_argument("--reference", help="colbert-az folder the reference runs on (default: MODEL itself)")
    verify.set_defaults(handler=cmd_verify)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate models with the model card's metrics (triplets, az-mirage, beir)",
        description="Evaluate one or more models side by side; exact MaxSim over the whole pool or corpus.",
    )
    evaluate.add_argument("models", nargs="+", metavar="MODEL", help="converted folders or raw colbert-az layouts")
    evaluate.add_argument("--protocol", required=True, choices=["triplets", "az-mirage", "beir"])
    evaluate.add_argument("--data", required=True, help="triplets JSONL, AZ-MIRAGE dataset.json, or BEIR folder")
    evaluate.add_argument("--pool", help="AZ-MIRAGE doc_pool.json")
    evaluate.add_argument("--split", default="test", help="BEIR qrels split (default: test)")
    evaluate.add_argument("--run-dir", default="colbert-az-runs", help="where TREC run files are saved ('' for none)")
    evaluate.add_argument("--device", help="torch device (default: pylate's choice)")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

    for sub in (convert, verify):
        sub.add_argument("--probes", help="file with one probe text per line (default: built-in + AZ-MIRAGE)")
        sub.add_argument(
            "--dataset",
            help="AZ-MIRAGE dataset.json for real probe texts (default: ../shared/data/az-mirage)",
        )
        sub.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.handler(args)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARITY_FAILED
    except (ColbertAzError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
