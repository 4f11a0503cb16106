"""Retrieval benchmark: VoyagerIndex vs pylate's Voyager (with the array fix) vs PLAID vs QdrantIndex vs exact MaxSim,
same embeddings.

Embeddings are real: AZ-MIRAGE answers and questions (``../shared/data/az-mirage/dataset.json``) encoded by the
MiniLM stand-in (:mod:`colbert_az_pylate.standin`, converted). Encoding 50k passages takes too long on 2 cores, so
documents are built from the encoded answers: each joins a span of one answer's token vectors with a span of
another's (real encoder outputs, ~32 tokens per document, every document distinct). Queries are real questions.

Each system runs in its own process (peak memory = that process's max RSS minus its RSS once the embeddings are
loaded). Recall@10 is measured against exact MaxSim over the same vectors.

    HF_HUB_OFFLINE=1 python benchmarks/retrieval.py --sizes 10000 50000          # the docs/benchmarks.md table
    HF_HUB_OFFLINE=1 python benchmarks/retrieval.py --sizes 10000 --tradeoff     # settings trade-off
    HF_HUB_OFFLINE=1 python benchmarks/retrieval.py --sizes 10000 --M 16 --ef-construction 64 --ef-search 256 \
        --k-token 256 --systems exact ours qdrant qdrant+first-stage \
        --output benchmarks/results/backends-10k.json                            # the backends / sizing table

``qdrant`` is ``QdrantIndex`` embedded (exact multivector MaxSim in qdrant-client's pure-Python local mode);
``qdrant+first-stage`` adds the mean-vector prefetch of ``--first-stage`` candidates. Embedded Qdrant scores one
query in about a second at 10k documents, so its systems time each query of the recall pass singly (that is their
p50) and skip the batch-of-32 pass; ``--qdrant-queries`` measures them on the first N queries only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("COLBERT_AZ_BENCH_CACHE", Path.home() / ".cache" / "colbert_az_bench"))
DATASET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "az-mirage" / "dataset.json"


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """Start the peak-RSS counter (VmHWM) afresh, so imports and corpus loading do not count."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------- embeddings
def prepare(answers: int, queries: int) -> Path:
    """Encode answers and questions once (cached)."""
    target = CACHE / f"embeddings-{answers}-{queries}.npz"
    if target.exists():
        return target
    from colbert_az_pylate import convert, load
    from colbert_az_pylate.standin import build_minilm_standin

    rows = json.loads(DATASET.read_text(encoding="utf-8"))
    texts = list(dict.fromkeys(a for row in rows for a in row["answer"] if a.strip()))[:answers]
    questions = [row["query"] for row in rows[-queries:]]
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = build_minilm_standin(Path(tmp) / "raw")
        convert(raw, Path(tmp) / "converted")
        model = load(str(Path(tmp) / "converted"), device="cpu")
        documents = model.encode(texts, is_query=False, batch_size=64, show_progress_bar=True)
        encoded_queries = model.encode(questions, is_query=True, batch_size=64, show_progress_bar=True)
    lengths = np.array([len(d) for d in documents])
    np.savez(
        target,
        sentences=np.concatenate(documents).astype(np.float32),
        lengths=lengths,
        queries=np.stack(encoded_queries).astype(np.float32),
    )
    return target


