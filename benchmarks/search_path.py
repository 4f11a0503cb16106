"""The whole search path, text in and hits out, against its own parts and against pylate's pipeline.

Corpus: AZ-MIRAGE answers (``--dataset``). At 2,000 documents they are real texts indexed by ``Searcher.index``; at
50,000 (more than the dataset's 7,257 distinct answers) each document joins spans of two encoded answers' token
vectors (real encoder outputs, as in benchmarks/retrieval.py) and carries the two answers' texts as payload.
Queries: AZ-MIRAGE questions, one per call. Model: the MiniLM stand-in (:mod:`colbert_az_pylate.standin`,
converted), the same for every path.

Each path runs in its own process, in a default environment (nothing set by hand), the paths rotating within each
of ``--rounds`` rounds; the table gives the median over rounds of each path's p50 per query:

- ``encode``: ``colbert_az_pylate.load(model).encode([question], is_query=True)`` alone;
- ``index``: ``Searcher.search_encoded`` of already-encoded questions alone (what the searcher does after
  encoding: exact or graph search, whichever it picks, and the hits with their texts);
- ``searcher``: ``Searcher.search(question)``, text in, hits out;
- ``pylate``: plain pylate, ``models.ColBERT(model).encode`` then ``retrieve.ColBERT`` over pylate's
  ``indexes.Voyager`` (with the one fix pylate's Voyager needs under voyager >= 2.1, see benchmarks/retrieval.py).

``--load busy`` runs two CPU-bound processes (a Python busy loop each) beside the measured one, for the whole run.

    HF_HUB_OFFLINE=1 python benchmarks/search_path.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/search-path.json`` (``--save``), which docs/benchmarks.md cites.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("COLBERT_AZ_BENCH_CACHE", Path.home() / ".cache" / "colbert_az_bench")) / "search-path"
PATHS = ["encode", "index", "searcher", "pylate"]
DEFAULT_SAVE = HERE / "results" / "search-path.json"


def answers_and_questions(dataset: Path, answers: int, questions: int) -> tuple[list[str], list[str]]:
    rows = json.loads(Path(dataset).read_text(encoding="utf-8"))
    texts = list(dict.fromkeys(a.strip() for row in rows for a in row["answer"] if a.strip()))[:answers]
    return texts, [row["query"] for row in rows[-questions:]]


def model_folder() -> Path:
    folder = CACHE / "model"
    if not (folder / "modules.json").exists():
        import tempfile

        from colbert_az_pylate import convert
        from colbert_az_pylate.standin import build_minilm_standin

        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            convert(build_minilm_standin(Path(tmp) / "raw"), folder)
    return folder


def synthetic_corpus(model, texts: list[str], size: int, seed: int = 0):
    """``size`` documents, each two spans of two encoded answers, with the answers' texts as its text."""
    encoded = model.encode(texts, is_query=False, batch_size=64, show_progress_bar=True)
    rng = np.random.default_rng(seed)
    vectors, payload_texts = [], []
    for _ in range(size):
        pair = rng.choice(len(encoded), 2, replace=False)
        pieces = []
        for sentence in pair:
            span = int(rng.integers(8, 25))
            first = int(rng.integers(0, max(1, len(encoded[sentence]) - span)))
            pieces.append(np.asarray(encoded[sentence][first : first + span], np.float32))
        vectors.append(np.concatenate(pieces))
        payload_texts.append(" ".join(texts[i] for i in pair))
    return vectors, payload_texts


def build(dataset: Path, size: int) -> dict:
    """The index folders of one corpus size (cached): ours and pylate's Voyager."""
    folder = CACHE / f"corpus-{size}"
    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    import shutil

    sys.path.insert(0, str(HERE))
    from retrieval import fixed_pylate_voyager  # the one fix pylate's Voyager needs

    from colbert_az_pylate import Searcher, load

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    model = load(str(model_folder()))
    texts, _ = answers_and_questions(dataset, min(size, 3000), 0)
    searcher = Searcher(model, folder / "ours", show_progress_bar=True)
    ids = [str(i) for i in range(size)]
    if size <= len(texts):
        texts = texts[:size]
        searcher.index(texts, ids=ids, passages=False)
        vectors = [searcher.index_store.document_embeddings(i) for i in ids]
    else:
        vectors, texts = synthetic_corpus(model, texts, size)
        searcher.index_store.add_documents(ids, vectors, payloads=[{"text": t} for t in texts])
    pylate_index = fixed_pylate_voyager(index_folder=str(folder), index_name="pylate", override=True)
    pylate_index.add_documents(documents_ids=ids, documents_embeddings=vectors)
    record = {"size": size, "vectors": int(sum(len(v) for v in vectors)), "ours": str(folder / "ours")}
    record["pylate"] = [str(folder), "pylate"]
    done.write_text(json.dumps(record))
    return record


