"""Serve under faults: concurrent writes and searches lose nothing; a server killed with SIGKILL during a write
restarts with its last commit intact.

Against the real command (``python -m colbert_az_pylate serve INDEX --api-key-file F``, uvicorn on 127.0.0.1),
the MiniLM stand-in (converted) and AZ-MIRAGE answers as documents:

1. ``--writers`` client threads add batches of documents while ``--searchers`` threads search, for a bounded
   number of batches; afterwards every acknowledged document must be found (its own text, restricted to its id)
   and the index must count exactly the acknowledged documents.
2. ``--kills`` rounds: a writer thread adds batches until the server is killed with SIGKILL at a random moment
   (0.3-2.5 s into the round, so mostly mid-write); the server is restarted on the same folder and must answer,
   hold every acknowledged document, and at most the one batch in flight besides; at the end the index's every
   byte is checked against its checksums (``VoyagerIndex.verify``).

    python benchmarks/serve_faults.py --dataset ../shared/data/az-mirage/dataset.json
        # writes benchmarks/results/serve-faults.json; about 4 minutes on 2 CPU cores
    python benchmarks/serve_faults.py --dataset ../shared/data/az-mirage/dataset.json --quick
        # 100 documents, 2 writers x 2 batches, 1 kill: checks that the script runs (a temporary file)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import ServerProcess, build_index, corpus_and_questions

KEY = "serve-faults-benchmark-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def missing(url: str, documents: list[dict]) -> list[str]:
    """The ids of ``documents`` a search for their own text, restricted to their id, does not find."""
    import httpx

    lost = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for doc in documents:
            body = {"queries": [doc["text"]], "k": 1, "subset": [doc["id"]]}
            hits = client.post("/search", json=body).json()["results"][0]["hits"]
            if not hits or hits[0]["id"] != doc["id"]:
                lost.append(doc["id"])
    return lost


def concurrent_round(url: str, pool: list[str], writers: int, batches: int, searchers: int, queries: list[str]):
    import httpx

    acknowledged, failures, searches, lock = [], [], [0], threading.Lock()
    done = threading.Event()

    def write(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            for batch in range(batches):
                docs = [
                    {"id": f"c{worker}-{batch}-{n}", "text": pool[(worker * batches + batch) * 4 + n]} for n in range(4)
                ]
                response = client.post("/documents", json={"documents": docs}, headers=AUTH)
                with lock:
                    (acknowledged.extend(docs) if response.status_code == 200 else failures.append(response.text))

    def search(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            number = worker
            while not done.is_set():
                response = client.post("/search", json={"queries": [queries[number % len(queries)]], "k": 10})
                with lock:
                    searches[0] += 1
                    if response.status_code != 200:
                        failures.append(response.text)
                number += searchers

    reader_threads = [threading.Thread(target=search, args=(n,)) for n in range(searchers)]
    writer_threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    began = time.perf_counter()
    for thread in reader_threads + writer_threads:
        thread.start()
    for thread in writer_threads:
        thread.join()
    done.set()
    for thread in reader_threads:
        thread.join()
    wall = time.perf_counter() - began
    return acknowledged, failures, searches[0], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--documents", type=int, default=500, help="documents indexed before the rounds")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10, help="batches of 4 documents per writer")
    parser.add_argument("--searchers", type=int, default=8)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: does the script run?")
    parser.add_argument("--output", help="default: benchmarks/results/serve-faults.json (--quick: a temporary file)")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.writers, args.batches, args.searchers, args.kills = 100, 2, 2, 2, 1
    if args.output is None:
        args.output = (
            os.path.join(tempfile.gettempdir(), "serve-faults-quick.json")
            if args.quick
            else str(Path(__file__).parent / "results" / "serve-faults.json")
        )

    import httpx

    texts, questions = corpus_and_questions(Path(args.dataset), 100_000, args.seed)
    base, pool = texts[: args.documents], texts[args.documents :]
    rng = random.Random(args.seed)
    report: dict = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "model": "MiniLM stand-in (converted), Voyager index",
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory() as tmp:
        build_index(Path(tmp), base)
        index = Path(tmp) / "index"
        key_file = Path(tmp) / "key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)

        server = ServerProcess(index, "--api-key-file", str(key_file))
        try:
            acked, failures, searches, wall = concurrent_round(
                server.url, pool, args.writers, args.batches, args.searchers, questions
            )
            lost = missing(server.url, acked)
            count = httpx.get(f"{server.url}/health").json()["documents"]
        finally:
            server.stop()
        report["concurrent_writes_and_searches"] = {
            "acknowledged_documents": len(acked),
            "failed_requests": len(failures),
            "searches": searches,
            "wall_s": round(wall, 1),
            "lost": len(lost),
            "index_documents": count,
            "expected_index_documents": len(base) + len(acked),
        }
        print("concurrent", json.dumps(report["concurrent_writes_and_searches"]), flush=True)
        all_acked = list(acked)
        used = args.writers * args.batches * 4

        rounds = []
        for round_number in range(args.kills):
            server = ServerProcess(index, "--api-key-file", str(key_file))
            acked, in_flight, stop = [], [], threading.Event()

            def write(url=server.url, acked=acked, in_flight=in_flight, stop=stop, start=used, number=round_number):
                with httpx.Client(base_url=url, timeout=120) as client:
                    batch = 0
                    while not stop.is_set():
                        offset = start + batch * 8
                        docs = [{"id": f"k{number}-{batch}-{n}", "text": pool[offset + n]} for n in range(8)]
                        in_flight[:] = docs
                        try:
                            response = client.post("/documents", json={"documents": docs}, headers=AUTH)
                        except httpx.TransportError:
                            return
                        if response.status_code == 200:
                            acked.extend(docs)
                        batch += 1

            thread = threading.Thread(target=write)
            thread.start()
            delay = rng.uniform(0.3, 2.5)
            time.sleep(delay)
            server.kill()
            stop.set()
            thread.join(60)
            used += 8 * (len(acked) // 8 + 2)
            all_acked += acked
            began = time.perf_counter()
            server = ServerProcess(index, "--api-key-file", str(key_file))
            restart_s = time.perf_counter() - began
            try:
                count = httpx.get(f"{server.url}/health").json()["documents"]
                lost = missing(server.url, all_acked)
                kept_in_flight = in_flight and not missing(server.url, in_flight)
            finally:
                server.stop()
            expected = len(base) + len(all_acked)
            rounds.append(
                {
                    "killed_after_s": round(delay, 2),
                    "acknowledged_this_round": len(acked),
                    "lost": len(lost),
                    "index_documents": count,
                    "expected": expected,
                    "in_flight_batch_committed": bool(kept_in_flight),
                    "restart_s": round(restart_s, 1),
                }
            )
            if kept_in_flight:
                all_acked += [doc for doc in in_flight if doc not in all_acked]
            print("kill", json.dumps(rounds[-1]), flush=True)

        from colbert_az_pylate.retrieval.voyager_index import VoyagerIndex

        checked = VoyagerIndex(str(index.parent), index.name, read_only=True, embedding_size=128).verify()
        report["sigkill_during_writes"] = {
            "rounds": rounds,
            "lost_in_all_rounds": sum(r["lost"] for r in rounds),
            "counts_match": all(r["index_documents"] - r["expected"] in (0, 8) for r in rounds),
            "verify_bytes_checked": checked,
        }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
