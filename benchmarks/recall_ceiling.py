"""Where the approximate search loses recall: the graph, or token-level candidate generation itself?

On the retrieval benchmark's corpus (see ``benchmarks/retrieval.py``; same cached embeddings and exact top 10), this
builds one ``VoyagerIndex`` at its defaults and measures recall@10 against exact MaxSim for

- ``VoyagerIndex.search`` (graph neighbours per query token, exact rerank),
- pylate's ``retrieve.ColBERT`` over the same index (must equal the line above: same candidates, same MaxSim),
- the ceiling: the *exact* ``k_token`` nearest token vectors per query token (brute force), then the same rerank.

    HF_HUB_OFFLINE=1 python benchmarks/recall_ceiling.py --size 50000 --k-token 256 --builds 2
    # benchmarks/results/recall-ceiling.json

The graph is built ``--builds`` times (voyager inserts with several threads, so each build is a different graph);
the ceiling does not depend on the graph and is computed once. The embeddings and the exact top 10 are
``benchmarks/retrieval.py``'s cache; what is missing is computed (and cached) here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import retrieval as bench  # the benchmark's corpus and cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--k-token", type=int, default=256)
    parser.add_argument("--builds", type=int, default=2, help="independent builds of the graph (default: 2)")
    parser.add_argument("--output", default="benchmarks/results/recall-ceiling.json")
    args = parser.parse_args()
    from pylate.retrieve import ColBERT

    from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex
    from colbert_az_pylate.scores import packed_maxsim_scores

    documents, queries = bench.corpus(bench.prepare(3000, 192), args.size)
    truth_file = bench.CACHE / f"truth-{args.size}.npy"
    if not truth_file.exists():
        np.save(truth_file, bench.exact_top10(documents, queries))
    truth = np.load(truth_file)
    builds = []
    for _ in range(args.builds):
        folder = Path(tempfile.mkdtemp(dir=bench.CACHE))
        try:
            index = VoyagerIndex(str(folder), "ceiling", override=True, embedding_size=queries.shape[-1])
            index.add_documents([str(i) for i in range(len(documents))], documents)
            retriever = ColBERT(index=index)
            retriever._show_progress = lambda: False
            ours, in_pylate = [], []
            for start in range(0, len(queries), 32):
                batch = list(queries[start : start + 32])
                ours += [[h["id"] for h in q] for q in index.search(batch, k=10, k_token=args.k_token)]
                hits = retriever.retrieve(batch, k=10, k_token=args.k_token, batch_size=32, device="cpu")
                in_pylate += [[h["id"] for h in q] for q in hits]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        builds.append(
            {
                "recall@10 VoyagerIndex.search": round(bench.recall(ours, truth), 3),
                "recall@10 pylate retrieve.ColBERT over VoyagerIndex": round(bench.recall(in_pylate, truth), 3),
            }
        )
        print(json.dumps(builds[-1]), flush=True)

    packed = np.concatenate(documents).astype(np.float32)
    lengths = np.array([len(d) for d in documents])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    owner = np.repeat(np.arange(len(documents)), lengths)
    ceiling = []
    for query in queries:
        nearest = np.argpartition(-(query @ packed.T), args.k_token, axis=1)[:, : args.k_token]
        candidates = np.unique(owner[nearest])
        scores = packed_maxsim_scores(query, packed, starts)[candidates]
        ceiling.append(candidates[np.argsort(-scores, kind="stable")[:10]].tolist())
    result = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/recall_ceiling.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "size": args.size,
        "vectors": len(packed),
        "queries": len(queries),
        "k_token": args.k_token,
        "index": "VoyagerIndex defaults (M 16, ef_construction 64, ef_search 256, float8)",
        "builds": builds,
        "recall@10 exact token neighbours (ceiling)": round(bench.recall(ceiling, truth), 3),
    }
    print(json.dumps(result, indent=1))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
