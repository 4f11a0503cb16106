"""Query encoding at the engine's limit: one query (and 32 at a time) with every encoder, the static int8 query graph
(``quantize="int8-query"``) among them, against pylate's torch float32.

colbert-az's full-size architecture with random weights (``build_full_size_checkpoint`` of tests/tiny_checkpoints.py;
speed does not depend on the weights' values). Every engine is ``colbert_az_pylate.load(folder, encoder=...,
quantize=...)`` and times pylate's own ``ColBERT.encode`` (tokenization, query expansion to 32 tokens, the backbone,
the projection, normalisation). Each engine runs in its own process, engines rotating within each of ``--rounds``
rounds (the first engine of a round changes each round); medians, and each engine's ratio to torch float32 measured
in the same rounds:

- single query: one query per ``encode`` call (median of ``--queries`` calls, different questions);
- batch 32: 32 queries per call, time per query.

``--profile`` also runs the int8 query graph alone at ``[1, 32]`` with OpenVINO's performance counters and records
where its time goes (by layer type and execution kernel, and the slowest layers) in
``benchmarks/results/query-encoder-profile.json``. ``--dataset`` adds the quality of every quantized engine on the
MiniLM stand-in (real weights): :func:`colbert_az_pylate.encoders.verify_encoder`, AZ-MIRAGE questions searching
their answers (``--pairs``), top-10 agreement with torch float32 exact search.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/query_encoder.py --rounds 5 --profile
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/query_encoder.py --quick   # a smoke run, a minute or two

Writes ``benchmarks/results/query-encoder.json`` (``--save``) with the command line; run it on a quiet machine.
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

ENGINES = [
    ("torch", None),
    ("openvino", None),
    ("openvino", "int8"),
    ("openvino", "bf16"),
    ("openvino", "int8-query"),
]
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SAVE = RESULTS / "query-encoder.json"
DEFAULT_PROFILE = RESULTS / "query-encoder-profile.json"


def engine_name(encoder: str, quantize: str | None) -> str:
    return f"{encoder} {quantize or 'fp32'}"


def questions(dataset: str | None) -> list[str]:
    if dataset:
        from colbert_az_pylate.conversion.probes import load_az_mirage_pairs

        return [q for q, _ in load_az_mirage_pairs(dataset, 2000, seed=1)]
    from colbert_az_pylate.conversion.probes import packaged_probe_texts

    return packaged_probe_texts()[:-1] * 40


def worker(args: argparse.Namespace) -> None:
    """Measure one engine in this process; print one JSON line."""
    from colbert_az_pylate import load

    texts = questions(args.dataset)
    model = load(args.model, device="cpu", encoder=args.encoder, quantize=args.quantize or None)

    def timed(batch: list[str]) -> float:
        begin = time.perf_counter()
        model.encode(batch, is_query=True, batch_size=len(batch), show_progress_bar=False)
        return time.perf_counter() - begin

    timed(texts[:1])
    single = [timed([text]) for text in texts[1 : 1 + args.queries]]
    batch = [timed(texts[32 * i : 32 * (i + 1)]) / 32 for i in range(args.batches)]
    figures = {
        "single_query_ms": statistics.median(single) * 1000,
        "single_query_min_ms": min(single) * 1000,
        "batch32_per_query_ms": statistics.median(batch) * 1000,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(figures))


def prepare(work: Path) -> Path:
    """The full-size model converted, with every graph exported (reused when already there)."""
    from colbert_az_pylate import convert
    from colbert_az_pylate.encoders import export_encoder

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test code, not in the package
    from tiny_checkpoints import build_full_size_checkpoint

    folder = work / "full-size"
    if not (folder / "modules.json").is_file():
        convert(build_full_size_checkpoint(work / "full-size-raw"), folder, verify=False, overwrite=folder.exists())
    for encoder, quantize in ENGINES[1:]:
        export_encoder(folder, encoder, quantize, on_step=lambda m: print(f"… full-size: {m}", file=sys.stderr))
    return folder


def profile(folder: Path, repeats: int) -> dict:
    """The int8 query graph alone at ``[1, 32]``, OpenVINO's performance counters summed over ``repeats`` runs."""
    import numpy as np
    import openvino

    from colbert_az_pylate.encoders.export import EXPORT_FOLDER, QUERY_GRAPH_FILES

    core = openvino.Core()
    graph = core.read_model(str(folder / EXPORT_FOLDER / QUERY_GRAPH_FILES[("openvino", "int8-query")]))
    graph.reshape({node.get_any_name(): [1, 32] for node in graph.inputs})
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    feeds = {node.get_any_name(): np.random.default_rng(0).integers(5, 300, (1, 32)) for node in compiled.inputs}
    request.infer(feeds)
    by_type: dict[str, float] = {}
    by_node: dict[str, float] = {}
    wall = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer(feeds)
        wall.append(time.perf_counter() - start)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            micro = info.real_time.total_seconds() * 1e6 / repeats
            kind = f"{info.node_type} ({info.exec_type})"
            by_type[kind] = by_type.get(kind, 0.0) + micro
            by_node[f"{info.node_name} [{kind}]"] = by_node.get(f"{info.node_name} [{kind}]", 0.0) + micro
    total = sum(by_type.values())
    return {
        "graph": "int8-query at [1, 32], bf16 hint",
        "repeats": repeats,
        "wall_ms_median": statistics.median(wall) * 1000,
        "counted_ms": total / 1000,
        "by_type_us": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        "by_type_share": {k: v / total for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
        "slowest_nodes_us": dict(sorted(by_node.items(), key=lambda kv: -kv[1])[:40]),
    }


def quality(work: Path, dataset: str, pairs: int) -> dict:
    from colbert_az_pylate import convert
    from colbert_az_pylate.encoders import verify_encoder
    from colbert_az_pylate.standin import build_minilm_standin

    folder = work / "stand-in"
    if not (folder / "modules.json").is_file():
        convert(build_minilm_standin(work / "stand-in-raw"), folder, overwrite=folder.exists())
    figures = {}
    for encoder, quantize in ENGINES[2:]:
        report = verify_encoder(folder, encoder, quantize, dataset=dataset, limit=pairs)
        figures[engine_name(encoder, quantize)] = report.to_dict()
        print(f"quality {engine_name(encoder, quantize)}: {report.summary()}", file=sys.stderr)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="/tmp/colbert-az-query-encoder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=40, help="single-query calls per run")
    parser.add_argument("--batches", type=int, default=4, help="batch-32 calls per run")
    parser.add_argument("--quick", action="store_true", help="1 round, 5 queries, 1 batch: checks the script runs")
    parser.add_argument("--profile", action="store_true", help="OpenVINO performance counters of the query graph")
    parser.add_argument("--profile-repeats", type=int, default=50)
    parser.add_argument("--profile-save", default=str(DEFAULT_PROFILE), help="where to write the profile ('' not to)")
    parser.add_argument("--dataset", help="AZ-MIRAGE dataset.json: its questions, and the stand-in's quality")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--save", default=str(DEFAULT_SAVE), help="where to write the results ('' not to)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    parser.add_argument("--quantize", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.queries, args.batches, args.profile_repeats = 1, 5, 1, 5
    if args.worker:
        worker(args)
        return
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    folder = prepare(work)
    runs: dict = {engine_name(*e): [] for e in ENGINES}
    loads = []
    for round_number in range(args.rounds):
        shift = round_number % len(ENGINES)
        for encoder, quantize in ENGINES[shift:] + ENGINES[:shift]:
            command = [
                sys.executable, __file__, "--worker", "--model", str(folder), "--encoder", encoder,
                "--quantize", quantize or "", "--queries", str(args.queries), "--batches", str(args.batches),
            ]  # fmt: skip
            if args.dataset:
                command += ["--dataset", args.dataset]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{engine_name(encoder, quantize)} failed:\n{done.stderr[-2000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            runs[engine_name(encoder, quantize)].append(figures)
            loads.append(os.getloadavg()[0])
            print(f"round {round_number + 1} {engine_name(encoder, quantize)}: {figures}", file=sys.stderr)
    medians = {}
    for engine, figures in runs.items():
        keys = [k for k, v in figures[0].items() if isinstance(v, (int, float))]
        medians[engine] = {k: statistics.median(f[k] for f in figures) for k in keys}
    base = medians["torch fp32"]
    for figures in medians.values():
        for key in ("single_query_ms", "batch32_per_query_ms"):
            figures[f"{key} ratio to torch"] = figures[key] / base[key]
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "python": platform.python_version()},
        "load_average_during_runs": {"min": min(loads), "max": max(loads)},
        "versions": _versions(),
        "target": "single query <= 0.2 x torch fp32, top-10 agreement >= 0.95 (stand-in, AZ-MIRAGE)",
        "medians": medians,
        "runs": runs,
    }
    if args.dataset:
        result["quality (stand-in)"] = quality(work, args.dataset, args.pairs)
    if args.profile:
        figures = profile(folder, args.profile_repeats)
        figures["command"] = result["command"]
        result["profile"] = {k: figures[k] for k in ("wall_ms_median", "counted_ms")}
        result["profile"]["by_type_share"] = dict(list(figures["by_type_share"].items())[:12])
        if args.profile_save:
            Path(args.profile_save).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    print(table(result))
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1), encoding="utf-8")


def _versions() -> dict:
    versions = {}
    for module in ("torch", "transformers", "pylate", "openvino", "nncf"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = None
    return versions


def table(result: dict) -> str:
    lines = [
        "| engine | one query ms (ratio to torch) | 32 queries, per query ms (ratio) |",
        "|---|---|---|",
    ]
    for engine, f in result["medians"].items():
        lines.append(
            f"| {engine} | {f['single_query_ms']:.1f} ({f['single_query_ms ratio to torch']:.2f}×) | "
            f"{f['batch32_per_query_ms']:.1f} ({f['batch32_per_query_ms ratio to torch']:.2f}×) |"
        )
    for engine, q in result.get("quality (stand-in)", {}).items():
        lines.append(f"quality {engine}: top-10 agreement {q['top10_agreement']:.3f} (passed: {q['passed']})")
    if "profile" in result:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in list(result["profile"]["by_type_share"].items())[:6])
        lines.append(f"int8 query graph at [1, 32]: {result['profile']['wall_ms_median']:.1f} ms; {shares}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
