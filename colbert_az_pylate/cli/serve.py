"""``colbert-az serve``: its arguments and its command (and the app each ``--workers`` process builds).
Importing this module imports neither FastAPI nor torch."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import logging.handlers
import os
import queue
import stat
import sys

from colbert_az_pylate.cli.common import add_encoder_arguments
from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError, check_count, first_line
from colbert_az_pylate.retrieval.backends import BACKENDS
from colbert_az_pylate.retrieval.folders import detect_backend
from colbert_az_pylate.serving.app import AllowedHosts, check_api_key

KEY_ENV = "COLBERT_AZ_API_KEY"
WORKER_ENV = "COLBERT_AZ_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process
LIMIT_FLAGS = {
    "max_k": ("--max-k", 1000, "hits per query, at most"),
    "max_queries": ("--max-queries", 64, "queries (or embedding inputs) per request"),
    "max_documents": ("--max-documents", 256, "documents per write request"),
    "max_query_chars": ("--max-query-chars", 2000, "characters per query"),
    "max_document_chars": ("--max-document-chars", 200_000, "characters per document"),
    "max_body_bytes": ("--max-body-bytes", 4 * 1024 * 1024, "bytes per request body"),
    "max_embedding_chars": ("--max-embedding-chars", 128_000, "characters of all the inputs of one embeddings request"),
    "max_response_bytes": ("--max-response-bytes", 16 * 1024 * 1024, "bytes per answer (embeddings, hits)"),
    "max_metadata_bytes": ("--max-metadata-bytes", 16 * 1024, "bytes of one document's metadata as JSON"),
    "max_metadata_depth": ("--max-metadata-depth", 32, "nesting levels of one document's metadata"),
    "max_rerank_documents": ("--max-rerank-documents", 1000, "documents per rerank request"),
    "max_rerank_chars": ("--max-rerank-chars", 1_000_000, "characters of one rerank request, all texts"),
}
ANY_ADDRESS = ("0.0.0.0", "::", "")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``colbert-az`` sub-commands."""
    serve = commands.add_parser(
        "serve",
        allow_abbrev=False,  # `--api-key KEY` must not pass for --api-key-file: keys never go on the command line
        help="serve an index over HTTP: search, add/delete documents, embeddings, rerank (the [serve] extra)",
        description="A search API over an index folder (FastAPI on uvicorn). Writes need the key from "
        f"--api-key-file (or ${KEY_ENV}); without one the server is read-only. Never put the key on the command line.",
    )
    serve.add_argument("index", help="index folder (any backend; written by `colbert-az index`)")
    _add_address_arguments(serve)
    serve.add_argument("--model", help="model to encode with (default: the one recorded in the index)")
    add_encoder_arguments(serve, "what encodes queries and added documents")
    _add_access_arguments(serve)
    _add_throughput_arguments(serve)
    for field, (flag, default, meaning) in LIMIT_FLAGS.items():
        serve.add_argument(flag, dest=field, type=int, default=default, help=f"{meaning} (default {default})")
    _add_connection_limits(serve.add_argument_group("connection limits"))
    serve.set_defaults(handler=cmd_serve)


def _add_address_arguments(serve: argparse.ArgumentParser) -> None:
    """Where the server listens, the Host names it answers and the Qdrant server it may serve from."""
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients reach the server by (repeatable; *.domain for subdomains, '*' for any); "
        "default: the --host address and localhost, 127.0.0.1, ::1; required with --host 0.0.0.0 or ::",
    )
    serve.add_argument(
        "--url",
        help="serve a collection of this Qdrant server or cluster (http://host:6333); INDEX is the collection's name",
    )
    serve.add_argument(
        "--qdrant-api-key-env",
        metavar="VAR",
        help="environment variable holding the Qdrant server's API key (default: QDRANT_API_KEY, when set)",
    )


def _add_access_arguments(serve: argparse.ArgumentParser) -> None:
    """Who may read and write: the API key (from a file, never a flag) and read-only serving."""
    serve.add_argument(
        "--api-key-file",
        metavar="FILE",
        help=f"file holding the API key clients send as 'Authorization: Bearer KEY' (default: ${KEY_ENV} if set)",
    )
    serve.add_argument(
        "--require-key-for-reads", action="store_true", help="searches, embeddings and health need the key"
    )
    serve.add_argument(
        "--allow-unauthenticated-writes",
        action="store_true",
        help="accept writes without a key (only where every client that can reach the port is trusted)",
    )
    serve.add_argument("--read-only", action="store_true", help="refuse writes; another process may write the index")


