"""Serve under load: throughput and p50/p99 latency of ``colbert-az serve`` at concurrency 1, 8, 32, with
micro-batching on and off, against the same searches run one after another in-process.

The corpus is AZ-MIRAGE answers (the first ``--documents`` distinct ones), the queries its questions (a seeded
sample), encoded by the MiniLM stand-in (:mod:`colbert_az_pylate.standin`, real pretrained weights, converted) into
a Voyager index. Each server is the real command (``python -m colbert_az_pylate serve``, a uvicorn process on
127.0.0.1); the client is httpx, one connection per client thread, each request one query with k = 10. Every
loop is bounded: ``--requests`` requests per setting. The top 10 ids of every served answer are compared with the
in-process ones.

The ``targets`` of the report (what the search path must reach): requests/s with 8 clients at least 2.5 times that
with 1 client, and the server's overhead (its p50 with 1 client minus the in-process ``Searcher.search`` p50) at most
10 ms.

    python benchmarks/serve_load.py --dataset ../shared/data/az-mirage/dataset.json
        # writes benchmarks/results/serve-load.json; about 3 minutes on 2 CPU cores
    python benchmarks/serve_load.py --dataset ../shared/data/az-mirage/dataset.json --quick
        # 200 documents, 32 requests, 1 and 8 clients: checks that the script runs (under a minute; no timings
        # to keep), writes a temporary file unless --output is given
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CONCURRENCY = (1, 8, 32)


def corpus_and_questions(dataset: Path, documents: int, seed: int) -> tuple[list[str], list[str]]:
    """Distinct AZ-MIRAGE answers as documents, and the questions (shuffled with ``seed``)."""
    rows = json.loads(dataset.read_text(encoding="utf-8"))
    answers = list(dict.fromkeys(a.strip() for row in rows for a in row["answer"] if a.strip()))[:documents]
    questions = list(dict.fromkeys(row["query"].strip() for row in rows if row["query"].strip()))
    random.Random(seed).shuffle(questions)
    return answers, questions


def build_index(folder: Path, texts: list[str]):
    """The MiniLM stand-in converted into ``folder/model`` and ``texts`` indexed into ``folder/index``."""
    from colbert_az_pylate import convert, load
    from colbert_az_pylate.retrieval.searcher import Searcher
    from colbert_az_pylate.standin import build_minilm_standin

    convert(build_minilm_standin(folder / "raw"), folder / "model", verify=False)
    model = load(str(folder / "model"), device="cpu")
    searcher = Searcher(model, folder / "index", show_progress_bar=False)
    searcher.index(texts, ids=[str(i) for i in range(len(texts))])
    searcher.index_store.close()
    return model


class ServerProcess:
    """``python -m colbert_az_pylate serve INDEX`` on a free 127.0.0.1 port, until :meth:`stop` (or kill)."""

    def __init__(self, index: Path, *extra: str) -> None:
        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "colbert_az_pylate", "serve", str(index), "--port", str(self.port), *extra]
        # the server's log goes to a file: an unread pipe fills (64 KiB) and then stalls a process that writes to it
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (held while the server runs; closed by stop/kill)
        self.process = subprocess.Popen(
            command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=self.log
        )
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log_tail()}")
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start in 180 s")
                time.sleep(0.2)

    def log_tail(self, characters: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-characters:]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(60)
        self.log.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.log.close()


def summary(latencies: list[float], wall: float) -> dict:
    """Requests per second over the wall time, and latency percentiles in milliseconds."""
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "throughput_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def drive(url: str, items: list, concurrency: int, send) -> tuple[dict, list[tuple], list[str]]:
    """Send every item once from ``concurrency`` client threads, ``send(client, item)`` making the request:
    latencies' summary, ``(item, answer JSON)`` of each answered request, and the error texts."""
    import httpx

    todo: queue.Queue = queue.Queue()
    for item in items:
        todo.put(item)
    latencies, answers, errors, lock = [], [], [], threading.Lock()

    def client_thread() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                began = time.perf_counter()
                response = send(client, item)
                elapsed = time.perf_counter() - began
                with lock:
                    if response.status_code != 200:
                        errors.append(response.text)
                        continue
                    latencies.append(elapsed)
                    answers.append((item, response.json()))

    threads = [threading.Thread(target=client_thread) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summary(latencies, time.perf_counter() - began), answers, errors


def searches(url: str, queries: list[str], concurrency: int, k: int) -> tuple[dict, dict[str, list[str]], list[str]]:
    """Every query once through ``/search`` from ``concurrency`` clients; latencies, top ids per query, errors."""
    figures, answers, errors = drive(
        url, queries, concurrency, lambda client, query: client.post("/search", json={"queries": [query], "k": k})
    )
    return figures, {query: [hit["id"] for hit in answer["results"][0]["hits"]] for query, answer in answers}, errors


def targets(report: dict) -> dict:
    """The figures the search path has targets for, from the batching-on runs and the in-process run."""
    runs = report["batching_on"]
    one, eight = runs["concurrency_1"], runs["concurrency_8"]
    speedup = eight["throughput_per_s"] / one["throughput_per_s"] if one["throughput_per_s"] else 0.0
    overhead = one["p50_ms"] - report["in_process_sequential"]["p50_ms"]
    return {
        "requests_per_s_1_client": one["throughput_per_s"],
        "requests_per_s_8_clients": eight["throughput_per_s"],
        "speedup_8_vs_1": round(speedup, 2),
        "speedup_target": ">= 2.5",
        "server_overhead_p50_ms": round(overhead, 1),
        "server_overhead_target_ms": "<= 10",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=192, help="requests per setting (each one query)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="the server's wait with batching on")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: does the script run? (timings meaningless)")
    parser.add_argument("--output", help="default: benchmarks/results/serve-load.json (--quick: a temporary file)")
    args = parser.parse_args()
    concurrencies = CONCURRENCY
    if args.quick:
        args.documents, args.requests, concurrencies = min(args.documents, 200), min(args.requests, 32), (1, 8)
    if args.output is None:
        args.output = (
            os.path.join(tempfile.gettempdir(), "serve-load-quick.json")
            if args.quick
            else str(Path(__file__).parent / "results" / "serve-load.json")
        )

    from colbert_az_pylate.retrieval.searcher import Searcher

    texts, questions = corpus_and_questions(Path(args.dataset), args.documents, args.seed)
    queries = questions[: args.requests]
    report: dict = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "model": "MiniLM stand-in (converted), Voyager index, k = 10, one query per request",
        "settings": vars(args),
        "corpus": {"documents": len(texts), "queries": len(queries)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = build_index(Path(tmp), texts)
        searcher = Searcher.open(Path(tmp) / "index", model=model, show_progress_bar=False)
        searcher.search(queries[:4], k=args.k)  # warm-up
        latencies, expected = [], {}
        began = time.perf_counter()
        for query in queries:
            start = time.perf_counter()
            expected[query] = [hit.id for hit in searcher.search(query, k=args.k)]
            latencies.append(time.perf_counter() - start)
        report["in_process_sequential"] = summary(latencies, time.perf_counter() - began)
        print("in-process", json.dumps(report["in_process_sequential"]), flush=True)
        searcher.index_store.close()
        del searcher, model

        for name, wait in (("batching_on", args.batch_wait_ms), ("batching_off", 0.0)):
            server = ServerProcess(Path(tmp) / "index", "--read-only", "--batch-wait-ms", str(wait))
            try:
                searches(server.url, questions[-16:], 4, args.k)  # warm-up, queries not measured
                report[name] = {}
                for concurrency in concurrencies:
                    import httpx

                    before = httpx.get(f"{server.url}/health").json()["query_batches"]
                    figures, answers, errors = searches(server.url, queries, concurrency, args.k)
                    after = httpx.get(f"{server.url}/health").json()["query_batches"]
                    passes = after["forward_passes"] - before["forward_passes"]
                    figures["queries_per_forward_pass"] = round((after["queries"] - before["queries"]) / passes, 2)
                    figures["errors"] = len(errors)
                    figures["top10_equal_to_in_process"] = round(
                        sum(answers.get(q) == expected[q] for q in queries) / len(queries), 4
                    )
                    report[name][f"concurrency_{concurrency}"] = figures
                    print(name, concurrency, json.dumps(figures), flush=True)
            finally:
                server.stop()
    report["targets"] = targets(report)
    print("targets", json.dumps(report["targets"]), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
