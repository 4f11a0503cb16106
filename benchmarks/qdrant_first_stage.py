"""QdrantIndex (embedded): exact MaxSim vs a mean-vector first stage (prefetch) + MaxSim rerank, same embeddings.

Embeddings and documents as in ``benchmarks/retrieval.py`` (AZ-MIRAGE answers and questions encoded by the
MiniLM stand-in; each document joins spans of two encoded answers). Recall@10 is against exact MaxSim over the
same vectors (numpy); p50 is per query on the embedded client (pure Python, so only the ratio between rows says
something about a server).

    HF_HUB_OFFLINE=1 python benchmarks/qdrant_first_stage.py --size 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrieval import corpus, exact_top10, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--answers", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=192)
    parser.add_argument("--first-stage", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    parser.add_argument("--output", default="benchmarks/results/qdrant-first-stage.json")
    args = parser.parse_args()

    from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex

    documents, queries = corpus(prepare(args.answers, args.queries), args.size)
    queries = list(queries)
    truth = exact_top10(documents, np.stack(queries))
    ids = [str(i) for i in range(len(documents))]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        index = QdrantIndex(folder, "q", embedding_size=documents[0].shape[1], batch_size=256)
        index.add_documents(ids, documents)
        build_s = time.perf_counter() - started
        for first_stage in [None, *args.first_stage]:
            found, times = [], []
            for query in queries:
                begin = time.perf_counter()
                hits = index.search([query], k=10, first_stage=first_stage)[0]
                times.append(time.perf_counter() - begin)
                found.append([int(hit["id"]) for hit in hits])
            recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
            rows.append(
                {
                    "first_stage": first_stage,
                    "recall_at_10": round(recall, 4),
                    "p50_ms": round(1000 * float(np.median(times)), 1),
                }
            )
            print(rows[-1], flush=True)
        index.close()
    result = {"size": args.size, "queries": len(queries), "build_s": round(build_s, 1), "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
