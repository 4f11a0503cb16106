"""Where exact MaxSim over every stored vector stops beating the graph search: the crossover behind
``EXACT_SEARCH_MAX_VECTORS`` (colbert_az_pylate/retrieval/voyager_index.py), and how close the exact path runs to
the arithmetic it does.

Documents are built from AZ-MIRAGE answers encoded by the MiniLM stand-in (spans of two answers' token vectors, as
in benchmarks/search_path.py); queries are AZ-MIRAGE questions, encoded once. For each corpus size one
``VoyagerIndex`` is built, and one query at a time is searched by ``exact_search`` and by the graph ``search``
(default settings), alternating, p50 over ``--queries`` queries. The crossover is the number of stored vectors
where the two p50 curves meet (linear interpolation between the sizes that straddle it), rounded down to 10,000.

The exact path is also timed against its own arithmetic: the same similarity matrix product alone (``torch.mm``
of the query's 32 rows by all stored rows, float32, the same thread pool), in the same process.

    HF_HUB_OFFLINE=1 python benchmarks/exact_crossover.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/exact-crossover.json`` (``--save``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SAVE = HERE / "results" / "exact-crossover.json"


def p50(function, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000, 16000, 32000])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--save", type=Path, default=DEFAULT_SAVE)
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(HERE))
    from search_path import answers_and_questions, model_folder, synthetic_corpus

    from colbert_az_pylate import load
    from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex

    model = load(str(model_folder()))
    texts, questions = answers_and_questions(args.dataset, 3000, args.queries)
    queries = [np.asarray(q, np.float32) for q in model.encode(questions, is_query=True, show_progress_bar=False)]
    vectors, _ = synthetic_corpus(model, texts, max(args.sizes))
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            index = VoyagerIndex(folder, "index", override=True, embedding_size=queries[0].shape[1])
            index.add_documents([str(i) for i in range(size)], vectors[:size])
            store = torch.from_numpy(index.float32_vectors())
            for query in queries[:3]:
                index.exact_search([query], k=10), index.search([query], k=10)
            exact_ms, graph_ms, matmul_ms = [], [], []
            for _ in range(3):  # alternate, so a slower moment of the machine favours neither
                exact_ms.append(p50(lambda q, index=index: index.exact_search([q], k=10), queries))
                graph_ms.append(p50(lambda q, index=index: index.search([q], k=10), queries))
                matmul_ms.append(p50(lambda q, store=store: torch.mm(torch.from_numpy(q), store.T), queries))
            exact, graph, matmul = (statistics.median(x) for x in (exact_ms, graph_ms, matmul_ms))
            gflop = 2 * queries[0].shape[0] * index.rows * queries[0].shape[1] / 1e9
            rows.append(
                {
                    "documents": size,
                    "vectors": index.rows,
                    "exact_p50_ms": round(exact, 2),
                    "graph_p50_ms": round(graph, 2),
                    "matmul_alone_p50_ms": round(matmul, 2),
                    "exact_over_matmul": round(exact / matmul, 2),
                    "exact_gflop_per_s": round(gflop / (exact / 1000), 1),
                    "matmul_gflop_per_s": round(gflop / (matmul / 1000), 1),
                }
            )
            index.close()
            print(json.dumps(rows[-1]), file=sys.stderr)
    crossover = None
    for before, after in itertools.pairwise(rows):
        gap_before = before["graph_p50_ms"] - before["exact_p50_ms"]
        gap_after = after["graph_p50_ms"] - after["exact_p50_ms"]
        if gap_before >= 0 > gap_after:
            share = gap_before / (gap_before - gap_after)
            crossover = before["vectors"] + share * (after["vectors"] - before["vectors"])
            break
    if crossover is None and rows and rows[-1]["graph_p50_ms"] >= rows[-1]["exact_p50_ms"]:
        crossover = rows[-1]["vectors"]  # exact wins up to the largest size measured
    record = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/exact_crossover.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
        "crossover_vectors": int(crossover // 10_000 * 10_000) if crossover else 0,
        "crossover_vectors_measured": round(crossover) if crossover else None,
        "results": rows,
    }
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
