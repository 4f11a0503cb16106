"""Which OpenMP wait policy the library should set: one query's encoding and a whole search (text in, hits out),
on a quiet machine, beside two CPU-bound processes, and beside two other processes doing the same work (a machine
where everyone runs this library: ``serve --workers``, parallel jobs). MiniLM stand-in, 2,000 AZ-MIRAGE answers
(the search-path benchmark's cached corpus), p50 over ``--queries`` questions, each measurement in its own process.

Policies (what OpenMP reads when torch loads it):

- ``torch-default``: nothing set, torch imported first: libgomp spins ~300,000 rounds after each parallel region;
- ``PASSIVE``: ``OMP_WAIT_POLICY=PASSIVE``, threads sleep at once;
- ``spin-N``: ``GOMP_SPINCOUNT=N``, threads spin N rounds, then sleep.

    HF_HUB_OFFLINE=1 python benchmarks/wait_policy.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/wait-policy.json`` (about 12 minutes on 2 cores; run it on an otherwise quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICIES = {
    "torch-default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin-10k": {"GOMP_SPINCOUNT": "10000"},
    "spin-100k": {"GOMP_SPINCOUNT": "100000"},
}
PATHS = ["encode", "search", "search-graph"]
LOADS = ["quiet", "busy", "neighbours"]


def worker(path: str, questions: list[str], corpus: str, forever: bool) -> None:
    import torch  # noqa: F401  (first: this package then sets no policy; the environment is the variant's)

    from colbert_az_pylate import Searcher

    sys.path.insert(0, str(HERE))
    from search_path import model_folder

    searcher = Searcher.open(corpus, model=str(model_folder()), show_progress_bar=False)
    if path == "encode":

        def run(question: str) -> object:
            return searcher.model.encode([question], is_query=True, show_progress_bar=False)

    else:
        exact = None if path == "search" else False

        def run(question: str) -> object:
            return searcher.search(question, k=10, exact=exact)

    for question in questions[:3]:
        run(question)
    while forever:  # a neighbour: the same work, until killed
        for question in questions:
            run(question)
    times = []
    for question in questions:
        start = time.perf_counter()
        run(question)
        times.append(time.perf_counter() - start)
    print(statistics.median(times) * 1000)


def environment(policy: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return {**env, **POLICIES[policy], "HF_HUB_OFFLINE": "1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--loads", nargs="+", default=LOADS, choices=LOADS)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "wait-policy.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from search_path import answers_and_questions, build

    _, questions = answers_and_questions(args.dataset, 0, args.queries)
    corpus = build(args.dataset, 2000)["ours"]
    if args.worker:
        path, forever = json.loads(args.worker)
        worker(path, questions, corpus, forever)
        return

    def command(path: str, forever: bool) -> list[str]:
        return [sys.executable, __file__, "--dataset", str(args.dataset), "--queries", str(args.queries),
                "--worker", json.dumps([path, forever])]  # fmt: skip

    results: dict = {}
    for load in args.loads:
        for path in args.paths:
            for policy in args.policies:
                results.setdefault(load, {}).setdefault(path, {})[policy] = []
            for round_number in range(args.rounds):
                shift = round_number % len(args.policies)
                for policy in args.policies[shift:] + args.policies[:shift]:
                    env = environment(policy)
                    if load == "busy":
                        neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
                    elif load == "neighbours":
                        neighbours = [
                            subprocess.Popen(command(path, True), env=env, stdout=subprocess.DEVNULL) for _ in range(2)
                        ]
                        time.sleep(8)  # they load and start working
                    else:
                        neighbours = []
                    try:
                        out = subprocess.run(command(path, False), env=env, capture_output=True, text=True, check=True)
                    finally:
                        for neighbour in neighbours:
                            neighbour.kill()
                            neighbour.wait()
                    p50 = round(float(out.stdout.strip().splitlines()[-1]), 1)
                    results[load][path][policy].append(p50)
                    print(f"{load} {path} {policy}: {p50} ms", file=sys.stderr)
    summary = {
        load: {
            path: {policy: round(statistics.median(times), 1) for policy, times in by_policy.items()}
            for path, by_policy in by_path.items()
        }
        for load, by_path in results.items()
    }
    record = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/wait_policy.py " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "policies": POLICIES,
        "p50_ms": summary,
        "rounds_ms": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
