"""The ``colbert-az`` command: convert, verify, export, evaluate, rerank, train, encode, index, search, demo,
serve.

Human summaries by default, ``--json`` for machines; progress goes to stderr. Exit codes: 0 success, 1 parity
failed, 2 bad input or the system's refusal (one ``error:`` line saying what is wrong and what to do: a read-only
folder, a full disk, an output under a file, a port in use), 3 internal error (one line;
``COLBERT_AZ_DEBUG=1`` shows the traceback), 130 interrupted (Ctrl-C; nothing half-written is kept).
Only the command that runs imports torch, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

from colbert_az_pylate.cli_arguments import add_encoder_arguments
from colbert_az_pylate.console import quiet_third_party
from colbert_az_pylate.errors import (
    ColbertAzError,
    InvalidArgumentError,
    ParityError,
    check_count,
    first_line,
    system_condition,
)
from colbert_az_pylate.retrieval.backends import BACKENDS
from colbert_az_pylate.serving.cli import add_serve_parser

EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
DEBUG_ENV = "COLBERT_AZ_DEBUG"


def _progress(enabled: bool):
    def step(message: str) -> None:
        if enabled:
            print(f"… {message}", file=sys.stderr, flush=True)

    return step


def _read_probes(path: str | None) -> list[str] | None:
    from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError

    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"probe file {path} is not UTF-8 text ({first_line(exc)})") from exc
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read probe file {path}: {exc.strerror or first_line(exc)}") from exc
    if not texts:
        raise DataFormatError(f"probe file {path} holds no text; put one probe text per line")
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
    if args.encoder != "torch":
        return _verify_encoder(args)
    from colbert_az_pylate.conversion import verify

    _progress(not args.json)(f"verifying {args.model} against the model card's code")
    report = verify(args.model, args.reference, probes=_read_probes(args.probes), dataset=args.dataset)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.passed else EXIT_PARITY_FAILED


def _verify_encoder(args: argparse.Namespace) -> int:
    """``verify --encoder onnx|openvino``: the exported graph against pylate's torch encoder, within its budget."""
    from colbert_az_pylate.encoders import check_encoder, verify_encoder

    encoder, quantize = check_encoder(args.encoder, args.quantize)
    if args.reference:
        raise InvalidArgumentError("--reference is the model card's code; with --encoder the reference is torch")
    _progress(not args.json)(f"verifying the {encoder} encoder of {args.model} against pylate's torch encoder")
    report = verify_encoder(args.model, encoder, quantize, probes=_read_probes(args.probes), dataset=args.dataset)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.passed else EXIT_PARITY_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    from colbert_az_pylate.encoders.export import export_model

    step = _progress(not args.json)
    folder, record = export_model(
        args.model, args.output, args.encoder, args.quantize, overwrite=args.overwrite, on_step=step
    )
    if args.json:
        print(json.dumps({"folder": str(folder), **record.to_dict()}, indent=2))
        return 0
    graphs = ", ".join(f"{key} ({record.graphs[key]})" for key in sorted(record.graphs))
    print(f"exported into {folder}/encoders: {graphs}")
    quantize = f" --quantize {args.quantize}" if args.quantize else ""
    print(f"check it with: colbert-az verify {args.output or args.model} --encoder {args.encoder}{quantize}")
    return 0


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _terminal_safe(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\x07``, ``\\u202e``): a document or an id
    printed to a terminal cannot move the cursor, ring the bell, change colours or reorder the line."""
    import unicodedata

    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp")
        else char
        for char in text
    )


def _qdrant_server(args: argparse.Namespace) -> dict:
    """``url``/``api_key`` for the Searcher from ``--url`` and ``--api-key-env`` (the key is never a flag)."""
    if args.api_key_env is not None and args.url is None:
        raise InvalidArgumentError("--api-key-env is for a Qdrant server; give its --url too")
    if args.url is None:
        return {}
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InvalidArgumentError(
                f"--api-key-env names {args.api_key_env}, which is not set in the environment; export the key there"
            )
    return {"url": args.url, "api_key": api_key}


def cmd_index(args: argparse.Namespace) -> int:
    check_count(args.batch_size, "--batch-size")
    check_count(args.pool_factor, "--pool-factor")
    server = _qdrant_server(args)
    if server and args.backend not in (None, "qdrant"):
        raise InvalidArgumentError(f"--url is a Qdrant server: use --backend qdrant, not --backend {args.backend}")
    if args.overlap < 0:
        raise InvalidArgumentError(f"--overlap must be a whole number of tokens >= 0, got {args.overlap}")
    if args.from_encoded is not None:
        return _index_from_encoded(args, server)
    if args.model is None or args.corpus is None:
        raise InvalidArgumentError("index needs MODEL and CORPUS (or --from-encoded DIR, written by colbert-az encode)")
    from colbert_az_pylate.retrieval.corpus import check_metadata, read_corpus

    step = _progress(not args.json)
    corpus = read_corpus(args.corpus, id_column=args.id_column, text_column=args.text_column, split=args.split)
    check_metadata(corpus.metadata or None, corpus.ids)  # before the index folder is created or anything encoded
    from colbert_az_pylate.retrieval.searcher import Searcher  # torch: only once the corpus is known to be good
    step(f"read {len(corpus)} documents from {args.corpus}; loading {args.model}")
    searcher = Searcher(
        args.model,
        args.index,
        backend=args.backend,
        override=args.override,
        batch_size=args.batch_size,
        pool_factor=args.pool_factor,
        encoder=args.encoder,
        quantize=args.quantize,
        **server,
    )
    searcher.show_progress_bar = not args.json
    searcher.index(
        corpus.texts,
        ids=corpus.ids,
        metadata=corpus.metadata or None,
        upsert=args.upsert,
        passages=not args.no_passages,
        overlap=args.overlap,
    )
    split = searcher.passage_report
    summary = {"index": str(args.index), "documents": len(searcher), "added": len(corpus), "model": args.model}
    summary["passages"] = split.to_dict()
    print(
        json.dumps(summary)
        if args.json
        else f"indexed {len(corpus)} documents into {args.index} ({len(searcher)} in all); {split.summary()}"
    )
    return 0


def _index_from_encoded(args: argparse.Namespace, server: dict) -> int:
    """``index --from-encoded DIR``: the shards of ``colbert-az encode`` into the index, nothing encoded again."""
    if args.corpus is not None:
        raise InvalidArgumentError("--from-encoded replaces CORPUS; give MODEL at most (default: the one encoded)")
    from colbert_az_pylate.retrieval.encoding import EncodedCorpus
    from colbert_az_pylate.retrieval.searcher import Searcher

    encoded = EncodedCorpus.open(args.from_encoded)  # a bad folder is refused before any model loads
    model = args.model or encoded.model.get("name")
    _progress(not args.json)(f"read {len(encoded)} encoded documents from {args.from_encoded}; loading {model}")
    created = not server and not os.path.exists(args.index)
    searcher = Searcher(model, args.index, backend=args.backend, override=args.override, **server)
    searcher.show_progress_bar = not args.json
    try:
        searcher.index_encoded(args.from_encoded, upsert=args.upsert)
    except ColbertAzError:
        if created:  # shards of another model: the folder this command made is removed, not left empty
            import shutil

            shutil.rmtree(args.index, ignore_errors=True)
        raise
    split = searcher.passage_report
    summary = {"index": str(args.index), "documents": len(searcher), "added": len(encoded), "model": model}
    summary["passages"] = split.to_dict()
    print(
        json.dumps(summary)
        if args.json
        else f"indexed {len(encoded)} encoded documents into {args.index} ({len(searcher)} in all); {split.summary()}"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    check_count(args.batch_size, "--batch-size")
    check_count(args.shard_size, "--shard-size")
    check_count(args.pool_factor, "--pool-factor")
    if args.overlap < 0:
        raise InvalidArgumentError(f"--overlap must be a whole number of tokens >= 0, got {args.overlap}")
    from colbert_az_pylate.retrieval.corpus import check_metadata, read_corpus

    step = _progress(not args.json)
    corpus = read_corpus(args.corpus, id_column=args.id_column, text_column=args.text_column, split=args.split)
    check_metadata(corpus.metadata or None, corpus.ids)  # before anything is written or torch is imported
    from colbert_az_pylate.retrieval.encoding import encode_corpus  # torch: only once the corpus is known to be good

    step(f"read {len(corpus)} documents from {args.corpus}; loading {args.model}")
    model = args.model
    if args.encoder != "torch":  # ONNX Runtime / OpenVINO on the CPU (every rank on its own cores)
        from colbert_az_pylate.loading import load

        model = load(args.model, encoder=args.encoder, quantize=args.quantize)
    elif "LOCAL_RANK" in os.environ:  # torchrun/accelerate launch: one GPU per local rank when there are GPUs
        import torch

        if torch.cuda.is_available():
            from colbert_az_pylate.loading import load

            model = load(args.model, device=f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}")
    report = encode_corpus(
        model,
        corpus,
        args.out,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        passages=not args.no_passages,
        overlap=args.overlap,
        pool_factor=args.pool_factor,
        show_progress_bar=False if args.json else None,
    )
    print(json.dumps(report.to_dict()) if args.json else report.summary())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    check_count(args.k, "-k")
    from colbert_az_pylate.retrieval.searcher import Searcher

    searcher = Searcher.open(
        args.index,
        model=args.model,
        show_progress_bar=False,
        encoder=args.encoder,
        quantize=args.quantize,
        **_qdrant_server(args),
    )
    results = searcher.search(
        args.queries, k=args.k, exact=args.exact, group_by="passage" if args.passages else "document"
    )
    if args.json:
        report = [
            {"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(args.queries, results, strict=True)
        ]
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    for query, hits in zip(args.queries, results, strict=True):
        print(_terminal_safe(query))
        for rank, hit in enumerate(hits, 1):
            text = " ".join((hit.text or "").split())
            print(f"  {rank:>3}. {hit.score:7.3f}  {_terminal_safe(hit.id):<20} {_terminal_safe(text[:100])}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    check_count(args.k, "-k")
    from colbert_az_pylate.retrieval.demo import run_demo

    result = run_demo(k=args.k, say=(lambda message: None) if args.json else print)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if result["parity_passed"] else EXIT_PARITY_FAILED


def cmd_standin(args: argparse.Namespace) -> int:
    """Write the offline stand-in (packaged MiniLM in the colbert-az layout) into a new folder."""
    from colbert_az_pylate.errors import OutputExistsError

    folder = args.output
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputExistsError(f"{folder} exists and is not an empty folder; name a new folder for the stand-in")
    from colbert_az_pylate.standin import STANDIN_NAME, build_minilm_standin

    build_minilm_standin(folder)
    print(
        f"wrote {folder}: the {STANDIN_NAME}, an English model in the colbert-az layout, offline; it shows the "
        f"pipeline working, not colbert-az's quality. Next: colbert-az convert {folder} {folder}-pylate",
        file=sys.stderr,
    )
    return 0


def _markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{value:.4f}" if isinstance(value, float) else str(value) for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _distinct_models(models: list[str]) -> None:
    """Refuse a model named twice (``m`` and ``./m`` too): its results and run file would collide."""
    from colbert_az_pylate.errors import InvalidArgumentError

    seen: dict[str, str] = {}
    for name in models:
        key = os.path.realpath(os.path.expanduser(name)) if os.path.exists(os.path.expanduser(name)) else name
        if key in seen:
            raise InvalidArgumentError(f"{name} and {seen[key]} are the same model; name each model once")
        seen[key] = name


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from colbert_az_pylate.errors import InvalidArgumentError

    _distinct_models(args.models)
    run_dir = Path(args.run_dir) if args.run_dir and args.protocol != "triplets" else None
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        raise InvalidArgumentError(f"--run-dir {run_dir} is a file; name a folder for the TREC run files")

    from colbert_az_pylate.evaluation import data, protocols
    from colbert_az_pylate.evaluation.retrieval import run_tags, write_trec_run
    from colbert_az_pylate.loading import load

    step = _progress(not args.json)
    if args.protocol == "triplets":
        rows = data.load_triplets(args.data)
    elif args.protocol == "az-mirage":
        if not args.pool:
            raise InvalidArgumentError("the az-mirage protocol needs --pool doc_pool.json beside --data dataset.json")
        dataset = data.load_az_mirage(args.data, args.pool)
    else:
        dataset = data.load_beir(args.data, args.split)
    from colbert_az_pylate.conversion.checkpoint import resolve_source

    for name in args.models:  # every model is found before the first one is evaluated
        resolve_source(name)
    tags = dict(zip(args.models, run_tags(args.models), strict=True))
    table, report = [], {}
    for name in args.models:
        step(f"evaluating {name} ({args.protocol})")
        model = load(name, device=args.device, encoder=args.encoder, quantize=args.quantize)
        run_file = None
        if args.protocol == "triplets":
            result = protocols.evaluate_triplet_rows(model, rows, show_progress_bar=not args.json)
        else:
            if run_dir is not None:
                try:
                    run_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise InvalidArgumentError(f"cannot create --run-dir {run_dir}: {exc.strerror}") from exc
            result = protocols.evaluate_retrieval(
                model,
                dataset,
                show_progress_bar=False if args.json else None,
                cache_dir=run_dir / "encodings" if run_dir is not None else None,
                say=step,
            )
            if run_dir is not None:
                run_file = run_dir / f"{tags[name]}.{args.protocol}.trec"
                write_trec_run(result.run, run_file, tags[name])
                step(f"saved the run of {name} to {run_file}")
        for note in result.notes:
            step(note)
        report[name] = {
            "metrics": result.metrics,
            "evaluated": result.evaluated,
            "skipped": result.skipped,
            "notes": result.notes,
            "run_file": str(run_file) if run_file else None,
        }
        for group, metrics in result.metrics.items():
            table.append(
                {"model": name, "group": group, **metrics, "queries": result.evaluated, "skipped": result.skipped}
            )
    print(json.dumps(report, indent=2) if args.json else _markdown_table(table))
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    check_count(args.batch_size, "--batch-size")
    if args.top_k is not None:
        check_count(args.top_k, "--top-k")
    from colbert_az_pylate.evaluation import rerank_run as reranking

    step = _progress(not args.json)
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


def cmd_train(args: argparse.Namespace) -> int:
    import contextlib

    from colbert_az_pylate.training.config import load_train_config, run_train_config

    config = load_train_config(args.config)
    config.overwrite = config.overwrite or args.overwrite
    # The trainer prints its log lines: to stderr, so stdout keeps the summary only; nowhere with --json.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if args.json else sys.stderr):
        data, metrics = run_train_config(config, on_step=_progress(not args.json))
    summary = {"output": config.output, "data": data.summary().splitlines(), "heldout": metrics}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join([f"saved {config.output} (a converted folder)", *summary["data"]]))
        if metrics:
            print(_markdown_table([{"group": group, **values} for group, values in metrics.items()]))
    return 0


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line naming the command and where to read its usage (exit 2),
    like every other bad input."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="colbert-az",
        description="LocalDoc/colbert-az as an exact pylate model: convert, verify, evaluate, index, search, train.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser
    )

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
    verify.add_argument("model", help="converted folder (or the hub id of one)")
    verify.add_argument("--reference", help="colbert-az folder the reference runs on (default: MODEL itself)")
    add_encoder_arguments(verify, "check this exported encoder against pylate's torch encoder instead (its budget)")
    verify.set_defaults(handler=cmd_verify)

    export = commands.add_parser(
        "export",
        help="export the backbone to ONNX (and int8 for OpenVINO) for fast CPU encoding, beside the pylate files",
        description="Write MODEL's backbone as an ONNX graph (and, with --encoder openvino --quantize int8, its "
        "int8-weight graph) into "
        "OUTPUT/encoders (default: MODEL/encoders); the folder still loads in plain pylate and the card's code.",
    )
    export.add_argument("model", help="converted folder, raw colbert-az layout or hub id")
    export.add_argument("output", nargs="?", help="new folder: MODEL's pylate files plus the export (default: MODEL)")
    export.add_argument("--encoder", required=True, choices=["onnx", "openvino"], help="the runtime to export for")
    export.add_argument(
        "--quantize",
        choices=["int8", "bf16", "int8-query"],
        help="also write the int8-weight graph, or the static int8 query graph (int8-query) (--encoder openvino)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT folder")
    export.add_argument("--json", action="store_true", help="print the export record as JSON")
    export.set_defaults(handler=cmd_export)

    index = commands.add_parser(
        "index",
        help="encode a corpus and add it to an index folder (Voyager, PLAID or Qdrant)",
        description="Encode CORPUS (JSONL, CSV/TSV, Parquet with id and text columns, or a datasets name) with "
        "MODEL and add it to the index folder (created if missing).",
    )
    index.add_argument(
        "model", nargs="?", help="converted folder, raw colbert-az layout or hub id (with --from-encoded: optional)"
    )
    index.add_argument("corpus", nargs="?", help="corpus file or datasets name (not with --from-encoded)")
    index.add_argument(
        "--from-encoded",
        metavar="DIR",
        help="index the shards written by `colbert-az encode --out DIR` instead of a corpus (nothing re-encoded)",
    )
    index.add_argument("--index", required=True, help="index folder")
    add_encoder_arguments(index)
    index.add_argument("--id-column", default="id")
    index.add_argument("--text-column", default="text")
    index.add_argument("--split", default="train", help="split of a datasets corpus (default: train)")
    index.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    index.add_argument("--override", action="store_true", help="start the index afresh")
    index.add_argument("--upsert", action="store_true", help="replace documents whose id is already indexed")
    index.add_argument(
        "--pool-factor",
        type=int,
        default=1,
        help="pool document token vectors about N:1 (pylate's hierarchical pooling; default 1 = none)",
    )
    index.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default=None,
        help="voyager (HNSW + exact rerank, updatable), plaid (fast-plaid, build-once, for large corpora) or qdrant "
        "(exact MaxSim in Qdrant: embedded in the folder, or on a server with --url; needs qdrant-client); "
        "default: the index folder's own backend, voyager for a new folder",
    )
    _server_arguments(index)
    index.add_argument(
        "--overlap",
        type=int,
        default=32,
        help="tokens a passage of a long document shares with the previous one (default: 32)",
    )
    index.add_argument(
        "--no-passages",
        action="store_true",
        help="do not split documents longer than the model's document length (they are truncated)",
    )
    index.add_argument("--json", action="store_true", help="print a JSON summary")
    index.set_defaults(handler=cmd_index)

    encode = commands.add_parser(
        "encode",
        help="encode a corpus into shards of token vectors (one process or many under torchrun), resumably",
        description="Encode CORPUS with MODEL into shards under --out (float16 .npy + JSON, a manifest with "
        "checksums); long documents become passages as in `index`. Under torchrun/accelerate launch each rank "
        "encodes its own shards; a rerun skips finished shards. Index them with `index --from-encoded DIR`.",
    )
    encode.add_argument("model", help="converted folder, raw colbert-az layout or hub id")
    encode.add_argument("corpus", help="corpus file or datasets name")
    encode.add_argument("--out", required=True, help="folder of shards (new, empty, or a run to resume)")
    encode.add_argument("--shard-size", type=int, default=10_000, help="documents per shard (default: 10000)")
    encode.add_argument("--id-column", default="id")
    encode.add_argument("--text-column", default="text")
    encode.add_argument("--split", default="train", help="split of a datasets corpus (default: train)")
    encode.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    encode.add_argument("--pool-factor", type=int, default=1, help="pool token vectors about N:1 (default 1 = none)")
    encode.add_argument("--overlap", type=int, default=32, help="tokens a passage shares with the previous one")
    encode.add_argument("--no-passages", action="store_true", help="do not split long documents (they are truncated)")
    add_encoder_arguments(encode)
    encode.add_argument("--json", action="store_true", help="print a JSON summary")
    encode.set_defaults(handler=cmd_encode)

    search = commands.add_parser(
        "search",
        help="search an index folder",
        description="Search an index folder with the model recorded in it.",
    )
    search.add_argument("index", help="index folder")
    search.add_argument("queries", nargs="+", metavar="QUERY")
    search.add_argument("-k", type=int, default=10, help="hits per query (default: 10)")
    search.add_argument(
        "--exact",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--exact: brute-force MaxSim over every document; --no-exact: the graph search (default: the faster of "
        "the two for this index: exact on small Voyager indexes)",
    )
    search.add_argument(
        "--passages",
        action="store_true",
        help="one hit per passage of a long document (default: one per document, at its best passage)",
    )
    search.add_argument("--model", help="model to encode queries with (default: the one recorded in the index)")
    _server_arguments(search)
    add_encoder_arguments(search, "what encodes the queries")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    search.set_defaults(handler=cmd_search)

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
    add_encoder_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

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

    add_serve_parser(commands)

    for sub in (convert, verify):
        sub.add_argument(
            "--probes", help="file with one probe text per line (default: the edge cases and sentences shipped inside)"
        )
        sub.add_argument("--dataset", help="AZ-MIRAGE dataset.json whose texts are added as extra probes (optional)")
        sub.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="a Qdrant server or cluster (http://localhost:6333); --index/INDEX is then the collection's name",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the Qdrant API key (default: QDRANT_API_KEY)",
    )


def _check_quantize(args: argparse.Namespace) -> None:
    """``--quantize`` needs an exported encoder: refused, not ignored, on torch (every command that has both)."""
    if getattr(args, "quantize", None) and getattr(args, "encoder", None) == "torch":
        raise InvalidArgumentError(
            f"--quantize {args.quantize} needs --encoder openvino (--encoder onnx runs float32 only); "
            "without --encoder, torch runs float32 as is"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``colbert-az`` command; returns its exit code (see the module docstring)."""
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


if __name__ == "__main__":
    sys.exit(main())
