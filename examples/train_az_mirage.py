"""Effect run on the CPU: fine-tune the MiniLM stand-in on AZ-MIRAGE questions and answers, held-out before/after.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python examples/train_az_mirage.py --work-dir /tmp/az-mirage-train
    # results: benchmarks/results/training-effect-az-mirage.json (--save PATH to write elsewhere)

- Model: the packaged all-MiniLM-L6-v2 in the colbert-az layout (``build_minilm_standin``), converted and verified.
- Rows: a seeded sample of AZ-MIRAGE questions whose answer has at most 16 words (89 % of them: a step on 2 CPU
  cores costs what the longest document of the batch costs); the positive is the question's answer passage, the
  corpus the answers of the sample. Hard negatives are mined by the model itself (its 16 best-scored answers other
  than the positive, exact MaxSim): the negatives it finds hardest, as the card's data sets were mined by a retriever.
- Teacher score: BM25 (Okapi, k1 = 1.2, b = 0.75, lower-cased words, statistics over the sampled answers) of the
  question against each document. It is computable offline, independent of the student, and strong on this data (the
  answer sentence shares words with the question), so it plays the part of the card's bge-reranker-v2-m3. The card's
  filter then drops a negative whose BM25 exceeds 0.9 × the positive's.
- Held out: a per-source query split (``prepare_training_data``), each held-out query ranking its positive among 8
  hard negatives; evaluated before and after training with the card's metrics.

The data is read from ``dataset.json`` at run time and never copied. The figures (held-out metrics before and
after, the training loss log, timings, machine) are written as JSON to ``--save``, the file docs/training.md cites.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from colbert_az_pylate import convert, load
from colbert_az_pylate.evaluation.triplets import evaluate_triplets
from colbert_az_pylate.scores import packed_maxsim_scores
from colbert_az_pylate.standin import build_minilm_standin
from colbert_az_pylate.training import Recipe, SourceSchema, TrainingSource, prepare_training_data, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "az-mirage" / "dataset.json"
DEFAULT_SAVE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "training-effect-az-mirage.json"
SCHEMA = SourceSchema("doc_id", "text", "query_id", "query", "pos_id", "pos_score", "neg_{k}_id", "neg_{k}_score")
MINED = 16


def command_line() -> str:
    """This run's command as it can be typed again (the environment settings that change results or speed too)."""
    settings = [f"{name}={os.environ[name]}" for name in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE") if name in os.environ]
    return " ".join([*settings, "python", "examples/train_az_mirage.py", *sys.argv[1:]])


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class BM25:
    """Okapi BM25 over a fixed set of documents (the teacher; no reranker is available offline)."""

    def __init__(self, documents: dict[str, str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.counts = {doc_id: Counter(words(text)) for doc_id, text in documents.items()}
        self.lengths = {doc_id: sum(counts.values()) for doc_id, counts in self.counts.items()}
        self.average = sum(self.lengths.values()) / len(self.lengths)
        frequency = Counter(word for counts in self.counts.values() for word in counts)
        n = len(documents)
        self.idf = {word: math.log(1 + (n - f + 0.5) / (f + 0.5)) for word, f in frequency.items()}

    def score(self, query: str, doc_id: str) -> float:
        counts, length = self.counts[doc_id], self.lengths[doc_id]
        norm = self.k1 * (1 - self.b + self.b * length / self.average)
        return sum(
            self.idf.get(word, 0.0) * counts[word] * (self.k1 + 1) / (counts[word] + norm)
            for word in words(query)
            if word in counts
        )


def mine_negatives(model, queries: dict[str, str], corpus: dict[str, str], positives: dict[str, str]) -> dict:
    """query id -> the model's MINED best-scored document ids other than the positive (and its duplicates)."""
    doc_ids = list(corpus)
    encoded = model.encode([corpus[d] for d in doc_ids], is_query=False, batch_size=64, show_progress_bar=True)
    starts = np.cumsum([0] + [len(v) for v in encoded[:-1]])
    vectors = np.concatenate(encoded)
    query_ids = list(queries)
    query_vectors = model.encode([queries[q] for q in query_ids], is_query=True, batch_size=64, show_progress_bar=True)
    mined = {}
    for query_id, query in zip(query_ids, query_vectors, strict=True):
        ranked = [doc_ids[i] for i in np.argsort(-packed_maxsim_scores(query, vectors, starts))]
        positive_text = corpus[positives[query_id]]
        mined[query_id] = [d for d in ranked[: MINED + 8] if corpus[d] != positive_text][:MINED]
    return mined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="AZ-MIRAGE dataset.json")
    parser.add_argument("--queries", type=int, default=1600, help="questions sampled (train + held out)")
    parser.add_argument("--heldout", type=int, default=300, help="held-out questions")
    parser.add_argument("--max-words", type=int, default=16, help="longest answer kept (89%% of them; CPU budget)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--work-dir", default=None, help="where the stand-in and the trained model go (default: tmp)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=str(DEFAULT_SAVE), help="JSON file for the results ('' for none)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="az-mirage-train-"))

    records = json.loads(Path(args.data).read_text(encoding="utf-8"))
    records = [
        r
        for r in records
        if r["query"].strip()
        and r["answer"]
        and r["answer"][0].strip()
        and len(r["answer"][0].split()) <= args.max_words
    ]
    records = random.Random(args.seed).sample(records, args.queries)
    queries = {r["query_id"]: r["query"] for r in records}
    corpus = {f"a{i}": r["answer"][0] for i, r in enumerate(records)}
    positives = {r["query_id"]: f"a{i}" for i, r in enumerate(records)}

    converted = work / "standin-converted"
    if not converted.exists():
        convert(build_minilm_standin(work / "standin"), converted)
    model = load(converted, device="cpu")

    mined = mine_negatives(model, queries, corpus, positives)
    teacher = BM25(corpus)
    pairs = []
    for query_id, query in queries.items():
        pair = {"query_id": query_id, "pos_id": positives[query_id]}
        pair["pos_score"] = teacher.score(query, positives[query_id])
        for k, doc_id in enumerate(mined[query_id], start=1):
            pair[f"neg_{k}_id"], pair[f"neg_{k}_score"] = doc_id, teacher.score(query, doc_id)
        pairs.append(pair)
    source = TrainingSource("az-mirage", pairs, queries, corpus, SCHEMA)
    data = prepare_training_data([(source, 1.0)], total=len(pairs), heldout_per_source=args.heldout, seed=args.seed)
    print(data.summary())
    prepared = time.perf_counter()

    before = evaluate_triplets(model, data.heldout, show_progress_bar=False)["macro"]
    recipe = Recipe(
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        bf16=False,
        seed=args.seed,
    )
    from transformers import TrainerCallback

    log: list[dict] = []

    class RecordLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            log.append({"step": state.global_step, **(logs or {})})

    train_started = time.perf_counter()
    train(model, data.train, work / "trained", recipe=recipe, max_steps=args.steps, save_strategy="no",
          logging_steps=25, use_cpu=True, overwrite=True, callbacks=[RecordLog()])  # fmt: skip
    train_seconds = time.perf_counter() - train_started
    after = evaluate_triplets(load(work / "trained", device="cpu"), data.heldout, show_progress_bar=False)["macro"]

    print(f"\n{len(data.heldout)} held-out questions, 1 positive among 8 hard negatives (macro over one source)\n")
    print("| model | " + " | ".join(before) + " |")
    print("|---|" + "---|" * len(before))
    for name, metrics in (("stand-in before", before), (f"after {args.steps} steps", after)):
        print(f"| {name} | " + " | ".join(f"{value:.4f}" for value in metrics.values()) + " |")
    total = time.perf_counter() - started
    print(
        f"\ndata + mining {prepared - started:.0f} s, training {train_seconds:.0f} s "
        f"({args.steps / train_seconds:.2f} steps/s), total {total:.0f} s; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"trained model: {work / 'trained'}")
    if args.save:
        result = {
            "command": command_line(),
            "settings": {key: value for key, value in vars(args).items() if key not in ("save", "work_dir", "data")},
            "data": data.summary().splitlines(),
            "heldout_questions": len(data.heldout),
            "training_rows": len(data.train),
            "metrics": {"before": before, f"after {args.steps} steps": after},
            "loss_log": [entry for entry in log if "loss" in entry],
            "seconds": {
                "data_and_mining": round(prepared - started, 1),
                "training": round(train_seconds, 1),
                "total": round(total, 1),
            },
            "steps_per_s": round(args.steps / train_seconds, 4),
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "cuda": torch.cuda.is_available(),
            },
            "date": time.strftime("%Y-%m-%d"),
        }
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"results: {args.save}")


if __name__ == "__main__":
    main()
