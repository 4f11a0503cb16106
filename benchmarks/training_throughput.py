"""Training throughput: DistillationInfoNCE vs pylate's own Distillation, same model, same batches.

The model is the MiniLM stand-in (:mod:`colbert_az_pylate.standin`, converted); batches are AZ-MIRAGE questions with
their answer and 8 other answers (``../shared/data/az-mirage/dataset.json``, answers of at most 16 words as in the
effect run; the package's fixture texts when it is absent), teacher scores seeded random, tokenized once by the
training collator. A step is forward, loss, backward and an AdamW update, as in the trainer.

Each loss runs in its own process, the two alternating for ``--rounds`` rounds (which one goes first alternates too,
so a machine that slows down or speeds up during a round favours neither); the table gives the median steps/s and the
peak memory. The scoring alone (MaxSim of a batch's shape, forward and backward, no encoder) is timed apart, so the
loss's own cost is visible beside the noise of whole steps.

On the CPU, peak memory is the process's peak resident set (``ru_maxrss``) over the timed steps, minus the peak
before them (model, batches, one warm-up step already in place): tracemalloc would miss it, since torch allocates
tensors outside Python's allocator. On a GPU it is ``torch.cuda.max_memory_allocated``.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/training_throughput.py --rounds 5   # docs/benchmarks.md
    HF_HUB_OFFLINE=1 python benchmarks/training_throughput.py --steps 3 --rounds 1 --save ''   # a quick look

Every run's figures, the medians, the command and the machine are written as JSON to ``--save`` (default
``benchmarks/results/training-throughput.json``, the file docs/benchmarks.md cites).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "az-mirage" / "dataset.json"
DEFAULT_SAVE = Path(__file__).resolve().parent / "results" / "training-throughput.json"


def training_rows(count: int, negatives: int = 8, seed: int = 0) -> list[dict]:
    """``count`` rows (query, positive + ``negatives`` other answers, random teacher scores)."""
    rng = random.Random(seed)
    if DATASET.is_file():
        records = json.loads(DATASET.read_text(encoding="utf-8"))
        records = [r for r in records if r["answer"] and len(r["answer"][0].split()) <= 16]  # as the effect run
        pairs = [(r["query"], r["answer"][0]) for r in rng.sample(records, count + negatives)]
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test code, not in the package
        from tiny_checkpoints import CORPUS

        pairs = [(text[:40], text) for text in CORPUS]
    answers = [answer for _, answer in pairs]
    return [
        {
            "query": pairs[i % len(pairs)][0],
            "documents": [pairs[i % len(pairs)][1], *rng.sample(answers, negatives)],
            "scores": [rng.gauss(5, 2) for _ in range(negatives + 1)],
        }
        for i in range(count)
    ]


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def worker(loss_name: str, model_folder: str, steps: int, batch_size: int) -> dict:
    """Time ``steps`` training steps with one loss in this process; returns steps/s and memory."""
    import torch
    from pylate.losses import Distillation
    from pylate.utils import ColBERTCollator

    from colbert_az_pylate import load
    from colbert_az_pylate.losses import DistillationInfoNCE
    from colbert_az_pylate.training.trainer import batch_tokenizer

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load(model_folder, device=device)
    model.train()
    loss = {"DistillationInfoNCE": DistillationInfoNCE, "pylate Distillation": Distillation}[loss_name](model)
    collate = ColBERTCollator(batch_tokenizer(model))
    rows = training_rows(batch_size * (steps + 1))
    batches = []
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size])
        features = [
            {k.removeprefix(f"{c}_"): v.to(device) for k, v in batch.items() if k.startswith(f"{c}_")}
            for c in ("query", "documents")
        ]
        batches.append((features, batch["label"].to(device)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)

    def step(features, labels) -> None:
        loss(features, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(*batches[0])  # warm-up: optimizer state allocated, kernels chosen
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = peak_mb()
    started = time.perf_counter()
    for features, labels in batches[1:]:
        step(features, labels)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = peak_mb()
    return {
        "steps_per_s": steps / seconds,
        "peak_mb": peak,
        "peak_growth_mb": peak - before if device == "cpu" else peak,
    }


def scoring_ms(batch_size: int, group: int = 9, query_tokens: int = 32, document_tokens: int = 40) -> dict:
    """Milliseconds per forward + backward of the scores alone: ours (padding excluded) and pylate's."""
    import torch
    from pylate.scores import colbert_kd_scores

    from colbert_az_pylate.losses import group_maxsim_scores

    torch.manual_seed(0)
    queries = torch.randn(batch_size, query_tokens, 128, requires_grad=True)
    documents = torch.randn(batch_size, group, document_tokens, 128, requires_grad=True)
    mask = torch.rand(batch_size, group, document_tokens) > 0.3
    functions = {
        "DistillationInfoNCE": lambda: group_maxsim_scores(queries, documents, mask),
        "pylate Distillation": lambda: colbert_kd_scores(queries, documents, documents_mask=mask),
    }
    timings = {}
    for name, function in functions.items():
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(100):
                function().sum().backward()
            runs.append((time.perf_counter() - started) * 10)  # ms per call: / 100 * 1000
        timings[name] = statistics.median(runs)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="converted folder (default: build and convert the MiniLM stand-in)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--save", default=str(DEFAULT_SAVE), help="JSON file for the results ('' for none)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.steps, args.batch_size)))
        return

    import torch

    from colbert_az_pylate import convert
    from colbert_az_pylate.standin import build_minilm_standin

    model = args.model
    if model is None:
        work = Path(tempfile.mkdtemp(prefix="throughput-"))
        model = str(convert(build_minilm_standin(work / "raw"), work / "converted").output)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, list[dict]] = {"DistillationInfoNCE": [], "pylate Distillation": []}
    for round_number in range(args.rounds):
        for name in list(results)[:: 1 if round_number % 2 == 0 else -1]:
            command = [sys.executable, __file__, "--worker", name, "--model", model, "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size)]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
            results[name].append(json.loads(output.strip().splitlines()[-1]))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    memory = "peak GPU memory (MB)" if torch.cuda.is_available() else "peak RSS (MB) / growth over setup (MB)"
    print(f"{device}, {platform.machine()}, torch {torch.__version__}; batch {args.batch_size} × (1 + 8) documents, "
          f"{args.steps} steps per run, median of {args.rounds} runs per loss\n")  # fmt: skip
    print(f"| loss | steps/s | relative | {memory} |\n|---|---|---|---|")
    baseline = statistics.median(r["steps_per_s"] for r in results["pylate Distillation"])
    medians = {}
    for name, runs in results.items():
        speed = statistics.median(r["steps_per_s"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        growth = statistics.median(r["peak_growth_mb"] for r in runs)
        medians[name] = {"steps_per_s": speed, "relative": speed / baseline, "peak_mb": peak, "peak_growth_mb": growth}
        cell = f"{peak:.0f}" if torch.cuda.is_available() else f"{peak:.0f} / {growth:.0f}"
        print(f"| {name} | {speed:.3f} | {speed / baseline:.3f} | {cell} |")
    scoring = scoring_ms(args.batch_size)
    step_ms = 1000 / medians["DistillationInfoNCE"]["steps_per_s"]
    alone = ", ".join(f"{name} {ms:.2f}" for name, ms in scoring.items())
    print(f"\nscores alone, forward + backward, ms per batch: {alone} (a whole step: {step_ms:.0f} ms)")
    if args.save:
        settings = [f"{key}={os.environ[key]}" for key in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE") if key in os.environ]
        report = {
            "command": " ".join([*settings, "python", "benchmarks/training_throughput.py", *sys.argv[1:]]),
            "device": device,
            "machine": platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "batch": f"{args.batch_size} x (1 + 8) documents",
            "steps_per_run": args.steps,
            "rounds": args.rounds,
            "memory": memory,
            "median": medians,
            "scoring_only_ms": scoring,
            "runs": results,
            "date": time.strftime("%Y-%m-%d"),
        }
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults: {args.save}")


if __name__ == "__main__":
    main()
