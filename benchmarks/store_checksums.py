"""What the store checksums of ``VoyagerIndex`` cost: opening, the first search, ``verify()``, adding.

A 10k-document index of random unit vectors (dim 128, 20-40 tokens per document, about 0.3M vectors as in the
retrieval benchmark) with a ~300-byte payload each. Every timing is taken with the store in the page cache, so it
measures hashing, not the disk. "First search" opens the index afresh and searches 32 queries of 32 tokens; the same
search with chunk checking switched off is the baseline.

    python benchmarks/store_checksums.py                 # writes benchmarks/results/store-checksums.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex


def timed(call, repeat: int = 5) -> float:
    """Best of ``repeat`` wall-clock seconds."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "store-checksums.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    documents = [
        rng.standard_normal((int(rng.integers(20, 41)), 128)).astype(np.float32) for _ in range(args.documents)
    ]
    payloads = [{"text": "Azərbaycan " * 25, "metadata": {"n": i}} for i in range(args.documents)]
    queries = [rng.standard_normal((32, 128)).astype(np.float32) for _ in range(32)]
    ids = [f"d{i}" for i in range(args.documents)]
    with tempfile.TemporaryDirectory() as folder:
        index = VoyagerIndex(folder, "bench", embedding_size=128)
        began = time.perf_counter()
        index.add_documents(ids, documents, payloads=payloads)
        add_s = time.perf_counter() - began
        store = index.vectors_file.stat().st_size
        hash_new_s = timed(lambda: __import__("hashlib").sha256(index.vectors_file.read_bytes()).digest(), 3)
        index.close()

        def open_index() -> VoyagerIndex:
            return VoyagerIndex(folder, "bench", embedding_size=128, read_only=True)

        def first_search(check: bool) -> None:
            opened = open_index()
            if not check:
                opened._verify_vector_rows = lambda starts, lengths: None
            hits = opened.search(queries, k=10)
            [opened.payload(hit["id"]) for query in hits for hit in query]

        open_index().verify()  # page cache warm
        result = {
            "documents": args.documents,
            "vectors": int(open_index().rows),
            "vector_store_mb": round(store / 2**20, 1),
            "payload_store_mb": round(open_index().payload_bytes / 2**20, 1),
            "open_s": round(timed(open_index), 3),
            "first_search_32_queries_s": round(timed(lambda: first_search(True)), 3),
            "first_search_without_checks_s": round(timed(lambda: first_search(False)), 3),
            "verify_s": round(timed(lambda: open_index().verify()), 3),
            "add_documents_s": round(add_s, 1),
            "hash_whole_vector_store_s": round(hash_new_s, 3),
            "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
            "command": "python benchmarks/store_checksums.py",
        }
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
