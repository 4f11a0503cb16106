"""CPU encoding: pylate's torch float32 against ONNX Runtime and OpenVINO (float32, int8 weights, bfloat16 compute).

Two models: colbert-az's full-size architecture with random weights (``build_full_size_checkpoint`` of
tests/tiny_checkpoints.py: ModernBERT 768 hidden, 22 layers, 71,751-row vocabulary, 768→128 projection — for
speed) and the MiniLM stand-in (:mod:`colbert_az_pylate.standin`, real weights — for speed and quality). Every
engine is ``colbert_az_pylate.load(folder, encoder=..., quantize=...)``: the same pylate ``ColBERT.encode``, only the
backbone differs.

Each engine runs in its own process, engines rotating within each of ``--rounds`` rounds (the first engine of a
round changes each round, so a machine that slows down during a round favours none); the table gives medians and
each engine's ratio to torch float32 measured in the same rounds:

- load: ``load()`` to a ready model (for exported encoders: the torch load, the graph's SHA-256 check, the runtime
  session and the warm-up); first query: the first ``encode`` after it;
- single query: one 32-token query per call (median of ``--queries`` calls, different questions);
- batch 32: 32 queries per call, time per query;
- documents: 256-token documents (AZ-MIRAGE answers joined, truncated by pylate at the model's document length),
  batch 16, time per document;
- peak memory: the process's peak resident set (``ru_maxrss``) at the end.

Quality (stand-in, real weights): :func:`colbert_az_pylate.encoders.verify_encoder` with AZ-MIRAGE questions
searching their answers (``--pairs`` pairs): top-10 agreement with torch float32 exact search, MaxSim relative
error, max token-vector difference. For the full-size model the vector difference on the probe texts.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/cpu_encoding.py --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/cpu-encoding.json`` (``--save``), which docs/benchmarks.md cites.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINES = [("torch", None), ("onnx", None), ("openvino", None), ("openvino", "int8"), ("openvino", "bf16")]
DEFAULT_SAVE = Path(__file__).resolve().parent / "results" / "cpu-encoding.json"


def engine_name(encoder: str, quantize: str | None) -> str:
    return f"{encoder} {quantize or 'fp32'}"


def texts_for(dataset: str | None, count: int) -> tuple[list[str], list[str]]:
    """Questions, and long documents (answers joined until far past 256 tokens)."""
    if dataset:
        from colbert_az_pylate.conversion.probes import load_az_mirage_pairs

        pairs = load_az_mirage_pairs(dataset, 2000, seed=1)
        questions = [q for q, _ in pairs]
        answers = [a for _, a in pairs]
    else:
        from colbert_az_pylate.conversion.probes import packaged_probe_texts

        questions = answers = packaged_probe_texts()
    documents, current = [], []
    for answer in answers * 20:
        current.append(answer)
        if sum(len(a.split()) for a in current) > 400:
            documents.append(" ".join(current))
            current = []
        if len(documents) == count:
            break
    return (questions * 10)[:2000], documents


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """Measure one engine in this process; print one JSON line."""
    from colbert_az_pylate import load

    queries, documents = texts_for(args.dataset, args.documents)
    start = time.perf_counter()
    model = load(args.model, device="cpu", encoder=args.encoder, quantize=args.quantize or None)
    load_s = time.perf_counter() - start

    def timed(texts, is_query, batch_size):
        begin = time.perf_counter()
        model.encode(texts, is_query=is_query, batch_size=batch_size, show_progress_bar=False)
        return time.perf_counter() - begin

    first_query = timed([queries[0]], True, 1)
    single = [timed([q], True, 1) for q in queries[1 : 1 + args.queries]]
    batch = [timed(queries[32 * i : 32 * (i + 1)], True, 32) / 32 for i in range(args.batches)]
    tokens = model.tokenize(documents[:4], is_query=False)["input_ids"].shape[1]
    docs = [timed(documents, False, 16) / len(documents) for _ in range(args.document_rounds)]
    print(
        json.dumps(
            {
                "load_s": load_s,
                "first_query_ms": first_query * 1000,
                "single_query_ms": statistics.median(single) * 1000,
                "batch32_per_query_ms": statistics.median(batch) * 1000,
                "document_ms": statistics.median(docs) * 1000,
                "document_tokens": int(tokens),
                "peak_rss_mb": peak_rss_mb(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            }
        )
    )


def prepare(work: Path) -> dict[str, Path]:
    """The two converted models with every graph exported (reused when already there)."""
    from colbert_az_pylate import convert
    from colbert_az_pylate.encoders import export_encoder
    from colbert_az_pylate.standin import build_minilm_standin

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test code, not in the package
    from tiny_checkpoints import build_full_size_checkpoint

    models = {"full-size": work / "full-size", "stand-in": work / "stand-in"}
    builders = {"full-size": build_full_size_checkpoint, "stand-in": build_minilm_standin}
    for name, folder in models.items():
        if not (folder / "modules.json").is_file():
            raw = builders[name](work / f"{name}-raw")
            convert(raw, folder, verify=name == "stand-in", overwrite=folder.exists())
        for encoder, quantize in ENGINES[1:]:
            export_encoder(folder, encoder, quantize, on_step=lambda m, n=name: print(f"… {n}: {m}", file=sys.stderr))
    return models


def quality(models: dict[str, Path], dataset: str | None, pairs: int) -> dict:
    from colbert_az_pylate.encoders import verify_encoder

    figures: dict = {}
    for encoder, quantize in ENGINES[1:]:
        report = verify_encoder(models["stand-in"], encoder, quantize, dataset=dataset, limit=pairs)
        full = verify_encoder(models["full-size"], encoder, quantize, dataset=None)
        figures[engine_name(encoder, quantize)] = {
            "stand-in": report.to_dict(),
            "full-size max vector error": full.max_vector_error,
            "full-size mean cosine": full.mean_cosine,
        }
        print(f"quality {engine_name(encoder, quantize)}: {report.summary()}", file=sys.stderr)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="AZ-MIRAGE dataset.json (queries, documents and the quality check)")
    parser.add_argument("--work-dir", default="/tmp/colbert-az-cpu-encoding")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30, help="single-query calls per run")
    parser.add_argument("--batches", type=int, default=3, help="batch-32 calls per run")
    parser.add_argument("--documents", type=int, default=32, help="documents per document call")
    parser.add_argument("--document-rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=500, help="AZ-MIRAGE question/answer pairs of the quality check")
    parser.add_argument("--models", nargs="+", default=["full-size", "stand-in"])
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--save", default=str(DEFAULT_SAVE))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    parser.add_argument("--quantize", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models = prepare(work)
    runs: dict = {name: {engine_name(*e): [] for e in ENGINES} for name in args.models}
    for round_number in range(args.rounds):
        shift = round_number % len(ENGINES)
        for encoder, quantize in ENGINES[shift:] + ENGINES[:shift]:
            for name in args.models:
                command = [
                    sys.executable, __file__, "--worker", "--model", str(models[name]), "--encoder", encoder,
                    "--quantize", quantize or "", "--queries", str(args.queries), "--batches", str(args.batches),
                    "--documents", str(args.documents), "--document-rounds", str(args.document_rounds),
                ]  # fmt: skip
                if args.dataset:
                    command += ["--dataset", args.dataset]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{name} {engine_name(encoder, quantize)} failed:\n{done.stderr[-2000:]}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                runs[name][engine_name(encoder, quantize)].append(figures)
                print(f"round {round_number + 1} {name} {engine_name(encoder, quantize)}: {figures}", file=sys.stderr)
    medians: dict = {}
    for name, engines in runs.items():
        medians[name] = {}
        for engine, figures in engines.items():
            numbers = [key for key, value in figures[0].items() if isinstance(value, (int, float))]
            medians[name][engine] = {key: statistics.median(f[key] for f in figures) for key in numbers}
        base = medians[name]["torch fp32"]
        for figures in medians[name].values():
            for key in ("single_query_ms", "batch32_per_query_ms", "document_ms"):
                figures[f"{key} speedup"] = base[key] / figures[key]
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "python": platform.python_version()},
        "versions": _versions(),
        "medians": medians,
        "runs": runs,
    }
    if not args.no_quality:
        result["quality"] = quality(models, args.dataset, args.pairs)
    print(table(result))
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1), encoding="utf-8")


def _versions() -> dict:
    versions = {}
    for module in ("torch", "transformers", "pylate", "onnxruntime", "openvino", "nncf"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = None
    return versions


def table(result: dict) -> str:
    lines = []
    for name, engines in result["medians"].items():
        lines += [
            f"\n{name}",
            "| engine | load s | first query ms | single query ms | batch 32, per query ms | per document ms "
            "| peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for engine, f in engines.items():
            lines.append(
                f"| {engine} | {f['load_s']:.1f} | {f['first_query_ms']:.1f} | {f['single_query_ms']:.1f} "
                f"({f['single_query_ms speedup']:.1f}×) | {f['batch32_per_query_ms']:.1f} "
                f"({f['batch32_per_query_ms speedup']:.1f}×) | {f['document_ms']:.1f} "
                f"({f['document_ms speedup']:.1f}×) "
                f"| {f['peak_rss_mb']:.0f} |"
            )
    for engine, q in result.get("quality", {}).items():
        s = q["stand-in"]
        lines.append(
            f"quality {engine}: top-10 agreement {s['top10_agreement']:.3f}, MaxSim rel. error mean "
            f"{s['mean_score_relative_error']:.2e} max {s['max_score_relative_error']:.2e}, max vector error "
            f"{s['max_vector_error']:.2e} (full-size {q['full-size max vector error']:.2e})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
