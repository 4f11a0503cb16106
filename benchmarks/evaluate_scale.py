"""``colbert-az evaluate --protocol az-mirage`` at the model card's size: time and peak memory, 500 vs 7,373 questions.

The MiniLM stand-in (:mod:`colbert_az_pylate.standin`, converted) evaluates AZ-MIRAGE questions against the pool
of all their answers (question ``i``'s answer is its one relevant chunk): the first 500 questions (500 chunks),
then all 7,373 (7,373 chunks), each in a fresh ``--run-dir``; then all 7,373 again in the same ``--run-dir``, where
the document encodings are found and reused. Each evaluation is ``colbert_az_pylate.cli.main(["evaluate", ...])``
in its own process, started from this light one (no torch here: a child's ``ru_maxrss`` starts from its parent's
peak), and its peak resident set is that child's own ``ru_maxrss`` (``os.wait4``). Inside the child, the time
spent encoding documents, encoding queries and scoring (``maxsim_top_k``) is summed by wrapping those functions.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/evaluate_scale.py \\
        --dataset ../shared/data/az-mirage/dataset.json

Writes ``benchmarks/results/evaluate-scale.json`` (``--save``), which docs/benchmarks.md cites. The data set is
read where it lies; the pools are written under ``--work-dir`` (a temporary folder by default), never in the repo.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SAVE = Path(__file__).resolve().parent / "results" / "evaluate-scale.json"
SMALL = 500


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, data: Path, run_dir: Path, out: Path) -> None:
    """One evaluation through the CLI, in this process, with its phases timed; figures written to ``out``."""
    started = time.perf_counter()
    import contextlib
    import io

    import colbert_az_pylate.loading as loading
    from colbert_az_pylate import cli
    from colbert_az_pylate.evaluation import retrieval

    figures = {"encode_documents_s": 0.0, "encode_queries_s": 0.0, "scoring_s": 0.0, "documents_encoded": 0}
    encode, top_k, load = retrieval._encode, retrieval.maxsim_top_k, loading.load

    def timed_encode(model, texts, is_query, batch_size, bar=None):
        begin = time.perf_counter()
        vectors = encode(model, texts, is_query, batch_size, bar)
        figures["encode_queries_s" if is_query else "encode_documents_s"] += time.perf_counter() - begin
        if not is_query:
            figures["documents_encoded"] += len(texts)
        return vectors

    def timed_top_k(*args, **kwargs):
        begin = time.perf_counter()
        result = top_k(*args, **kwargs)
        figures["scoring_s"] += time.perf_counter() - begin
        return result

    def timed_load(*args, **kwargs):
        begin = time.perf_counter()
        loaded = load(*args, **kwargs)
        figures["load_s"] = time.perf_counter() - begin
        figures["peak_rss_after_load_mb"] = _hwm_mb()
        return loaded

    retrieval._encode, retrieval.maxsim_top_k, loading.load = timed_encode, timed_top_k, timed_load
    argv = ["evaluate", model, "--protocol", "az-mirage", "--data", str(data / "dataset.json")]
    argv += ["--pool", str(data / "doc_pool.json"), "--run-dir", str(run_dir), "--json"]
    stdout = io.StringIO()
    begin = time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    figures["evaluate_s"] = time.perf_counter() - begin
    figures["process_s"] = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"colbert-az evaluate exited {code}")
    report = json.loads(stdout.getvalue())[model]
    figures["metrics"] = report["metrics"]["all"]
    figures["evaluated"] = report["evaluated"]
    figures["peak_rss_vmhwm_mb"] = _hwm_mb()
    import numpy
    import torch

    figures["versions"] = {"torch": torch.__version__, "numpy": numpy.__version__, "threads": torch.get_num_threads()}
    out.write_text(json.dumps(figures, indent=1), encoding="utf-8")


def prepare_model(work: Path) -> None:
    """The stand-in, converted (in a child process of the driver, so the driver never holds torch)."""
    from colbert_az_pylate import convert
    from colbert_az_pylate.standin import build_minilm_standin

    convert(build_minilm_standin(work / "raw"), work / "model", verify=False)


def write_data(dataset: Path, count: int | None, folder: Path) -> int:
    """The first ``count`` questions (all: ``None``) and the pool of their answers, under ``folder``."""
    entries = json.loads(dataset.read_text(encoding="utf-8"))[:count]
    pool = [{"doc_chunk": e["answer"][0], "mapped_id": e["query_id"], "support": 1} for e in entries]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    (folder / "doc_pool.json").write_text(json.dumps(pool, ensure_ascii=False), encoding="utf-8")
    return len(entries)


def run_child(args: list[str]) -> tuple[float, float]:
    """Run this script as a child; its wall time and its own peak resident set (MB, from ``os.wait4``)."""
    begin = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, *args])
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - begin
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child {args[:2]} exited {process.returncode}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def cache_figures(run_dir: Path) -> dict:
    """Size of the cached document encodings (token rows, bytes on disk) in ``run_dir``."""
    caches = list((run_dir / "encodings").iterdir())
    manifest = json.loads((caches[0] / "manifest.json").read_text(encoding="utf-8"))
    rows = 0
    lengths = []
    for shard in manifest["shard_list"]:
        offsets = json.loads((caches[0] / f"{shard['name']}.json").read_text(encoding="utf-8"))["offsets"]
        rows += offsets[-1]
        lengths += [b - a for a, b in itertools.pairwise(offsets)]
    return {
        "cache_folders": len(caches),
        "document_token_rows": rows,
        "max_document_tokens": max(lengths),
        "cache_bytes": sum(p.stat().st_size for p in caches[0].iterdir()),
        "lengths": lengths,
    }


def previous_estimate_gb(questions: int, lengths: list[int], query_tokens: int = 32) -> float:
    """The largest allocations of the previous ``exact_run``: the questions × documents score matrix plus one
    512-document chunk's questions × 512 × query tokens × longest-document similarity tensor (einsum, then the
    masked copy), float32."""
    chunk = max(
        len(lengths[i : i + 512]) * max(lengths[i : i + 512]) for i in range(0, len(lengths), 512)
    )  # documents × longest document of the largest chunk
    return (questions * len(lengths) + 2 * questions * query_tokens * chunk) * 4 / 1e9


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="AZ-MIRAGE dataset.json (required)")
    parser.add_argument("--work-dir", help="where the model, the pools and the run folders go (default: temporary)")
    parser.add_argument("--small", type=int, default=SMALL, help=f"questions of the small run (default {SMALL})")
    parser.add_argument("--save", default=str(DEFAULT_SAVE))
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "DATA", "RUN_DIR", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", metavar="WORK", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, data, run_dir, out = args.child
        child(model, Path(data), Path(run_dir), Path(out))
        return
    if args.prepare:
        prepare_model(Path(args.prepare))
        return
    if not args.dataset:
        parser.error("--dataset is required (AZ-MIRAGE dataset.json)")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="colbert-az-evaluate-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "model" / "modules.json").is_file():
        run_child(["--prepare", str(work)])
    dataset = Path(args.dataset)
    sizes = {"small": write_data(dataset, args.small, work / "data-small")}
    sizes["all"] = write_data(dataset, None, work / "data-all")
    plan = [  # name, data, run folder (fresh, except the rerun)
        (f"{sizes['small']} questions", "small", "run-small"),
        (f"{sizes['all']} questions", "all", "run-all"),
        (f"{sizes['all']} questions, rerun (encodings cached)", "all", "run-all"),
    ]
    for folder in ("run-small", "run-all"):
        shutil.rmtree(work / folder, ignore_errors=True)
    runs = []
    for name, data, folder in plan:
        out = work / f"{folder}-{len(runs)}.json"
        load_before = os.getloadavg()[0]
        wall, peak = run_child(
            ["--child", str(work / "model"), str(work / f"data-{data}"), str(work / folder), str(out)]
        )
        figures = json.loads(out.read_text(encoding="utf-8"))
        cache = cache_figures(work / folder)
        lengths = cache.pop("lengths")
        run = {
            "run": name,
            "questions": sizes[data],
            "documents": sizes[data],
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak, 1),
            **{key: round(value, 2) if isinstance(value, float) else value for key, value in figures.items()},
            **cache,
            "previous_exact_run_estimate_gb": round(previous_estimate_gb(sizes[data], lengths), 1),
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        runs.append(run)
        print(
            f"{name}: wall {wall:.1f} s, encoding documents {figures['encode_documents_s']:.1f} s, queries "
            f"{figures['encode_queries_s']:.1f} s, scoring {figures['scoring_s']:.1f} s, peak {peak:.0f} MB",
            file=sys.stderr,
        )
    small, full = runs[0], runs[1]
    result = {
        "command": "OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/evaluate_scale.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "evaluate_command": "colbert-az evaluate MODEL --protocol az-mirage --data dataset.json --pool doc_pool.json "
        "--run-dir RUN_DIR --json",
        "model": "MiniLM stand-in (colbert_az_pylate.standin, converted), 128-dim, query length 32",
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu": cpu_name(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(),
        },
        "runs": runs,
        "peak_ratio_all_vs_small": round(full["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "peak_ratio_all_vs_small_vmhwm": round(full["peak_rss_vmhwm_mb"] / small["peak_rss_vmhwm_mb"], 3),
        "targets": {"peak_all_mb_max": 4096, "peak_ratio_max": 1.3},
    }
    Path(args.save).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"peak ratio {result['peak_ratio_all_vs_small']}; saved {args.save}", file=sys.stderr)


if __name__ == "__main__":
    main()
