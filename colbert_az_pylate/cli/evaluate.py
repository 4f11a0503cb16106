"""The evaluation commands: ``evaluate`` (models side by side with the model card's metrics) and ``rerank``
(another system's candidates into a TREC run)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections.abc import Callable

from colbert_az_pylate.cli.common import add_encoder_arguments, add_mode_arguments, markdown_table, progress
from colbert_az_pylate.errors import InvalidArgumentError, check_count


def distinct_models(models: list[str]) -> None:
    """Refuse a model named twice (``m`` and ``./m`` too): its results and run file would collide.

    >>> distinct_models(["LocalDoc/colbert-az", "LocalDoc/colbert-az"])
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: LocalDoc/colbert-az and LocalDoc/colbert-az are the same model; ...
    """
    seen: dict[str, str] = {}
    for name in models:
        key = os.path.realpath(os.path.expanduser(name)) if os.path.exists(os.path.expanduser(name)) else name
        if key in seen:
            raise InvalidArgumentError(f"{name} and {seen[key]} are the same model; name each model once")
        seen[key] = name


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``colbert-az evaluate``: every model on one protocol, a Markdown table (or ``--json``) and TREC runs."""
    distinct_models(args.models)
    check_count(args.candidates, "--candidates")
    if args.mode not in (None, "late") and args.protocol == "triplets":
        raise InvalidArgumentError(f"--mode {args.mode} ranks a corpus: use it with --protocol az-mirage or beir")
    run_dir = pathlib.Path(args.run_dir) if args.run_dir and args.protocol != "triplets" else None
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        raise InvalidArgumentError(f"--run-dir {run_dir} is a file; name a folder for the TREC run files")

    from colbert_az_pylate.evaluation.retrieval import run_tags  # torch (the evaluation package): when run
    from colbert_az_pylate.loading import load

    step = progress(not args.json)
    data = _read_protocol_data(args)
    from colbert_az_pylate.conversion.checkpoint import resolve_source

    for name in args.models:  # every model is found before the first one is evaluated
        resolve_source(name)
    tags = dict(zip(args.models, run_tags(args.models), strict=True))
    table, report = [], {}
    for name in args.models:
        step(f"evaluating {name} ({args.protocol}{', mode ' + args.mode if args.mode else ''})")
        model = load(name, device=args.device, encoder=args.encoder, quantize=args.quantize)
        result, run_file = _evaluate_model(args, model, name, data, run_dir, tags[name], step)
        for note in result.notes:
            step(note)
        report[name] = {
            "metrics": result.metrics,
            "evaluated": result.evaluated,
            "skipped": result.skipped,
            "notes": result.notes,
            "mode": args.mode or "late",
            "run_file": str(run_file) if run_file else None,
        }
        for group, metrics in result.metrics.items():
            table.append(
                {"model": name, "group": group, **metrics, "queries": result.evaluated, "skipped": result.skipped}
            )
    print(json.dumps(report, indent=2) if args.json else markdown_table(table))
    return 0


def _read_protocol_data(args: argparse.Namespace):
    """``--data`` as the protocol reads it: triplet rows, or an AZ-MIRAGE / BEIR retrieval dataset."""
    from colbert_az_pylate.evaluation import data  # torch (the evaluation package): only when the command runs

    if args.protocol == "triplets":
        return data.load_triplets(args.data)
    if args.protocol == "az-mirage":
        if not args.pool:
            raise InvalidArgumentError("the az-mirage protocol needs --pool doc_pool.json beside --data dataset.json")
        return data.load_az_mirage(args.data, args.pool)
    return data.load_beir(args.data, args.split)


def _evaluate_model(
    args: argparse.Namespace,
    model,
    name: str,
    data,
    run_dir: pathlib.Path | None,
    tag: str,
    step: Callable[[str], None],
):
    """One model's result on ``data``, and the TREC run file it saved (``None`` for triplets or without a folder)."""
    from colbert_az_pylate.evaluation import protocols  # torch (the evaluation package): only when run
    from colbert_az_pylate.evaluation.retrieval import write_trec_run

    if args.protocol == "triplets":
        return protocols.evaluate_triplet_rows(model, data, show_progress_bar=not args.json), None
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot create --run-dir {run_dir}: {exc.strerror}") from exc
    result = protocols.evaluate_retrieval(
        model,
        data,
        show_progress_bar=False if args.json else None,
        cache_dir=run_dir / "encodings" if run_dir is not None else None,
        say=step,
        mode=args.mode or "late",
        candidates=args.candidates,
    )
    run_file = None
    if run_dir is not None:
        mode = "" if args.mode in (None, "late") else "." + args.mode.replace("+", "-")
        run_file = run_dir / f"{tag}{mode}.{args.protocol}.trec"
        write_trec_run(result.run, run_file, tag)
        step(f"saved the run of {name} to {run_file}")
    return result, run_file


