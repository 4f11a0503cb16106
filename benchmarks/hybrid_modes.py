"""Search modes on AZ-MIRAGE: quality of late / bm25 / bm25+rerank / fusion, and BM25's build and query time
against the late-interaction index.

Quality: ``--questions`` AZ-MIRAGE questions (the first ones) against the pool of **all** distinct answers of the
dataset (7,257), each question's own answers relevant; MRR@10 and R@10 from the package's metrics
(``evaluation.evaluate_run``), each mode run by ``evaluation.modes.mode_run`` (the searcher's rules: the same BM25
text rules and parameters, the same MaxSim rerank, the same fusion). The model is the MiniLM stand-in
(``colbert-az standin``: an **English** model, so the table ranks the plumbing, not colbert-az).

Speed (2 CPU cores, one process, nothing else running): ``LexicalIndex`` build (words, scores, the atomic commit)
and query time against ``Searcher.index`` / ``Searcher.search`` (late) at ``--sizes`` documents (answers; above
7,257, two answers joined per document), BM25 at every size, late at the sizes up to ``--late-max``.

    HF_HUB_OFFLINE=1 python benchmarks/hybrid_modes.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/hybrid-modes.json``, which docs/benchmarks.md cites.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_path import model_folder  # noqa: E402  (the converted stand-in, cached)

DEFAULT_SAVE = HERE / "results" / "hybrid-modes.json"


def az_mirage(dataset: Path, questions: int):
    rows = json.loads(Path(dataset).read_text(encoding="utf-8"))
    answers = list(dict.fromkeys(a.strip() for row in rows for a in row["answer"] if a.strip()))
    ids = {text: f"a{i}" for i, text in enumerate(answers)}
    queries, qrels = {}, {}
    for number, row in enumerate(rows[:questions]):
        relevant = {ids[a.strip()]: 1 for a in row["answer"] if a.strip()}
        if relevant:
            queries[f"q{number}"], qrels[f"q{number}"] = row["query"], relevant
    return {ids[text]: text for text in answers}, queries, qrels


def quality(model, corpus, queries, qrels, depths: list[int]) -> list[dict]:
    from colbert_az_pylate.evaluation import evaluate_run
    from colbert_az_pylate.evaluation.modes import mode_run

    settings = [("late", 100), ("bm25", 100)] + [("bm25+rerank", n) for n in depths] + [("fusion", 100)]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for mode, candidates in settings:
            started = time.perf_counter()
            run = mode_run(
                model, queries, corpus, mode=mode, candidates=candidates, show_progress_bar=False, cache_dir=cache
            )
            seconds = time.perf_counter() - started
            metrics = evaluate_run(run, qrels, k_values=(10,))
            row = {"mode": mode, "candidates": candidates if mode in ("bm25+rerank", "fusion") else None}
            row.update({"MRR@10": round(metrics["MRR@10"], 4), "R@10": round(metrics["R@10"], 4)})
            row["seconds"] = round(seconds, 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def documents_of(corpus: list[str], size: int, seed: int = 0) -> list[str]:
    if size <= len(corpus):
        return corpus[:size]
    rng = np.random.default_rng(seed)
    return [" ".join(corpus[i] for i in rng.choice(len(corpus), 2, replace=False)) for _ in range(size)]


def p50_ms(call, items: list) -> float:
    times = []
    for item in items:
        started = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def speed(model_path: str, corpus: list[str], questions: list[str], sizes: list[int], late_max: int) -> list[dict]:
    from colbert_az_pylate.retrieval.lexical import LexicalIndex
    from colbert_az_pylate.retrieval.searcher import Searcher

    rows = []
    for size in sizes:
        texts = documents_of(corpus, size)
        ids = [f"d{i}" for i in range(size)]
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            lexical = LexicalIndex(Path(tmp) / "bm25")
            lexical.write_entries(ids, None, [{"text": t} for t in texts], upsert=False, stale=[])
            row = {"documents": size, "bm25_build_s": round(time.perf_counter() - started, 2)}
            row["bm25_query_p50_ms"] = p50_ms(lambda q, index=lexical: index.search([q], 10), questions)
            if size <= late_max:
                searcher = Searcher(model_path, Path(tmp) / "late", show_progress_bar=False)
                started = time.perf_counter()
                searcher.index(texts, ids=ids)
                row["late_build_s"] = round(time.perf_counter() - started, 2)
                searcher.search(questions[0], k=10)  # warm-up
                row["late_query_p50_ms"] = p50_ms(lambda q, late=searcher: late.search(q, k=10), questions)
                row["late_build_over_bm25"] = round(row["late_build_s"] / row["bm25_build_s"], 1)
                row["late_query_over_bm25"] = round(row["late_query_p50_ms"] / row["bm25_query_p50_ms"], 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, type=Path, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 100, 200], help="bm25+rerank candidates")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 50000])
    parser.add_argument("--late-max", type=int, default=50000, help="largest size the late index is built at")
    parser.add_argument("--speed-queries", type=int, default=100)
    parser.add_argument("--save", type=Path, default=DEFAULT_SAVE)
    args = parser.parse_args()

    import torch

    from colbert_az_pylate import load

    model_path = str(model_folder())
    corpus, queries, qrels = az_mirage(args.dataset, args.questions)
    model = load(model_path)
    report = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/hybrid_modes.py --dataset ../shared/data/az-mirage/dataset.json",
        "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__},
        "model": "MiniLM stand-in (colbert-az standin): an English model",
        "quality": {
            "questions": len(queries),
            "pool": len(corpus),
            "rows": quality(model, corpus, queries, qrels, args.depths),
        },
    }
    questions = list(queries.values())[: args.speed_queries]
    report["speed"] = speed(model_path, list(corpus.values()), questions, args.sizes, args.late_max)
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
