"""Document encoding rate of the MiniLM stand-in on one CPU core (for the sizing table in docs/benchmarks.md).

Encodes AZ-MIRAGE answers as they are (short documents) and full windows (answers joined until the model's
document length, so every document fills the window), with one torch thread, after one warm-up batch; reports
documents per second per core and token vectors per document.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/encode_rate.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrieval import DATASET


def rate(model, texts: list[str], batch_size: int) -> dict:
    model.encode(texts[:batch_size], is_query=False, batch_size=batch_size, show_progress_bar=False)  # warm-up
    began = time.perf_counter()
    encoded = model.encode(texts, is_query=False, batch_size=batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - began
    vectors = sum(len(e) for e in encoded)
    return {
        "documents": len(texts),
        "seconds": round(seconds, 2),
        "docs_per_s_per_core": round(len(texts) / seconds, 2),
        "vectors_per_doc": round(vectors / len(texts), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=512, help="answers encoded as they are")
    parser.add_argument("--long", type=int, default=64, help="documents filling the window")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", default="benchmarks/results/encode-rate.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from colbert_az_pylate import convert, load
    from colbert_az_pylate.standin import STANDIN_NAME, build_minilm_standin

    rows = json.loads(DATASET.read_text(encoding="utf-8"))
    answers = list(dict.fromkeys(a for row in rows for a in row["answer"] if a.strip()))
    with tempfile.TemporaryDirectory() as tmp:
        raw = build_minilm_standin(Path(tmp) / "raw")
        convert(raw, Path(tmp) / "converted")
        model = load(str(Path(tmp) / "converted"), device="cpu")
        window = model.document_length
        tokenizer = model.tokenizer
        long_texts, current = [], ""
        for answer in answers[args.short :]:
            current = f"{current} {answer}".strip()
            if len(tokenizer(current)["input_ids"]) > window:
                long_texts.append(current)
                current = ""
            if len(long_texts) == args.long:
                break
        result = {
            "model": STANDIN_NAME,
            "threads": 1,
            "document_length": window,
            "short": rate(model, answers[: args.short], args.batch_size),
            "full_window": rate(model, long_texts, args.batch_size),
        }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
