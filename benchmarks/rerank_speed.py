"""Reranking 100 candidates: ``colbert_az_pylate.retrieval.rerank`` against pylate's own encode + ``rank.rerank``,
and ``POST /v1/rerank`` through a real ``colbert-az serve`` process with 1 and 8 clients.

Inputs: AZ-MIRAGE questions, each with 100 candidate answers drawn (seeded) from the dataset's distinct answers.
Model: the MiniLM stand-in (converted, as every benchmark here), loaded once per process.

- ``ours``: ``retrieval.rerank(model, question, candidates)`` (encode the query and the candidates, MaxSim, sort);
- ``pylate``: ``model.encode(question, is_query=True)``, ``model.encode(candidates, is_query=False)``, then
  ``pylate.rank.rerank`` — plain pylate on the same loaded model folder.

Each path runs in its own process, the paths alternating over ``--rounds`` rounds (2 CPU cores: never two at once);
the table gives the median over rounds of each path's p50 per question, and the paths' top-10 orders are compared.
``ours`` is also timed at each encoding batch size of ``BATCH_SIZES`` ("batch_sizes": the fastest is what
``colbert_az_pylate.retrieval.hits.RERANK_BATCH_SIZE`` must be; ``tests/test_search_path.py`` checks).
The served figures come from the real command on a free port (``--read-only``; the request is Cohere's shape), with
every served score compared with ``retrieval.rerank``'s.

    HF_HUB_OFFLINE=1 python benchmarks/rerank_speed.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/rerank-speed.json``, which docs/benchmarks.md cites.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_path import model_folder  # noqa: E402  (the converted stand-in, cached)

DEFAULT_SAVE = HERE / "results" / "rerank-speed.json"
BATCH_SIZES = (4, 8, 16, 32)  # rerank's encoding batch: the fastest becomes RERANK_BATCH_SIZE (a test checks)


def inputs(dataset: Path, questions: int, candidates: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rows = json.loads(Path(dataset).read_text(encoding="utf-8"))
    answers = list(dict.fromkeys(a.strip() for row in rows for a in row["answer"] if a.strip()))
    chooser = random.Random(seed)
    return [(row["query"], chooser.sample(answers, candidates)) for row in rows[:questions]]


def child(path: str, model_path: str, work: list) -> dict:
    """One path's timings in this process: p50 ms per question, and each question's top-10 candidate positions.
    ``path`` is ``ours`` (rerank's default batch), ``ours@N`` (a batch of N) or ``pylate``."""
    import numpy as np

    if path.startswith("ours"):
        from colbert_az_pylate import load
        from colbert_az_pylate.retrieval import rerank

        model = load(model_path)
        batch_size = int(path.partition("@")[2]) if "@" in path else None

        def run(question, texts):
            return [int(hit.id) for hit in rerank(model, question, texts, batch_size=batch_size)[:10]]
    else:
        from pylate import models, rank

        model = models.ColBERT(model_path, device="cpu")

        def run(question, texts):
            query = model.encode([question], is_query=True, show_progress_bar=False)
            documents = model.encode(texts, is_query=False, show_progress_bar=False)
            ranked = rank.rerank([[str(i) for i in range(len(texts))]], query, [documents])
            return [int(entry["id"]) for entry in ranked[0][:10]]

    run(*work[0])  # warm-up
    times, tops = [], []
    for question, texts in work:
        started = time.perf_counter()
        tops.append(run(question, texts))
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.median(times)), "tops": tops}


def served(model_path: str, work: list, requests: int) -> dict:
    """``/v1/rerank`` of a real server process: its scores against ``retrieval.rerank``, then p50 and req/s."""
    import httpx
    from serve_load import ServerProcess, drive

    from colbert_az_pylate import load
    from colbert_az_pylate.retrieval import rerank
    from colbert_az_pylate.retrieval.searcher import Searcher

    model = load(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        Searcher(model, Path(tmp) / "index", show_progress_bar=False).index(["Bakı"])  # serve needs an index
        server = ServerProcess(Path(tmp) / "index", "--read-only")
        try:
            worst = 0.0
            for question, texts in work[:5]:
                expected = {int(hit.id): hit.score for hit in rerank(model, question, texts)}
                body = {"query": question, "documents": texts, "top_n": len(texts)}
                answer = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=120).json()
                worst = max([worst, *(abs(r["relevance_score"] - expected[r["index"]]) for r in answer["results"])])
            report: dict = {"max_score_difference": worst}
            for clients in (1, 8):
                todo = [work[i % len(work)] for i in range(requests)]
                figures, _, errors = drive(server.url, todo, clients, _rerank_request)
                if errors:
                    raise RuntimeError(f"{len(errors)} requests failed: {errors[0][:200]}")
                report[f"clients_{clients}"] = figures
        finally:
            server.stop()
    return report


def batch_sizes(figures: dict[str, list[float]], tops: dict[str, list]) -> dict:
    """``rerank``'s p50 at each measured batch size (median over rounds), the fastest, and whether every size ranked
    the same top 10 (a batch must not change a score beyond float noise)."""
    p50 = {size: statistics.median(figures[f"ours@{size}"]) for size in BATCH_SIZES}
    return {
        "p50_ms": {str(size): round(value, 1) for size, value in p50.items()},
        "fastest": min(p50, key=p50.__getitem__),
        "same_top10": all(tops[f"ours@{size}"] == tops["pylate"] for size in BATCH_SIZES),
    }


def _rerank_request(client, item: tuple[str, list[str]]):
    question, texts = item
    return client.post("/v1/rerank", json={"query": question, "documents": texts, "top_n": 10})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, type=Path, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--questions", type=int, default=20, help="questions per round")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="served requests per client setting")
    parser.add_argument("--save", type=Path, default=DEFAULT_SAVE)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = inputs(args.dataset, args.questions, args.candidates)
    if args.child:
        print(json.dumps(child(args.child, args.model, work)))
        return
    model_path = str(model_folder())
    paths = ["ours", "pylate", *(f"ours@{size}" for size in BATCH_SIZES)]
    figures: dict[str, list[float]] = {path: [] for path in paths}
    tops: dict[str, list] = {}
    for _ in range(args.rounds):
        for path in paths:
            command = [sys.executable, __file__, "--dataset", str(args.dataset), "--questions", str(args.questions),
                       "--candidates", str(args.candidates), "--child", path, "--model", model_path]  # fmt: skip
            result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            figures[path].append(result["p50_ms"])
            tops[path] = result["tops"]
            print(path, round(result["p50_ms"], 1), file=sys.stderr, flush=True)
    ours, theirs = statistics.median(figures["ours"]), statistics.median(figures["pylate"])
    import torch

    report = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/rerank_speed.py --dataset ../shared/data/az-mirage/dataset.json",
        "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__},
        "model": "MiniLM stand-in (colbert-az standin)",
        "candidates": args.candidates,
        "questions_per_round": args.questions,
        "rounds": args.rounds,
        "in_process": {
            "ours_p50_ms": round(ours, 1),
            "pylate_p50_ms": round(theirs, 1),
            "speed_up": round(theirs / ours, 2),
            "same_top10": tops["ours"] == tops["pylate"],
            "per_round_ms": {path: [round(v, 1) for v in values] for path, values in figures.items()},
        },
        "batch_sizes": batch_sizes(figures, tops),
        "served": served(model_path, work, args.requests),
    }
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
