"""The index commands: ``index`` (a corpus, or ``encode``'s shards, into an index folder or a Qdrant collection),
``encode`` (a corpus into resumable shards of token vectors) and ``search``.

The corpus is read and checked before torch is imported: a bad corpus is refused at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import unicodedata

from colbert_az_pylate.cli.common import add_encoder_arguments, add_mode_arguments, progress
from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, check_count
from colbert_az_pylate.retrieval.backends import BACKENDS, REMOTE_BACKEND
from colbert_az_pylate.retrieval.corpus import check_metadata, read_corpus

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def terminal_safe(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\x07``, ``\\u202e``): a document or an id
    printed to a terminal cannot move the cursor, ring the bell, change colours or reorder the line.

    >>> terminal_safe("Bakı\\x1b[2J")
    'Bakı\\\\x1b[2J'
    """
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp")
        else char
        for char in text
    )


def qdrant_server(args: argparse.Namespace) -> dict:
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
    """``colbert-az index``: encode a corpus into the index (or index ``--from-encoded`` shards)."""
    check_count(args.batch_size, "--batch-size")
    check_count(args.pool_factor, "--pool-factor")
    server = qdrant_server(args)
    if server and args.backend not in (None, REMOTE_BACKEND):
        raise InvalidArgumentError(
            f"--url is a {BACKENDS[REMOTE_BACKEND].title} server: use --backend {REMOTE_BACKEND}, "
            f"not --backend {args.backend}"
        )
    if args.overlap < 0:
        raise InvalidArgumentError(f"--overlap must be a whole number of tokens >= 0, got {args.overlap}")
    if args.from_encoded is not None:
        return _index_from_encoded(args, server)
    if args.model is None or args.corpus is None:
        raise InvalidArgumentError("index needs MODEL and CORPUS (or --from-encoded DIR, written by colbert-az encode)")
    step = progress(not args.json)
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
        mode=args.mode,
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
    summary["passages"], summary["mode"] = split.to_dict(), searcher.mode
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
    from colbert_az_pylate.retrieval.encoding import EncodedCorpus  # torch: only when the command runs
    from colbert_az_pylate.retrieval.searcher import Searcher

    encoded = EncodedCorpus.open(args.from_encoded)  # a bad folder is refused before any model loads
    model = args.model or encoded.model.get("name")
    progress(not args.json)(f"read {len(encoded)} encoded documents from {args.from_encoded}; loading {model}")
    created = not server and not os.path.exists(args.index)
    searcher = Searcher(model, args.index, backend=args.backend, override=args.override, mode=args.mode, **server)
    searcher.show_progress_bar = not args.json
    try:
        searcher.index_encoded(args.from_encoded, upsert=args.upsert)
    except ColbertAzError:
        if created:  # shards of another model: the folder this command made is removed, not left empty
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
    """``colbert-az encode``: a corpus into shards under ``--out`` (per rank under torchrun), resumably."""
    check_count(args.batch_size, "--batch-size")
    check_count(args.shard_size, "--shard-size")
    check_count(args.pool_factor, "--pool-factor")
    if args.overlap < 0:
        raise InvalidArgumentError(f"--overlap must be a whole number of tokens >= 0, got {args.overlap}")
    step = progress(not args.json)
    corpus = read_corpus(args.corpus, id_column=args.id_column, text_column=args.text_column, split=args.split)
    check_metadata(corpus.metadata or None, corpus.ids)  # before anything is written or torch is imported
    from colbert_az_pylate.retrieval.encoding import encode_corpus  # torch: only once the corpus is known to be good

    step(f"read {len(corpus)} documents from {args.corpus}; loading {args.model}")
    report = encode_corpus(
        _encoding_model(args),
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


def _encoding_model(args: argparse.Namespace):
    """What ``encode`` encodes with: ``MODEL`` as named, loaded here for an exported encoder or a torchrun rank."""
    model = args.model
    if args.encoder != "torch":  # ONNX Runtime / OpenVINO on the CPU (every rank on its own cores)
        from colbert_az_pylate.loading import load  # torch: only when the command runs

        model = load(args.model, encoder=args.encoder, quantize=args.quantize)
    elif "LOCAL_RANK" in os.environ:  # torchrun/accelerate launch: one GPU per local rank when there are GPUs
        import torch  # heavy: only under torchrun

        if torch.cuda.is_available():
            from colbert_az_pylate.loading import load

            model = load(args.model, device=f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}")
    return model


def cmd_search(args: argparse.Namespace) -> int:
    """``colbert-az search``: each query's hits, as lines or ``--json``."""
    check_count(args.k, "-k")
    check_count(args.candidates, "--candidates")
    from colbert_az_pylate.retrieval.searcher import Searcher  # torch: only when the command runs

    searcher = Searcher.open(
        args.index,
        model=args.model,
        show_progress_bar=False,
        encoder=args.encoder,
        quantize=args.quantize,
        **qdrant_server(args),
    )
    results = searcher.search(
        args.queries,
        k=args.k,
        mode=args.mode,
        candidates=args.candidates,
        exact=args.exact,
        group_by="passage" if args.passages else "document",
    )
    if args.json:
        report = [
            {"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(args.queries, results, strict=True)
        ]
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    for query, hits in zip(args.queries, results, strict=True):
        print(terminal_safe(query))
        for rank, hit in enumerate(hits, 1):
            text = " ".join((hit.text or "").split())
            print(f"  {rank:>3}. {hit.score:7.3f}  {terminal_safe(hit.id):<20} {terminal_safe(text[:100])}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``index``, ``encode`` and ``search`` to the ``colbert-az`` sub-commands."""
    _add_index_parser(commands)
    _add_encode_parser(commands)
    _add_search_parser(commands)


def _add_index_parser(commands: argparse._SubParsersAction) -> None:
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
    add_mode_arguments(
        index,
        "what the index keeps, for the searches it will serve: late (token vectors, the default for a new folder), "
        "bm25 (words only), bm25+rerank (words; BM25's candidates reranked by MaxSim) or fusion (both); default: "
        "the folder's own",
        candidates=False,
    )
    _add_server_arguments(index)
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


def _add_encode_parser(commands: argparse._SubParsersAction) -> None:
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


def _add_search_parser(commands: argparse._SubParsersAction) -> None:
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
    add_mode_arguments(search, "late, bm25, bm25+rerank or fusion (default: the mode the index was built for)")
    _add_server_arguments(search)
    add_encoder_arguments(search, "what encodes the queries")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    search.set_defaults(handler=cmd_search)


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--api-key-env``: a Qdrant server instead of an index folder (read by :func:`qdrant_server`)."""
    parser.add_argument(
        "--url",
        help="a Qdrant server or cluster (http://localhost:6333); --index/INDEX is then the collection's name",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the Qdrant API key (default: QDRANT_API_KEY)",
    )
