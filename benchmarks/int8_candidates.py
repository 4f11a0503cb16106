"""Why int8 means "OpenVINO, int8 weights": every int8 recipe tried, its quality and its speed.

Candidates, all made from the same exported float32 graph (``encoders/model.onnx``):

- ``ort-dynamic``: ONNX Runtime dynamic quantization (int8 weights per channel, activations quantized per tensor at
  run time);
- ``ort-dynamic-keep-ffn-down``: the same, the FFN down projections (input = the intermediate size) left float32;
- ``ort-nbits8``: ONNX Runtime ``MatMulNBits`` 8-bit weights, blocks of 32, int8 compute (accuracy level 4);
- ``ov-ptq``: OpenVINO post-training quantization (NNCF, transformer preset, SmoothQuant), calibrated on the
  package's own probe and demo texts, tokenized exactly as pylate does (queries mask-padded);
- ``ov-ptq-keep-ffn-down``: the same, FFN down projections left float32;
- ``ov-int8-weights``: NNCF weight compression, int8 per output channel, activations float32 — what
  ``encoder="openvino", quantize="int8"`` ships.

Quality on the MiniLM stand-in (real weights): top-10 agreement with torch float32 exact search and MaxSim relative
error, AZ-MIRAGE questions searching their answers (``--pairs``). Speed on the full-size architecture (random
weights): the graph alone, one 32-token query and 16 documents of 256 tokens per call, medians. Float32 ONNX Runtime,
float32 OpenVINO and torch are measured in the same run as the baselines.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/int8_candidates.py \
        --dataset ../shared/data/az-mirage/dataset.json

Uses the models prepared by ``benchmarks/cpu_encoding.py`` in ``--work-dir`` (run that first); writes
``benchmarks/results/int8-candidates.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SAVE = Path(__file__).resolve().parent / "results" / "int8-candidates.json"
BUDGET = 0.95


def ffn_down_nodes(onnx_path: Path, intermediate_size: int) -> list[str]:
    """MatMul nodes whose weight has ``intermediate_size`` input rows: the FFN down projections."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(shapes.get(x, (0,))[0] == intermediate_size for x in node.input)
    ]


def build_candidates(folder: Path, out: Path) -> dict[str, tuple[str, Path]]:
    """Write every candidate graph of ``folder`` into ``out``; name -> (runtime, path)."""
    import nncf
    import onnx
    import openvino
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from colbert_az_pylate import load
    from colbert_az_pylate.encoders.export import graph_inputs

    source = folder / "encoders" / "model.onnx"
    model = load(folder, device="cpu")
    inputs = graph_inputs(model)
    down = ffn_down_nodes(source, model[0].auto_model.config.intermediate_size)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.{'onnx' if name.startswith('ort') else 'xml'}" for name in CANDIDATES}
    common = {"weight_type": QuantType.QInt8, "per_channel": True, "op_types_to_quantize": ["MatMul"]}
    if not paths["ort-dynamic"].exists():
        quantize_dynamic(str(source), str(paths["ort-dynamic"]), **common)
        quantize_dynamic(str(source), str(paths["ort-dynamic-keep-ffn-down"]), nodes_to_exclude=down, **common)
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(source)), bits=8, block_size=32, accuracy_level=4, is_symmetric=True
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(paths["ort-nbits8"]), use_external_data_format=False)
        core = openvino.Core()
        batches = calibration_batches(model, inputs)
        for name, extra in (("ov-ptq", {}), ("ov-ptq-keep-ffn-down", {"ignored_scope": nncf.IgnoredScope(names=down)})):
            quantized = nncf.quantize(
                core.read_model(str(source)),
                nncf.Dataset(batches),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(batches),
                **extra,
            )
            openvino.save_model(quantized, str(paths[name]), compress_to_fp16=False)
        compressed = nncf.compress_weights(core.read_model(str(source)), mode=nncf.CompressWeightsMode.INT8_ASYM)
        openvino.save_model(compressed, str(paths["ov-int8-weights"]), compress_to_fp16=False)
    return {name: ("onnx" if name.startswith("ort") else "openvino", path) for name, path in paths.items()}


CANDIDATES = (
    "ort-dynamic",
    "ort-dynamic-keep-ffn-down",
    "ort-nbits8",
    "ov-ptq",
    "ov-ptq-keep-ffn-down",
    "ov-int8-weights",
)


def calibration_batches(model, inputs: list[str]) -> list[dict]:
    """The package's probe and demo texts, one per batch, as queries and as documents."""
    from colbert_az_pylate.conversion.probes import packaged_probe_texts
    from colbert_az_pylate.retrieval.corpus import demo_corpus_path
    from colbert_az_pylate.retrieval.demo import SAMPLE_QUERIES

    lines = demo_corpus_path().read_text(encoding="utf-8").splitlines()
    texts = [*packaged_probe_texts(), *SAMPLE_QUERIES, *(json.loads(line)["text"] for line in lines if line.strip())]
    return [
        {name: model.tokenize([text], is_query=is_query)[name].numpy() for name in inputs}
        for is_query in (True, False)
        for text in texts
    ]


