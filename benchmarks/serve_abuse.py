"""Serve under abuse: what a hostile or careless client costs everyone else.

Against the real command (``python -m colbert_az_pylate serve INDEX``, uvicorn on 127.0.0.1, no key: anyone may
search and ask for document embeddings), the MiniLM stand-in (converted) and AZ-MIRAGE answers as documents:

1. **Embedding abuse**: search p50 of one client, idle, then while ``--abusers`` unauthenticated clients loop on
   the largest document-embedding request the server allows (found by asking it: as many 2,000-character inputs
   as ``--max-embedding-chars`` and ``--max-response-bytes`` let through). Target: p50 under abuse at most twice
   the idle p50.
2. **Health in a burst**: ``/health`` polled every 10 ms while ``--burst`` searches are sent at once (32 client
   threads). Target: ``/health`` p99 at most 50 ms.
3. **Slow clients**: ``--slow-clients`` connections each dribble request headers one byte at a time; meanwhile a
   new client searches (its latency), and every slow connection must be cut with 408 once ``--header-timeout``
   passes.

    python benchmarks/serve_abuse.py --dataset ../shared/data/az-mirage/dataset.json
        # writes benchmarks/results/serve-abuse.json; about 3 minutes on 2 CPU cores
    python benchmarks/serve_abuse.py --dataset ../shared/data/az-mirage/dataset.json --quick
        # 200 documents, small loops: checks that the script runs (timings meaningless; a temporary file)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import ServerProcess, build_index, corpus_and_questions


def percentiles(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def sequential_searches(url: str, queries: list[str], k: int = 10) -> tuple[list[float], int]:
    """One client, one query after another: latencies and the number of failed requests."""
    import httpx

    latencies, failed = [], 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for query in queries:
            began = time.perf_counter()
            response = client.post("/search", json={"queries": [query], "k": k})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - began)
            else:
                failed += 1
    return latencies, failed


def largest_embedding_request(url: str, pool: list[str]) -> tuple[list[str], int]:
    """The most 2,000-character document inputs one unauthenticated request may carry (binary search on the
    server's 413s, which cost it nothing), and the status of that request."""
    import httpx

    texts = [(text * (2000 // max(len(text), 1) + 1))[:2000] for text in pool[:64]]
    low, high, status = 0, len(texts), 0
    with httpx.Client(base_url=url, timeout=300) as client:
        while low < high:
            middle = (low + high + 1) // 2
            response = client.post("/v1/embeddings", json={"input": texts[:middle], "is_query": False})
            if response.status_code == 413:
                high = middle - 1
            else:
                low, status = middle, response.status_code
    return texts[:low], status


def embedding_abuse(url: str, texts: list[str], abusers: int, stop: threading.Event) -> dict:
    """``abusers`` threads posting ``texts`` as document embeddings until ``stop``; their answers, counted."""
    import httpx

    counts: dict[int, int] = {}
    lock = threading.Lock()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while not stop.is_set():
                try:
                    status = client.post("/v1/embeddings", json={"input": texts, "is_query": False}).status_code
                except httpx.TransportError:
                    status = -1
                with lock:
                    counts[status] = counts.get(status, 0) + 1

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(abusers)]
    for thread in threads:
        thread.start()
    return {"threads": threads, "counts": counts}


def health_during_burst(url: str, queries: list[str], burst: int) -> dict:
    """``/health`` latencies (polled every 10 ms) while ``burst`` searches are sent by 32 client threads."""
    import httpx

    todo = list(range(burst))
    lock, done, health, failures = threading.Lock(), threading.Event(), [], [0]

    def searcher() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    number = todo.pop()
                response = client.post("/search", json={"queries": [queries[number % len(queries)]], "k": 10})
                if response.status_code != 200:
                    with lock:
                        failures[0] += 1

    def poller() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not done.is_set():
                began = time.perf_counter()
                ok = client.get("/health").status_code == 200
                health.append(time.perf_counter() - began if ok else float("inf"))
                time.sleep(0.01)

    poll = threading.Thread(target=poller)
    poll.start()
    time.sleep(0.2)
    threads = [threading.Thread(target=searcher) for _ in range(32)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    done.set()
    poll.join()
    figures = percentiles(health)
    return {**figures, "burst_searches": burst, "failed_searches": failures[0], "burst_wall_s": round(wall, 1)}


def slow_clients(url: str, port: int, count: int, header_timeout: float, query: str) -> dict:
    """``count`` connections dribbling headers; a new client's search meanwhile; how the slow ones end."""
    import httpx

    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=header_timeout + 30)
        sock.sendall(b"P")
        sockets.append(sock)
    began_slow = time.perf_counter()
    stop = threading.Event()

    def dribble() -> None:
        while not stop.is_set():
            for sock in sockets:
                with contextlib.suppress(OSError):  # cut by the server already
                    sock.sendall(b"O")
            time.sleep(0.5)

    dribbler = threading.Thread(target=dribble)
    dribbler.start()
    time.sleep(0.5)
    with httpx.Client(base_url=url, timeout=60) as client:
        began = time.perf_counter()
        status = client.post("/search", json={"queries": [query], "k": 10}).status_code
        new_client_ms = (time.perf_counter() - began) * 1000
    answers, cut_after = [], []
    for sock in sockets:
        chunks = []
        try:
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        except OSError:
            pass
        answers.append(b"".join(chunks))
        cut_after.append(time.perf_counter() - began_slow)
    stop.set()
    dribbler.join()
    for sock in sockets:
        sock.close()
    return {
        "slow_connections": count,
        "new_client_status": status,
        "new_client_ms": round(new_client_ms, 1),
        "slow_cut_with_408": sum(answer.startswith(b"HTTP/1.1 408") for answer in answers),
        "slow_cut_after_s_max": round(max(cut_after), 1),
        "header_timeout_s": header_timeout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=100, help="sequential searches per p50 (idle, abused)")
    parser.add_argument("--abusers", type=int, default=1, help="clients looping on document embeddings")
    parser.add_argument("--burst", type=int, default=200, help="searches sent at once while /health is polled")
    parser.add_argument("--slow-clients", type=int, default=200, help="connections dribbling their headers")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="the server's --header-timeout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: does the script run? (timings meaningless)")
    parser.add_argument("--output", help="default: benchmarks/results/serve-abuse.json (--quick: a temporary file)")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.searches, args.burst = min(args.documents, 200), 12, 24
        args.slow_clients, args.header_timeout = 10, 2.0
    if args.output is None:
        args.output = (
            os.path.join(tempfile.gettempdir(), "serve-abuse-quick.json")
            if args.quick
            else str(Path(__file__).parent / "results" / "serve-abuse.json")
        )

    texts, questions = corpus_and_questions(Path(args.dataset), args.documents, args.seed)
    queries = questions[: args.searches]
    report: dict = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "model": "MiniLM stand-in (converted), Voyager index, k = 10, one query per request, server without a key",
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory() as tmp:
        build_index(Path(tmp), texts)
        server = ServerProcess(Path(tmp) / "index", "--header-timeout", str(args.header_timeout))
        try:
            sequential_searches(server.url, questions[-8:])  # warm-up
            idle, idle_failed = sequential_searches(server.url, queries)
            abuse_texts, status = largest_embedding_request(server.url, texts)
            stop = threading.Event()
            abuse = embedding_abuse(server.url, abuse_texts, args.abusers, stop)
            time.sleep(1.0)  # the abusers are in full swing
            abused, abused_failed = sequential_searches(server.url, queries)
            stop.set()
            for thread in abuse["threads"]:
                thread.join(300)
            idle_p50, abused_p50 = percentiles(idle)["p50_ms"], percentiles(abused)["p50_ms"]
            report["embedding_abuse"] = {
                "idle": {**percentiles(idle), "failed": idle_failed},
                "abused": {**percentiles(abused), "failed": abused_failed},
                "abuse_request": {"inputs": len(abuse_texts), "characters_each": 2000, "status": status},
                "abuse_answers": {str(code): count for code, count in sorted(abuse["counts"].items())},
                "p50_ratio": round(abused_p50 / idle_p50, 2) if idle_p50 else None,
                "target_ratio": "<= 2",
            }
            print("embedding abuse", json.dumps(report["embedding_abuse"]), flush=True)
            report["health_during_burst"] = {
                **health_during_burst(server.url, questions, args.burst),
                "target_p99_ms": "<= 50",
            }
            print("health", json.dumps(report["health_during_burst"]), flush=True)
            report["slow_clients"] = slow_clients(
                server.url, server.port, args.slow_clients, args.header_timeout, questions[0]
            )
            print("slow clients", json.dumps(report["slow_clients"]), flush=True)
        finally:
            server.stop()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