def corpus(path: Path, size: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    data = np.load(path)
    vectors, lengths, queries = data["sentences"], data["lengths"], data["queries"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(size):
        a, b = rng.choice(len(lengths), 2, replace=False)
        pieces = []
        for sentence in (a, b):
            span = int(rng.integers(8, 25))
            first = int(rng.integers(0, max(1, lengths[sentence] - span)))
            pieces.append(vectors[starts[sentence] + first : starts[sentence] + min(lengths[sentence], first + span)])
        documents.append(np.concatenate(pieces))
    return documents, queries


def exact_top10(documents: list[np.ndarray], queries: np.ndarray) -> np.ndarray:
    from colbert_az_pylate.scores import packed_maxsim_scores

    packed = np.concatenate(documents)
    starts = np.concatenate([[0], np.cumsum([len(d) for d in documents])[:-1]])
    return np.stack([np.argsort(-packed_maxsim_scores(q, packed, starts), kind="stable")[:10] for q in queries])


# ------------------------------------------------------------------------------------------- systems
class _StackingGraph:
    """Forwards to a voyager index, stacking the lists of vectors pylate passes into the float32 arrays
    voyager >= 2.1 requires (the one fix pylate's Voyager needs)."""

    def __init__(self, graph) -> None:
        self.graph = graph

    def __getattr__(self, name):
        return getattr(self.graph, name)

    def add_items(self, vectors, *args, **kwargs):
        return self.graph.add_items(np.asarray(vectors, dtype=np.float32), *args, **kwargs)

    def query(self, vectors, *args, **kwargs):
        return self.graph.query(np.asarray(vectors, dtype=np.float32), *args, **kwargs)


def fixed_pylate_voyager(*args, **kwargs):
    """pylate's Voyager, unchanged but for the array stacking."""
    from pylate.indexes import Voyager

    index = Voyager(*args, **kwargs)
    index.index = _StackingGraph(index.index)
    return index


def pool_documents(documents: list[np.ndarray], pool_factor: int) -> list[np.ndarray]:
    """pylate's hierarchical token pooling, as ``Searcher(..., pool_factor=...)`` applies it."""
    from colbert_az_pylate.retrieval.pooling import pool_document_tokens

    return [pool_document_tokens(d, pool_factor) for d in documents]


def latencies(search, queries: np.ndarray, batch: int) -> list[float]:
    times = []
    for start in range(0, len(queries) - batch + 1, batch):
        began = time.perf_counter()
        search(list(queries[start : start + batch]))
        times.append((time.perf_counter() - began) * 1000)
    return times


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    return float(np.mean([len({int(i) for i in f} & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))


def worker(args) -> dict:
    documents, queries = corpus(Path(args.embeddings), args.size)
    truth = np.load(args.truth)
    ids = [str(i) for i in range(len(documents))]
    import pylate.retrieve  # noqa: F401 - every system pays its imports before the baseline
    import voyager  # noqa: F401

    import colbert_az_pylate.retrieval.voyager_index

    if args.system.startswith("qdrant"):
        import qdrant_client  # noqa: F401

        import colbert_az_pylate.retrieval.qdrant_index  # noqa: F401

    base_rss = rss_mb()
    reset_peak()
    folder = Path(tempfile.mkdtemp(dir=CACHE))
    result = {"system": args.system, "size": args.size, "vectors": int(sum(len(d) for d in documents))}
    settings = {"M": args.M, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
    try:
        began = time.perf_counter()
        if args.pool_factor > 1:  # pooled at index time, counted in the build; truth stays unpooled exact MaxSim
            documents = pool_documents(documents, args.pool_factor)
            result["pooled_vectors"] = int(sum(len(d) for d in documents))
        if args.system == "exact":
            from colbert_az_pylate.scores import packed_maxsim_scores

            packed = np.concatenate(documents)
            starts = np.concatenate([[0], np.cumsum([len(d) for d in documents])[:-1]])

            def search(batch):
                return [[str(i) for i in np.argsort(-packed_maxsim_scores(q, packed, starts))[:10]] for q in batch]

        elif args.system == "pylate":
            from pylate.retrieve import ColBERT

            index = fixed_pylate_voyager(
                str(folder), "bench", override=True, embedding_size=queries.shape[-1], **settings
            )
            index.add_documents(ids, documents)
            retriever = ColBERT(index=index)
            retriever._show_progress = lambda: False

            def search(batch):
                hits = retriever.retrieve(batch, k=10, k_token=args.k_token, batch_size=len(batch), device="cpu")
                return [[h["id"] for h in q] for q in hits]

        elif args.system.startswith("qdrant"):
            from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex

            index = QdrantIndex(str(folder), "bench", override=True, embedding_size=queries.shape[-1], batch_size=256)
            index.add_documents(ids, documents)
            first_stage = args.first_stage if args.system == "qdrant+first-stage" else None
            if first_stage is not None:
                result["first_stage"] = first_stage

            def search(batch):
                return [[h["id"] for h in q] for q in index.search(batch, k=10, first_stage=first_stage)]

        elif args.system == "plaid":
            from colbert_az_pylate.retrieval.plaid_index import PlaidIndex

            index = PlaidIndex.build(folder / "bench", ids, documents, show_progress=False)

            def search(batch):
                return [[h["id"] for h in q] for q in index.search(batch, k=10)]

        else:
            from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex

            index = VoyagerIndex(
                str(folder), "bench", override=True, embedding_size=queries.shape[-1], storage=args.storage, **settings
            )
            index.add_documents(ids, documents)
            if args.system == "ours-in-pylate":
                from pylate.retrieve import ColBERT

                retriever = ColBERT(index=index)
                retriever._show_progress = lambda: False

                def search(batch):
                    hits = retriever.retrieve(batch, k=10, k_token=args.k_token, batch_size=len(batch), device="cpu")
                    return [[h["id"] for h in q] for q in hits]

            else:

                def search(batch):
                    return [[h["id"] for h in q] for q in index.search(batch, k=10, k_token=args.k_token)]

        result["build_s"] = time.perf_counter() - began
        if args.system.startswith("qdrant"):  # ~1 s a query embedded: one timed pass, single queries
            if args.qdrant_queries:
                queries, truth = queries[: args.qdrant_queries], truth[: args.qdrant_queries]
            found, single = [], []
            for query in queries:
                began = time.perf_counter()
                found += search([query])
                single.append((time.perf_counter() - began) * 1000)
            result["queries"] = len(queries)
            result["recall@10"] = recall(found, truth)
            result.update(p50_ms=float(np.percentile(single, 50)), p95_ms=float(np.percentile(single, 95)))
            result.update(batch32_p50_ms=None, batch32_p95_ms=None)
        else:
            found = [hits for start in range(0, len(queries), 32) for hits in search(list(queries[start : start + 32]))]
            result["recall@10"] = recall(found, truth)
            single = latencies(search, queries[: args.latency_queries], 1)
            batched = latencies(search, queries, 32)
            result.update(
                p50_ms=float(np.percentile(single, 50)),
                p95_ms=float(np.percentile(single, 95)),
                batch32_p50_ms=float(np.percentile(batched, 50)),
                batch32_p95_ms=float(np.percentile(batched, 95)),
            )
        result["peak_mb"] = peak_mb() - base_rss
        if args.system.startswith("qdrant"):
            index.close()
        result["disk_mb"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def run_system(embeddings: Path, truth: Path, size: int, system: str, **settings) -> dict:
    command = [sys.executable, __file__, "--worker", system, "--size", str(size), "--embeddings", str(embeddings)]
    command += ["--truth", str(truth)]
    for key, value in settings.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:  # recorded, not fatal: one failed system must not lose the others' figures
        error = (finished.stderr.strip().splitlines() or [f"exit {finished.returncode}"])[-1]
        result = {"system": system, "size": size, "error": error}
    else:
        result = json.loads(finished.stdout.strip().splitlines()[-1])
    result.update(settings)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


# (M, ef_construction, graph storage, k_token, pool_factor) of VoyagerIndex swept by --tradeoff
TRADEOFF_GRID = [
    (16, 64, "float8", 256, 1),  # the defaults of VoyagerIndex
    (8, 64, "float8", 256, 1),
    (16, 64, "float8", 256, 2),  # document tokens pooled 2:1 (pylate's hierarchical pooling)
    (16, 64, "float8", 128, 2),
    (8, 64, "float8", 128, 1),
    (16, 64, "float8", 128, 1),
    (16, 100, "float32", 128, 1),
    (32, 100, "float8", 128, 1),
    (16, 100, "float8", 64, 1),
    (16, 100, "float8", 96, 1),
    (16, 100, "float8", 256, 1),
]


def report(results: list[dict]) -> str:
    """Markdown tables: each system at equal settings (ratios against pylate's Voyager of the same run), then
    the settings sweep of VoyagerIndex if present."""
    lines = [f"- {r['system']} at {r['size']:,} documents failed: {r['error']}" for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    sizes = sorted({r["size"] for r in results})
    for size in sizes:
        rows = [r for r in results if r["size"] == size]
        baseline = next((r for r in rows if r["system"] == "pylate"), None)
        equal = [r for r in rows if baseline is None or r["system"] == "exact" or _same_settings(r, baseline)]
        lines += [
            f"### {size:,} documents ({rows[0]['vectors']:,} token vectors)",
            "",
            "| system | M | ef_c | ef_s | k_token | build s | recall@10 | p50 ms | p95 ms | batch-32 p50 ms "
            "| peak MB | disk MB | build × | query × |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in equal + [r for r in rows if r not in equal]:
            faster = f"{baseline['p50_ms'] / r['p50_ms']:.2f}" if baseline else "-"
            build = f"{baseline['build_s'] / r['build_s']:.2f}" if baseline and r["system"] != "exact" else "-"
            settings = (
                "| - | - | - | - "
                if r["system"] in ("exact", "plaid") or r["system"].startswith("qdrant")
                else (f"| {r['M']} | {r['ef_construction']} | {r['ef_search']} | {r['k_token']} ")
            )
            label = r["system"]
            if "first_stage" in r:
                label += f" ({r['first_stage']})"
            if r.get("queries"):
                label += f" [{r['queries']} queries]"
            batch32 = "-" if r["batch32_p50_ms"] is None else f"{r['batch32_p50_ms']:.0f}"
            if r["system"] == "ours":
                pooled = f", pool {r['pool_factor']}" if r.get("pool_factor", 1) > 1 else ""
                label += f" ({r.get('storage', 'float8')}{pooled})"
            lines.append(
                f"| {label} "
                f"{settings}| {r['build_s']:.1f} | {r['recall@10']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                f"| {batch32} | {r['peak_mb']:.0f} | {r['disk_mb']:.0f} | {build} | {faster} |"
            )
        lines.append("")
    return "\n".join(lines)


def _same_settings(result: dict, baseline: dict) -> bool:
    keys = ("M", "ef_construction", "ef_search", "k_token")
    same = all(result.get(k) == baseline.get(k) for k in keys)
    return same and result.get("storage", "float8") == "float8" and result.get("pool_factor", 1) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--answers", type=int, default=3000, help="encoded answers the documents are built from")
    parser.add_argument("--queries", type=int, default=192)
    parser.add_argument("--latency-queries", type=int, default=64)
    parser.add_argument("--tradeoff", action="store_true", help="also sweep settings of VoyagerIndex")
    parser.add_argument("--output", default="benchmarks/results/retrieval.json")
    parser.add_argument("--systems", nargs="+", default=["exact", "pylate", "ours", "ours-in-pylate", "plaid"])
    parser.add_argument("--report", nargs="+", help="print the Markdown tables of result files and exit")
    parser.add_argument("--worker")
    parser.add_argument("--size", type=int)
    parser.add_argument("--embeddings")
    parser.add_argument("--truth")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--k-token", type=int, default=64)
    parser.add_argument("--storage", default="float8")
    parser.add_argument("--pool-factor", type=int, default=1, help="pool document tokens (pylate) before indexing")
    parser.add_argument("--first-stage", type=int, default=1000, help="mean-vector candidates of qdrant+first-stage")
    parser.add_argument("--qdrant-queries", type=int, default=0, help="qdrant systems: first N queries (0: all)")
    args = parser.parse_args()
    if args.report:
        print(report([r for path in args.report for r in json.loads(Path(path).read_text())]))
        return
    if args.worker:
        args.system = args.worker
        print(json.dumps(worker(args)))
        return

    embeddings = prepare(args.answers, args.queries)
    results = []
    for size in args.sizes:
        documents, queries = corpus(embeddings, size)
        truth = CACHE / f"truth-{size}.npy"
        np.save(truth, exact_top10(documents, queries))
        del documents
        common = {
            "M": args.M,
            "ef_construction": args.ef_construction,
            "ef_search": args.ef_search,
            "k_token": args.k_token,
        }
        for system in args.systems:
            extra = {}
            if system.startswith("qdrant"):
                extra["qdrant_queries"] = args.qdrant_queries
            if system == "qdrant+first-stage":
                extra["first_stage"] = args.first_stage
            results.append(run_system(embeddings, truth, size, system, **common, **extra))
        if args.tradeoff:
            pylate_defaults = {"M": 64, "ef_construction": 200, "ef_search": 200, "k_token": 100}
            results.append(run_system(embeddings, truth, size, "pylate", **pylate_defaults))
            for m, ef_c, storage, k_token, pool in TRADEOFF_GRID:
                settings = {"M": m, "ef_construction": ef_c, "ef_search": 256, "k_token": k_token, "storage": storage}
                settings["pool_factor"] = pool
                results.append(run_system(embeddings, truth, size, "ours", **settings))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
