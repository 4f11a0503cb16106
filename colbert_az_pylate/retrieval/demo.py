"""``colbert-az demo``: convert, verify, index a small Azerbaijani corpus and search it, with no network needed.

Takes LocalDoc/colbert-az when the hub can be reached; otherwise a stand-in on the packaged pretrained MiniLM
(:mod:`colbert_az_pylate.standin`), and says so.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from colbert_az_pylate.errors import InvalidArgumentError, SourceNotFoundError
from colbert_az_pylate.retrieval.corpus import SAMPLE_QUERIES

HUB_MODEL = "LocalDoc/colbert-az"


def _source(workdir: Path, say: Callable[[str], None]) -> tuple[Path, bool]:
    from colbert_az_pylate.conversion.checkpoint import resolve_source
    from colbert_az_pylate.standin import STANDIN_NAME, build_minilm_standin

    try:
        folder = resolve_source(HUB_MODEL, None)
        say(f"model: {HUB_MODEL} (downloaded from the hub)")
        return folder, True
    except SourceNotFoundError:
        say(
            f"model: the hub is not reachable, so this demo uses a STAND-IN: {STANDIN_NAME}, built locally in the "
            "colbert-az layout. Rankings show the pipeline working, not colbert-az's quality."
        )
        return build_minilm_standin(workdir / "standin"), False


def run_demo(
    queries: Sequence[str] = SAMPLE_QUERIES, k: int = 3, say: Callable[[str], None] = print, workdir: str | None = None
) -> dict:
    """Convert, verify, index the packaged corpus and search it, printing through ``say``.

    Every argument is checked before any work (the whole run takes about 15 s on 2 CPU cores).

    Parameters
    ----------
    queries
        The questions to search (default: five sample questions in Azerbaijani).
    k
        Hits shown per question, a whole number >= 1 (default 3).
    say
        Where the report lines go (default: ``print``).
    workdir
        Folder for the temporary model and index (default: the system's temporary folder); removed at the end.

    Returns
    -------
    dict
        What it measured: ``real_model``, ``parity_passed``, ``convert_seconds``, ``index_seconds``,
        ``documents`` and per query its ``ms`` and ``hits`` (for tests and ``--json``).

    Examples
    --------
    >>> run_demo(k=0)
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: k must be a whole number >= 1, got 0 (int)
    >>> result = run_demo(k=1, say=lambda line: None)  # doctest: +SKIP
    >>> result["results"][0]["hits"][0]["id"]  # doctest: +SKIP
    'baki'
    """
    from colbert_az_pylate.errors import check_count

    k = check_count(k, "k")
    if isinstance(queries, str):
        queries = [queries]
    queries = list(queries)
    if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
        raise InvalidArgumentError("queries must be non-empty texts")
    if workdir is not None and not Path(workdir).is_dir():
        raise InvalidArgumentError(f"workdir {workdir} is not a folder")
    from colbert_az_pylate.conversion import convert
    from colbert_az_pylate.retrieval.corpus import demo_corpus_path, read_corpus
    from colbert_az_pylate.retrieval.searcher import Searcher

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        work = Path(tmp)
        source, real = _source(work, say)
        started = time.perf_counter()
        report = convert(source, work / "converted", on_step=lambda message: say(f"  … {message}"))
        say(report.summary())
        convert_seconds = time.perf_counter() - started

        corpus = read_corpus(demo_corpus_path())
        started = time.perf_counter()
        searcher = Searcher(str(work / "converted"), work / "index", show_progress_bar=False)
        searcher.index(corpus.texts, ids=corpus.ids, metadata=corpus.metadata)
        index_seconds = time.perf_counter() - started
        say(f"indexed {len(corpus)} Azerbaijani passages in {index_seconds:.2f} s (encoding included)")

        results = []
        for query in queries:
            started = time.perf_counter()
            hits = searcher.search(query, k=k)
            milliseconds = (time.perf_counter() - started) * 1000
            say(f"\n{query}   ({milliseconds:.0f} ms, encoding included)")
            for rank, hit in enumerate(hits, 1):
                say(f"  {rank}. [{hit.score:6.2f}] {hit.id:<18} {hit.text[:90]}")
            results.append({"query": query, "ms": milliseconds, "hits": [h.to_dict() for h in hits]})
        return {
            "real_model": real,
            "parity_passed": bool(report.parity and report.parity.passed),
            "convert_seconds": convert_seconds,
            "index_seconds": index_seconds,
            "documents": len(corpus),
            "results": results,
        }
