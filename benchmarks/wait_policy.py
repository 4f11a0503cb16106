"""What the OpenMP wait policy costs one query's encoding on an idle machine (MiniLM stand-in, one AZ-MIRAGE
question per call, p50 of 37, each policy in its own process, alternating, two rounds).

    HF_HUB_OFFLINE=1 python benchmarks/wait_policy.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/wait-policy.json``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE))
        from search_path import answers_and_questions, model_folder

        from colbert_az_pylate import load

        model = load(str(model_folder()))
        _, questions = answers_and_questions(args.dataset, 0, 40)
        for question in questions[:3]:
            model.encode([question], is_query=True, show_progress_bar=False)
        times = []
        for question in questions[3:]:
            start = time.perf_counter()
            model.encode([question], is_query=True, show_progress_bar=False)
            times.append(time.perf_counter() - start)
        print(statistics.median(times) * 1000)
        return
    results: dict[str, list[float]] = {"PASSIVE": [], "ACTIVE": []}
    for _ in range(2):
        for policy in results:
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            out = subprocess.run([sys.executable, __file__, "--dataset", str(args.dataset), "--worker"],
                                 capture_output=True, text=True, env=env, check=True)
            results[policy].append(round(float(out.stdout.strip().splitlines()[-1]), 1))
    record = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/wait_policy.py " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "single_query_p50_ms": results,
        "passive_over_active": round(statistics.median(results["PASSIVE"]) / statistics.median(results["ACTIVE"]), 2),
    }
    (HERE / "results" / "wait-policy.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