def cmd_rerank(args: argparse.Namespace) -> int:
    """``colbert-az rerank``: a first stage's candidates reranked by MaxSim into a TREC run."""
    check_count(args.batch_size, "--batch-size")
    if args.top_k is not None:
        check_count(args.top_k, "--top-k")
    from colbert_az_pylate.evaluation import rerank_run as reranking  # torch (the evaluation package): when run

    step = progress(not args.json)
    # every input is read and checked before the model (and torch) loads
    candidates = reranking.read_candidates(args.candidates)
    queries, corpus = reranking.read_queries_and_corpus(args.queries, args.corpus)
    kept = {query: docs[: args.top_k] if args.top_k else docs for query, docs in candidates.items()}
    reranking.check_candidates(kept, queries, corpus)
    output = pathlib.Path(args.output)
    if output.is_dir():
        raise InvalidArgumentError(f"--output {output} is a folder; name the run file to write")
    if not output.parent.is_dir():
        raise InvalidArgumentError(f"--output {output}: the folder {output.parent} does not exist")
    from colbert_az_pylate.loading import load

    step(f"read {sum(map(len, kept.values()))} candidates of {len(kept)} queries; loading {args.model}")
    model = load(args.model, encoder=args.encoder, quantize=args.quantize)
    run = reranking.rerank_candidates(
        model, kept, queries, corpus, batch_size=args.batch_size, show_progress_bar=not args.json
    )
    reranking.write_run(run, output, args.tag)
    report = reranking.summary(run, output)
    print(
        json.dumps(report)
        if args.json
        else f"reranked {report['candidates']} candidates of {report['queries']} queries "
        f"({report['documents_encoded']} documents encoded once) into {output}"
    )
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and ``rerank`` to the ``colbert-az`` sub-commands."""
    _add_evaluate_parser(commands)
    _add_rerank_parser(commands)


def _add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
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
    evaluate.add_argument(
        "--run-dir",
        default="colbert-az-runs",
        help="where TREC run files are saved, one per model (TAG.PROTOCOL.trec), and the document encodings, "
        "reused by a rerun of the same model on the same data (encodings/; '' for neither)",
    )
    evaluate.add_argument("--device", help="torch device (default: pylate's choice)")
    add_mode_arguments(
        evaluate,
        "az-mirage and beir: late (exact MaxSim over the whole corpus, the model card's protocol; the default), bm25, "
        "bm25+rerank (BM25's top --candidates reranked by MaxSim) or fusion (reciprocal rank fusion of both)",
    )
    add_encoder_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)


def _add_rerank_parser(commands: argparse._SubParsersAction) -> None:
    rerank = commands.add_parser(
        "rerank",
        help="rerank another system's candidates (a TREC run or JSONL query_id/doc_id rows) into a TREC run",
        description="Rerank each query's candidates by MaxSim; every distinct candidate document is encoded once.",
    )
    rerank.add_argument("model", metavar="MODEL", help="a converted folder, a raw colbert-az layout or a hub id")
    rerank.add_argument("candidates", metavar="CANDIDATES", help="TREC run (qid Q0 docid rank score tag) or JSONL")
    rerank.add_argument("--queries", required=True, help="BEIR queries.jsonl or AZ-MIRAGE dataset.json")
    rerank.add_argument("--corpus", required=True, help="BEIR corpus.jsonl or AZ-MIRAGE doc_pool.json")
    rerank.add_argument("--output", required=True, metavar="FILE", help="the reranked TREC run (written atomically)")
    rerank.add_argument("--top-k", type=int, help="candidates kept per query, the first stage's best (default: all)")
    rerank.add_argument("--batch-size", type=int, default=32, help="encoding batch size (default: 32)")
    rerank.add_argument("--tag", default="colbert-az", help="the run name in the last column (default: colbert-az)")
    add_encoder_arguments(rerank)
    rerank.add_argument("--json", action="store_true", help="print a JSON summary (and no progress bars)")
    rerank.set_defaults(handler=cmd_rerank)
