"""Convert a tiny checkpoint of every tokenizer family, print the parity table of the README and store it.

HF_HUB_OFFLINE=1 python examples/parity_table.py [--dataset AZ-MIRAGE/dataset.json]
    [--output benchmarks/results/parity-table.json]

The probes are the package's own (edge cases and Azerbaijani/English sentences shipped inside it); ``--dataset``
adds real AZ-MIRAGE texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from colbert_az_pylate import convert
from colbert_az_pylate.conversion.probes import probe_texts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test code, not in the package
from tiny_checkpoints import FAMILIES, build_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="AZ-MIRAGE dataset.json: real texts added to the probes")
    parser.add_argument("--real-texts", type=int, default=24, help="how many texts of --dataset (default: 24)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "parity-table.json",
        help="where the table is stored as JSON (default: benchmarks/results/parity-table.json)",
    )
    args = parser.parse_args()
    probes = probe_texts(args.dataset, real_limit=args.real_texts)
    print(f"{len(probes)} probe texts, each as query and as document\n")
    print("| family | fixes | ids | max vector error | max score error (rel.) |")
    print("|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            source = build_checkpoint(Path(tmp) / family, family)
            report = convert(source, Path(tmp) / f"{family}-pylate", probes=probes)
            parity = report.parity
            fixes = " + ".join(fix.split(":")[0].split(" as ids")[0] for fix in report.fixes) or "none"
            ids = "identical" if not parity.token_mismatches else f"{len(parity.token_mismatches)} differ"
            print(
                f"| {family} | {fixes} | {ids} | {parity.max_vector_error:.1e} | "
                f"{parity.max_score_relative_error:.1e} |"
            )
            rows.append(
                {
                    "family": family,
                    "fixes": fixes,
                    "ids": ids,
                    "max_vector_error": parity.max_vector_error,
                    "max_score_relative_error": parity.max_score_relative_error,
                }
            )
    result = {
        "command": "HF_HUB_OFFLINE=1 python examples/parity_table.py " + " ".join(sys.argv[1:]),
        "probe_texts": len(probes),
        "real_texts": args.real_texts if args.dataset else 0,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    from colbert_az_pylate.errors import ColbertAzError

    try:
        main()
    except ColbertAzError as exc:  # bad input: one line, as the colbert-az command does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