def _add_throughput_arguments(serve: argparse.ArgumentParser) -> None:
    """Worker processes, micro-batching of queries and concurrent searches."""
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes (default 1); with more than one the server is read-only and sees other writers' commits",
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="how long a query waits for others to share its forward pass (default 2; 0 = no micro-batching)",
    )
    serve.add_argument("--max-batch", type=int, default=64, help="texts per forward pass, at most (default 64)")
    serve.add_argument(
        "--search-threads",
        type=int,
        default=None,
        help="searches run at once, at most; more wait their turn (default: the CPU cores, at least 2)",
    )


def _add_connection_limits(connections: argparse._ArgumentGroup) -> None:
    """How long a client may take and how many may connect (uvicorn's, bounded here)."""
    connections.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's headers, else 408 and closed (default 10; 0 = none)",
    )
    connections.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request's body once its headers arrived, else 408 (default 30)",
    )
    connections.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    connections.add_argument(
        "--limit-concurrency",
        type=int,
        default=256,
        help="open connections or requests in progress, at most; 503 beyond (default 256)",
    )
    connections.add_argument(
        "--backlog", type=int, default=2048, help="connections waiting to be accepted, at most (default 2048)"
    )


def read_api_key(path: str | None) -> str | None:
    """The API key from ``path`` (its first line, stripped), else from ``$COLBERT_AZ_API_KEY``, else ``None``."""
    if path is None:
        key = os.environ.get(KEY_ENV)
        if key is not None and not key.strip():
            raise InvalidArgumentError(f"${KEY_ENV} is empty; put the key in it, or unset it")
        return check_api_key(key, f"${KEY_ENV}") if key else None
    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.readline().strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the API key file {path}: {first_line(exc)}") from exc
    if not key:
        raise InvalidArgumentError(f"the API key file {path} is empty; put the key on its first line")
    key = check_api_key(key, f"the API key in {path}")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        print(f"warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
    return key


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The ``Host`` names a server bound to ``host`` answers: that address, the localhost names and ``extra``.

    Examples
    --------
    >>> allowed_hosts("127.0.0.1", ["search.example.az"])
    ['127.0.0.1', 'localhost', '::1', 'search.example.az']
    >>> allowed_hosts("0.0.0.0", [])
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: --host 0.0.0.0 listens on every address: name the hosts \
clients use with --allowed-host NAME (repeatable), or --allowed-host '*' to answer any Host header
    """
    if host in ANY_ADDRESS and not extra:
        raise InvalidArgumentError(
            f"--host {host or repr('')} listens on every address: name the hosts clients use with --allowed-host NAME "
            "(repeatable), or --allowed-host '*' to answer any Host header"
        )
    names = ([] if host in ANY_ADDRESS else [host]) + ["localhost", "127.0.0.1", "::1"] + list(extra)
    return list(dict.fromkeys(name.strip().lower().strip("[]") if name != "*" else name for name in names))


def _positive(value: float, flag: str, zero: bool = False) -> float:
    if not (value >= 0 if zero else value > 0) or value > 86400:
        raise InvalidArgumentError(f"{flag} must be a number of seconds {'>= 0' if zero else '> 0'}, got {value}")
    return float(value)


def _check_numbers(args: argparse.Namespace) -> None:
    """The counts, timeouts, port and batch wait of ``serve``, each in its range (one line naming the flag)."""
    check_count(args.workers, "--workers")
    check_count(args.max_batch, "--max-batch")
    if args.search_threads is not None:
        check_count(args.search_threads, "--search-threads")
    check_count(args.limit_concurrency, "--limit-concurrency")
    check_count(args.backlog, "--backlog")
    _positive(args.header_timeout, "--header-timeout", zero=True)
    _positive(args.body_timeout, "--body-timeout")
    _positive(args.keep_alive_timeout, "--keep-alive-timeout")
    if not 0 <= args.port <= 65535:
        raise InvalidArgumentError(f"--port must be 0-65535, got {args.port}")
    if not args.batch_wait_ms >= 0 or args.batch_wait_ms > 1000:
        raise InvalidArgumentError(f"--batch-wait-ms must be 0-1000 milliseconds, got {args.batch_wait_ms}")


def _built_once_title(index: str) -> str | None:
    """The title of ``index``'s backend when it is written once (PLAID: served read-only, whatever the flags)."""
    try:
        backend = detect_backend(index)
    except ColbertAzError:  # not an index: Searcher.open says so in its own words, when it opens it
        return None
    if backend is None or BACKENDS[backend].updatable:
        return None
    return BACKENDS[backend].title


def server_settings(args: argparse.Namespace) -> dict:
    """Every setting of the server, checked, as plain JSON values (what each worker process receives)."""
    _check_numbers(args)
    limits = {field: check_count(getattr(args, field), flag) for field, (flag, _, _) in LIMIT_FLAGS.items()}
    hosts = allowed_hosts(args.host, args.allowed_host)
    AllowedHosts(hosts)  # each one a name, *.domain or *
    key = read_api_key(args.api_key_file)
    if args.require_key_for_reads and key is None:
        raise InvalidArgumentError(f"--require-key-for-reads needs a key: give --api-key-file (or ${KEY_ENV})")
    if args.qdrant_api_key_env is not None and args.url is None:
        raise InvalidArgumentError("--qdrant-api-key-env is for a Qdrant server; give its --url too")
    if args.qdrant_api_key_env is not None and not os.environ.get(args.qdrant_api_key_env):
        raise InvalidArgumentError(
            f"--qdrant-api-key-env names {args.qdrant_api_key_env}, which is not set; export the Qdrant key there"
        )
    if args.url is None and not os.path.isdir(args.index):
        raise InvalidArgumentError(
            f"{args.index} is not an index folder; build one with `colbert-az index MODEL CORPUS --index DIR` "
            "(or give --url to serve a Qdrant server's collection)"
        )
    writable = not args.read_only and args.workers == 1 and (key is not None or args.allow_unauthenticated_writes)
    built_once = None if args.url is not None else _built_once_title(args.index)
    if built_once is not None:
        writable = False
    return {
        "built_once": built_once,
        "index": args.index,
        "url": args.url,
        "qdrant_api_key_env": args.qdrant_api_key_env,
        "allowed_hosts": hosts,
        "search_threads": args.search_threads,
        "body_timeout": args.body_timeout,
        "model": args.model,
        "encoder": args.encoder,
        "quantize": args.quantize,
        "api_key_file": args.api_key_file,
        "read_key_required": args.require_key_for_reads,
        "allow_unauthenticated_writes": args.allow_unauthenticated_writes,
        "writable": writable,
        "limits": limits,
        "batch_wait_ms": args.batch_wait_ms,
        "max_batch": args.max_batch,
    }


def _open_searcher(settings: dict):
    """The Searcher the server serves: the index with its recorded model (or ``--model``); the writer lock is
    taken only when the server accepts writes. The one place where the server loads a model."""
    from colbert_az_pylate.retrieval.searcher import Searcher

    server = {}
    if settings.get("url"):
        variable = settings.get("qdrant_api_key_env")
        server = {"url": settings["url"], "api_key": os.environ.get(variable) if variable else None}
    return Searcher.open(
        settings["index"],
        model=settings["model"],
        read_only=not settings["writable"],
        show_progress_bar=False,
        encoder=settings.get("encoder", "torch"),
        quantize=settings.get("quantize"),
        **server,
    )


def build_app(settings: dict):
    """The app for ``settings`` (see :func:`server_settings`), model and index loaded."""
    from colbert_az_pylate.serving.app import ServeLimits, create_app

    searcher = _open_searcher(settings)
    return create_app(
        searcher,
        api_key=read_api_key(settings["api_key_file"]),
        read_key_required=settings["read_key_required"],
        allow_unauthenticated_writes=settings["allow_unauthenticated_writes"],
        read_only=not settings["writable"],
        limits=ServeLimits(**settings["limits"]),
        batch_wait_ms=settings["batch_wait_ms"],
        max_batch=settings["max_batch"],
        allowed_hosts=settings["allowed_hosts"],
        search_threads=settings["search_threads"],
        body_timeout=settings["body_timeout"],
    )


def worker_app():
    """The app of one ``--workers`` process (a uvicorn factory; settings from the parent's environment)."""
    _configure_logging()
    return build_app(json.loads(os.environ[WORKER_ENV]))


LOG_QUEUE_RECORDS = 10_000  # log lines held for stderr before new ones are dropped (and counted)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands log records to a writer thread and never waits: the event loop must not stop because stderr is slow
    (a pipe nobody reads, a paused terminal). When ``LOG_QUEUE_RECORDS`` lines are waiting, new ones are dropped and
    counted; the writer says how many before the next line it writes.

    Examples
    --------
    >>> import logging, queue
    >>> handler = DroppingQueueHandler(queue.Queue(maxsize=1))
    >>> record = logging.makeLogRecord({"msg": "hello"})
    >>> handler.handle(record), handler.handle(record), handler.dropped
    (True, True, 1)
    """

    def __init__(self, records: queue.Queue) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _StderrWriter(logging.StreamHandler):
    def __init__(self, source: DroppingQueueHandler) -> None:
        super().__init__(sys.stderr)
        self.source, self.reported = source, 0

    def emit(self, record: logging.LogRecord) -> None:
        dropped = self.source.dropped
        if dropped > self.reported:
            self.stream.write(f"… {dropped - self.reported} log lines dropped: stderr was not read fast enough\n")
            self.reported = dropped
        super().emit(record)


def _configure_logging() -> None:
    """The server's log (access lines, warnings) to stderr through a writer thread (see DroppingQueueHandler)."""
    logger = logging.getLogger("colbert_az_pylate.serve")
    if logger.handlers:
        return
    handler = DroppingQueueHandler(queue.Queue(maxsize=LOG_QUEUE_RECORDS))
    writer = _StderrWriter(handler)
    writer.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    listener = logging.handlers.QueueListener(handler.queue, writer)
    listener.start()
    atexit.register(listener.stop)  # what is queued is written before the process ends
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def check_port_free(host: str, port: int) -> None:
    """A one-line :class:`InvalidArgumentError` when ``host:port`` cannot be bound (in use, no such address).

    >>> import socket
    >>> with socket.socket() as held:
    ...     held.bind(("127.0.0.1", 0)); held.listen()
    ...     check_port_free("127.0.0.1", held.getsockname()[1])
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: cannot serve on 127.0.0.1:... (Address already in use); ...
    """
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or first_line(exc)
        raise InvalidArgumentError(
            f"cannot serve on {host}:{port} ({reason}); stop what holds the port or choose another --port or --host"
        ) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``colbert-az serve`` until interrupted."""
    settings = server_settings(args)
    try:
        import uvicorn
    except ImportError as exc:
        raise InvalidArgumentError(
            f'serve needs the [serve] extra: pip install "colbert-az-pylate[serve]" ({first_line(exc)})'
        ) from exc
    check_port_free(args.host, args.port)  # before the model loads and "serving" is printed
    _configure_logging()
    mode = "read-write" if settings["writable"] else "read-only"
    if settings.get("built_once"):
        mode = f"read-only: a {settings['built_once']} index is built once"
    if args.workers > 1 and not args.read_only and (settings["api_key_file"] or args.allow_unauthenticated_writes):
        print(
            "note: with --workers > 1 the server is read-only (one process may hold the writer lock)", file=sys.stderr
        )
    if args.host not in ("127.0.0.1", "localhost", "::1") and read_api_key(args.api_key_file) is None:
        print(f"warning: serving on {args.host} without a key: anyone who reaches the port can search", file=sys.stderr)
    from colbert_az_pylate.serving.protocol import HEADER_TIMEOUT_ENV, uvicorn_options

    where = f"{args.url} collection {args.index}" if args.url else args.index
    print(f"… serving {where} ({mode}) on http://{args.host}:{args.port} (API at /openapi.json)", file=sys.stderr)
    common = {"host": args.host, "port": args.port, "access_log": False, "log_level": "warning"}
    common.update(
        uvicorn_options(
            header_timeout=args.header_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            limit_concurrency=args.limit_concurrency,
            backlog=args.backlog,
        )
    )
    if args.workers > 1:  # each worker process imports the protocol by name and reads its timeout from here
        os.environ[WORKER_ENV] = json.dumps(settings)
        os.environ[HEADER_TIMEOUT_ENV] = str(args.header_timeout)
        common["http"] = "colbert_az_pylate.serving.protocol:GuardedH11Protocol"
        uvicorn.run("colbert_az_pylate.cli.serve:worker_app", factory=True, workers=args.workers, **common)
        return 0
    uvicorn.run(build_app(settings), **common)
    return 0
