"""Where the approximate search loses recall: the graph, or token-level candidate generation itself?

On the retrieval benchmark's corpus (see ``benchmarks/retrieval.py``; same cached embeddings and exact top 10), this
builds one ``VoyagerIndex`` at its defaults and measures recall@10 against exact MaxSim for

- ``VoyagerIndex.search`` (graph neighbours per query token, exact rerank),
- pylate's ``retrieve.ColBERT`` over the same index (must equal the line above: same candidates, same MaxSim),
- the ceiling: the *exact* ``k_token`` nearest token vectors per query token (brute force), then the same rerank.

    HF_HUB_OFFLINE=1 python benchmarks/recall_ceiling.py --size 50000 --k-token 256

Run ``benchmarks/retrieval.py`` at the same size first (it writes the embeddings and the exact top 10).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import retrieval as bench  # the benchmark's corpus and cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--k-token", type=int, default=256)
    args = parser.parse_args()
    from pylate.retrieve import ColBERT

    from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex
    from colbert_az_pylate.scores import packed_maxsim_scores

    truth_file = bench.CACHE / f"truth-{args.size}.npy"
    if not truth_file.exists():
        raise SystemExit(f"no {truth_file}: run benchmarks/retrieval.py --sizes {args.size} --systems exact first")
    documents, queries = bench.corpus(bench.prepare(3000, 192), args.size)
    truth = np.load(truth_file)
    folder = Path(tempfile.mkdtemp(dir=bench.CACHE))
    try:
        index = VoyagerIndex(str(folder), "ceiling", override=True, embedding_size=queries.shape[-1])
        began = time.perf_counter()
        index.add_documents([str(i) for i in range(len(documents))], documents)
        build = time.perf_counter() - began
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
    print(
        json.dumps(
            {
                "size": args.size,
                "vectors": len(packed),
                "k_token": args.k_token,
                "build_s": round(build, 1),
                "recall@10 VoyagerIndex.search": round(bench.recall(ours, truth), 3),
                "recall@10 pylate retrieve.ColBERT over VoyagerIndex": round(bench.recall(in_pylate, truth), 3),
                "recall@10 exact token neighbours (ceiling)": round(bench.recall(ceiling, truth), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