def runner(runtime: str, path: Path):
    """A function from feeds to last hidden states for one graph (float32 compute where not quantized)."""
    if runtime == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_inputs()]
        return lambda feeds: session.run(None, {n: feeds[n] for n in names})[0]
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda feeds: np.array(compiled(feeds)[compiled.outputs[0]])


def quality(folder: Path, candidates: dict, dataset: str | None, pairs: int) -> dict:
    from colbert_az_pylate import load
    from colbert_az_pylate.encoders.parity import exact_scores, retrieval_texts, top_k_agreement
    from colbert_az_pylate.encoders.runtime import ExportedBackbone
    from colbert_az_pylate.signature import backbone_digest

    questions, answers = retrieval_texts(dataset, pairs)
    reference = load(folder, device="cpu")

    def scores(model):
        q = model.encode(questions, is_query=True, show_progress_bar=False)
        return exact_scores(q, model.encode(answers, is_query=False, show_progress_bar=False))

    base = scores(reference)
    figures = {}
    for name, (runtime, path) in candidates.items():
        model = load(folder, device="cpu")
        backbone = model[0].auto_model
        inputs = ["input_ids", "attention_mask"]
        model[0].auto_model = ExportedBackbone(
            runner(runtime, path), inputs, backbone.config, backbone_digest(backbone), name
        )
        other = scores(model)
        relative = np.abs(other - base) / np.maximum(np.abs(base), 1e-6)
        figures[name] = {
            "top10_agreement": top_k_agreement(base, other),
            "mean_score_relative_error": float(relative.mean()),
            "max_score_relative_error": float(relative.max()),
        }
        print(f"quality {name}: {figures[name]}", file=sys.stderr, flush=True)
    return figures


def speed(folder: Path, candidates: dict, repeats: int) -> dict:
    import torch

    from colbert_az_pylate import load

    rng = np.random.default_rng(0)
    query = {"input_ids": rng.integers(5, 300, (1, 32)), "attention_mask": np.ones((1, 32), np.int64)}
    documents = {"input_ids": rng.integers(5, 300, (16, 256)), "attention_mask": np.ones((16, 256), np.int64)}

    def timed(run) -> dict:
        run(query), run(documents)
        q = statistics.median(_seconds(run, query) for _ in range(repeats))
        d = statistics.median(_seconds(run, documents) for _ in range(max(2, repeats // 5)))
        return {"query_ms": q * 1000, "document_ms": d / 16 * 1000}

    backbone = load(folder, device="cpu")[0].auto_model.eval()

    def torch_run(feeds):
        with torch.no_grad():
            return backbone(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state

    source = folder / "encoders" / "model.onnx"
    baselines = {"torch fp32": torch_run, "ort fp32": runner("onnx", source), "ov fp32": runner("openvino", source)}
    figures = {}
    for name, run in [*baselines.items(), *((n, runner(r, p)) for n, (r, p) in candidates.items())]:
        figures[name] = timed(run)
        print(f"speed {name}: {figures[name]}", file=sys.stderr, flush=True)
    base = figures["torch fp32"]
    for f in figures.values():
        f["query speedup"] = base["query_ms"] / f["query_ms"]
        f["document speedup"] = base["document_ms"] / f["document_ms"]
    return figures


def _seconds(run, feeds) -> float:
    start = time.perf_counter()
    run(feeds)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="AZ-MIRAGE dataset.json")
    parser.add_argument("--work-dir", default="/tmp/colbert-az-cpu-encoding", help="cpu_encoding.py's --work-dir")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--save", default=str(DEFAULT_SAVE))
    args = parser.parse_args()
    work = Path(args.work_dir)
    for name in ("stand-in", "full-size"):
        if not (work / name / "encoders" / "model.onnx").is_file():
            raise SystemExit(f"{work / name} has no export; run benchmarks/cpu_encoding.py --work-dir {work} first")
    result = {
        "command": "python " + " ".join(sys.argv),
        "quality (stand-in)": quality(
            work / "stand-in",
            build_candidates(work / "stand-in", work / "candidates-stand-in"),
            args.dataset,
            args.pairs,
        ),
        "speed (full-size graph)": speed(
            work / "full-size", build_candidates(work / "full-size", work / "candidates-full-size"), args.repeats
        ),
    }
    lines = [
        "| candidate | top-10 agreement | MaxSim rel. error (mean) | query ms | per document ms |",
        "|---|---|---|---|---|",
    ]
    for name, s in result["speed (full-size graph)"].items():
        q = result["quality (stand-in)"].get(name)
        verdict = "" if q is None else f"{q['top10_agreement']:.3f}{'' if q['top10_agreement'] >= BUDGET else ' ✗'}"
        error = "" if q is None else f"{q['mean_score_relative_error']:.2e}"
        lines.append(
            f"| {name} | {verdict} | {error} | {s['query_ms']:.1f} ({s['query speedup']:.1f}×) | "
            f"{s['document_ms']:.1f} ({s['document speedup']:.1f}×) |"
        )
    print("\n".join(lines))
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
