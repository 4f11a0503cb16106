"""First stage for a multivector rerank: one mean vector per document against a MUVERA FDE.

Same corpus and embeddings as ``benchmarks/qdrant_first_stage.py`` (``retrieval.prepare`` / ``retrieval.corpus``:
AZ-MIRAGE answers and questions encoded by the MiniLM stand-in; each document joins spans of two answers). The first
stage is computed in numpy, not through Qdrant: the top-N documents by dot product of one vector per document with
one vector per query, then those N are ranked by exact MaxSim. Recall@10 is against exact MaxSim over the whole
corpus (``retrieval.exact_top10``).

- ``mean``: what ``QdrantIndex`` stores as ``"mean"`` (normalised mean of the normalised token vectors, cosine);
- ``muvera``: fastembed's ``Muvera`` postprocessor (``fastembed.postprocess.muvera``, pure numpy, no model):
  ``process_document`` (SimHash partitions, per-partition mean, empty partitions filled, random +-1 projection to
  ``dim_proj``, ``r_reps`` repetitions) and ``process_query`` (per-partition sum, no filling); FDE dimension
  ``r_reps * 2**k_sim * dim_proj``; no final projection.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/muvera_first_stage.py --size 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrieval import corpus, prepare


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _recalls(first: np.ndarray, exact: np.ndarray, truth: np.ndarray, depths: list[int]) -> dict[int, float]:
    """first, exact: (queries, documents) first-stage and MaxSim scores; truth: exact top 10 per query."""
    out = {}
    order = np.argsort(-first, axis=1, kind="stable")
    for depth in depths:
        hits = []
        for q in range(len(first)):
            candidates = order[q, :depth]
            top = candidates[np.argsort(-exact[q, candidates], kind="stable")[:10]]
            hits.append(len(set(top.tolist()) & set(truth[q].tolist())) / 10)
        out[depth] = round(float(np.mean(hits)), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--answers", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=192)
    parser.add_argument("--first-stage", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    parser.add_argument(
        "--muvera",
        nargs="+",
        default=["5,64,20", "5,16,20", "4,16,10", "3,8,8"],
        help="FDE settings as k_sim,dim_proj,r_reps",
    )
    parser.add_argument("--output", default="benchmarks/results/muvera-first-stage.json")
    args = parser.parse_args()

    from fastembed.postprocess.muvera import Muvera

    from colbert_az_pylate.scores import packed_maxsim_scores

    documents, queries = corpus(prepare(args.answers, args.queries), args.size)
    queries = np.stack(list(queries))
    packed = np.concatenate(documents)
    starts = np.concatenate([[0], np.cumsum([len(d) for d in documents])[:-1]])
    exact = np.stack([packed_maxsim_scores(q, packed, starts) for q in queries])
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    depths = args.first_stage
    rows = []

    doc_mean = _normalise(np.stack([_normalise(d).mean(axis=0) for d in documents]))
    query_mean = _normalise(np.stack([_normalise(q).mean(axis=0) for q in queries]))
    rows.append(
        {
            "first_stage_vector": "mean",
            "dimension": int(doc_mean.shape[1]),
            "recall_at_10": _recalls(query_mean @ doc_mean.T, exact, truth, depths),
        }
    )
    print(rows[-1], flush=True)

    for setting in args.muvera:
        k_sim, dim_proj, r_reps = (int(v) for v in setting.split(","))
        muvera = Muvera(dim=packed.shape[1], k_sim=k_sim, dim_proj=dim_proj, r_reps=r_reps, random_seed=42)
        started = time.perf_counter()
        doc_fde = np.stack([muvera.process_document(d) for d in documents]).astype(np.float32)
        encode_s = time.perf_counter() - started
        query_fde = np.stack([muvera.process_query(q) for q in queries]).astype(np.float32)
        rows.append(
            {
                "first_stage_vector": "muvera",
                "k_sim": k_sim,
                "dim_proj": dim_proj,
                "r_reps": r_reps,
                "dimension": int(doc_fde.shape[1]),
                "document_encode_s": round(encode_s, 1),
                "recall_at_10": _recalls(query_fde @ doc_fde.T, exact, truth, depths),
            }
        )
        print(rows[-1], flush=True)

    import fastembed

    result = {
        "size": args.size,
        "queries": len(queries),
        "token_dimension": int(packed.shape[1]),
        "fastembed": fastembed.__version__,
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
