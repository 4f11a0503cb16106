"""Sizing on paper: memory, disk, machines and encoding hours for 1M / 10M / 100M documents per backend.

Arithmetic only, from measured per-vector and per-document figures in stored results (nothing is run):

- ``retrieval-defaults-50k.json``: VoyagerIndex's disk and peak memory per token vector at its defaults, at the
  largest size measured (50k documents, 1.5M vectors: the fixed overhead counts least there);
- ``backends-10k.json`` (``retrieval.py --systems exact ours qdrant qdrant+first-stage``): embedded Qdrant's disk and
  peak memory per token vector, which say what the embedded client costs, not a server;
- ``retrieval.json`` (the equal-settings run): PLAID's disk per token vector at the largest size measured;
- ``encode-rate.json`` (``encode_rate.py``): token vectors per document and documents per second per core of the
  MiniLM stand-in;
- ``cpu-encoding.json`` (``cpu_encoding.py``): the full-size architecture's milliseconds per 256-token document
  (torch float32 and the exported engines, the threads it ran on recorded per run), taken as core-seconds per
  document = milliseconds x threads (threads assumed to scale linearly).

A Qdrant server is not measured here (none can run on this machine): its RAM is Qdrant's own capacity guideline,
vectors x dimension x 4 bytes x 1.5, with every float32 vector in RAM; its disk the float32 vectors.

    python benchmarks/sizing.py          # prints the Markdown tables of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (1_000_000, 10_000_000, 100_000_000)
FULL_MODEL_ENGINES = (  # cpu-encoding.json's engine name, the words of the table
    ("torch fp32", "torch float32"),
    ("openvino bf16", 'OpenVINO, quantize="bf16"'),
    ("openvino int8", 'OpenVINO, quantize="int8"'),
)


def full_model_rates(cpu_encoding: dict) -> list[tuple[str, float, float]]:
    """(engine, ms per document, documents per second per core) of the full-size model, from cpu-encoding.json."""
    rates = []
    for engine, words in FULL_MODEL_ENGINES:
        median = cpu_encoding["medians"]["full-size"][engine]
        threads = {int(run["omp_num_threads"]) for run in cpu_encoding["runs"]["full-size"][engine]}
        if len(threads) != 1:
            raise SystemExit(f"cpu-encoding.json: {engine} ran on different thread counts {sorted(threads)}")
        count = threads.pop()
        core_s_per_doc = median["document_ms"] / 1000 * count
        words = f"{words}, {median['document_tokens']} tokens, {count} threads"
        rates.append((words, median["document_ms"], 1 / core_s_per_doc))
    return rates


def per_vector(row: dict, key: str) -> float:
    return row[key] * 2**20 / row["vectors"]


def human(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}" if nbytes < 100 * scale else f"{nbytes / scale:,.0f} {unit}"
    return f"{nbytes:,.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=str(RESULTS / "backends-10k.json"))
    parser.add_argument("--voyager", default=str(RESULTS / "retrieval-defaults-50k.json"))
    parser.add_argument("--plaid", default=str(RESULTS / "retrieval.json"))
    parser.add_argument("--encode", default=str(RESULTS / "encode-rate.json"))
    parser.add_argument("--cpu-encoding", default=str(RESULTS / "cpu-encoding.json"))
    parser.add_argument("--machine-gb", type=float, default=64, help="RAM of one machine / Qdrant node")
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()

    rows = {r["system"]: r for r in json.loads(Path(args.backends).read_text()) if "error" not in r}
    plaid = max(
        (r for r in json.loads(Path(args.plaid).read_text()) if r["system"] == "plaid"), key=lambda r: r["size"]
    )
    encode = json.loads(Path(args.encode).read_text())
    qdrant = rows["qdrant"]
    ours = max(
        (r for r in json.loads(Path(args.voyager).read_text()) if r["system"] == "ours"), key=lambda r: r["size"]
    )
    bytes_per_vector = {
        "VoyagerIndex, one machine": (per_vector(ours, "peak_mb"), per_vector(ours, "disk_mb")),
        "PLAID, one machine": (per_vector(plaid, "disk_mb"), per_vector(plaid, "disk_mb")),
        "Qdrant cluster (server)": (args.dim * 4 * 1.5, args.dim * 4),
        "Qdrant embedded (measured)": (per_vector(qdrant, "peak_mb"), per_vector(qdrant, "disk_mb")),
    }
    print("Bytes per token vector (RAM / disk):\n")
    print("| backend | RAM B/vector | disk B/vector | from |")
    print("|---|---|---|---|")
    sources = {
        "VoyagerIndex, one machine": f"measured, {ours['size']:,} documents: peak RSS growth (build + search), folder",
        "PLAID, one machine": f"measured disk, {plaid['size']:,} documents; RAM taken = index size (not measured)",
        "Qdrant cluster (server)": f"Qdrant's guideline {args.dim} x 4 B x 1.5 (RAM), float32 vectors (disk)",
        "Qdrant embedded (measured)": f"measured, {qdrant['size']:,} documents (pickled float lists in SQLite)",
    }
    for name, (ram, disk) in bytes_per_vector.items():
        print(f"| {name} | {ram:,.0f} | {disk:,.0f} | {sources[name]} |")

    machine = args.machine_gb * 1e9
    for label, vectors in (
        (f"AZ-MIRAGE answers ({encode['short']['vectors_per_doc']} token vectors per document)", "short"),
        (
            f"full-window passages ({encode['full_window']['vectors_per_doc']} token vectors per document)",
            "full_window",
        ),
    ):
        per_doc = encode[vectors]["vectors_per_doc"]
        print(f"\n{label}: RAM / disk / machines of {args.machine_gb:g} GB RAM\n")
        print("| backend | " + " | ".join(f"{n // 1_000_000}M documents" for n in SIZES) + " |")
        print("|---|" + "---|" * len(SIZES))
        for name, (ram, disk) in bytes_per_vector.items():
            if "embedded" in name:
                continue
            cells = []
            for n in SIZES:
                need = n * per_doc * ram
                machines = math.ceil(need / machine)
                fits = f"{machines} node(s)" if "cluster" in name else ("1" if machines == 1 else "does not fit one")
                cells.append(f"{human(need)} / {human(n * per_doc * disk)} / {fits}")
            print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nEncoding, hours on one CPU core (documents / measured rate; threads assumed to scale linearly):\n")
    print("| model, documents | docs/s per core | " + " | ".join(f"{n // 1_000_000}M" for n in SIZES) + " |")
    print("|---|---|" + "---|" * len(SIZES))
    rates = [
        (
            f"MiniLM stand-in, AZ-MIRAGE answers (~{encode['short']['vectors_per_doc']:.0f} tokens), measured",
            encode["short"]["docs_per_s_per_core"],
        ),
        (
            f"MiniLM stand-in, full windows ({encode['full_window']['vectors_per_doc']:.0f} tokens), measured",
            encode["full_window"]["docs_per_s_per_core"],
        ),
    ]
    cpu_encoding = json.loads(Path(args.cpu_encoding).read_text())
    for words, ms, rate in full_model_rates(cpu_encoding):
        rates.append((f"full-size architecture (ModernBERT, 22 layers), {words}: {ms:.1f} ms per document", rate))
    for name, rate in rates:
        hours = " | ".join(f"{n / rate / 3600:,.0f}" for n in SIZES)
        print(f"| {name} | {rate:.2f} | {hours} |")


if __name__ == "__main__":
    main()