def worker(path: str, corpus: dict, questions: list[str]) -> dict:
    """One path, in this process: p50 per query over ``questions`` (after three warm-up queries)."""
    if path == "pylate":
        sys.path.insert(0, str(HERE))
        from pylate import models, retrieve
        from retrieval import fixed_pylate_voyager

        model = models.ColBERT(str(model_folder()), device="cpu")
        index = fixed_pylate_voyager(index_folder=corpus["pylate"][0], index_name=corpus["pylate"][1], override=False)
        retriever = retrieve.ColBERT(index=index)

        def run(question):
            encoded = model.encode([question], is_query=True, show_progress_bar=False)
            return retriever.retrieve(queries_embeddings=encoded, k=10)

    else:
        from colbert_az_pylate import Searcher

        searcher = Searcher.open(corpus["ours"], model=str(model_folder()), show_progress_bar=False)
        if path == "encode":

            def run(question):
                return searcher.model.encode([question], is_query=True, show_progress_bar=False)

        elif path == "index":
            encoded = {q: searcher.encode_queries([q]) for q in questions}

            def run(question):
                return searcher.search_encoded(encoded[question], k=10)

        else:

            def run(question):
                return searcher.search(question, k=10)

    for question in questions[:3]:
        run(question)
    times = []
    for question in questions:
        start = time.perf_counter()
        run(question)
        times.append(time.perf_counter() - start)
    return {"p50_ms": statistics.median(times) * 1000, "mean_ms": statistics.fmean(times) * 1000}


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 50000])
    parser.add_argument("--loads", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--save", type=Path, default=DEFAULT_SAVE)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _, questions = answers_and_questions(args.dataset, 0, args.queries)
    if args.worker:
        path, corpus = json.loads(args.worker)
        print(json.dumps(worker(path, corpus, questions)))
        return
    corpora = {size: build(args.dataset, size) for size in args.sizes}
    results = []
    for size in args.sizes:
        for load in args.loads:
            helpers = busy_processes(2) if load == "busy" else []
            try:
                rounds = {path: [] for path in args.paths}
                for round_number in range(args.rounds):
                    order = args.paths[round_number % len(args.paths) :] + args.paths[: round_number % len(args.paths)]
                    for path in order:
                        command = [
                            sys.executable,
                            __file__,
                            "--dataset",
                            str(args.dataset),
                            "--queries",
                            str(args.queries),
                            "--worker",
                            json.dumps([path, corpora[size]]),
                        ]
                        answer = subprocess.run(command, check=True, capture_output=True, text=True)
                        rounds[path].append(json.loads(answer.stdout.strip().splitlines()[-1])["p50_ms"])
                        print(
                            f"size {size} {load} round {round_number} {path}: {rounds[path][-1]:.1f} ms",
                            file=sys.stderr,
                        )
            finally:
                for helper in helpers:
                    helper.kill()
            row = {"size": size, "vectors": corpora[size]["vectors"], "load": load}
            row.update({f"{path}_p50_ms": round(statistics.median(times), 2) for path, times in rounds.items()})
            row["rounds"] = rounds
            if {"encode", "index", "searcher"} <= set(rounds):
                row["searcher_over_parts"] = round(
                    row["searcher_p50_ms"] / (row["encode_p50_ms"] + row["index_p50_ms"]), 3
                )
            if {"pylate", "searcher"} <= set(rounds):
                row["searcher_over_pylate"] = round(row["searcher_p50_ms"] / row["pylate_p50_ms"], 3)
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), file=sys.stderr)
    record = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/search_path.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
