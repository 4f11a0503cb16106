"""Long documents: recall of the answer's document with passages against today's truncation at 256 tokens.

Long documents are made from AZ-MIRAGE answers: each concatenates ``--answers-per-document`` distinct answers
(seeded shuffle), so a document runs to several thousand tokens and each question's answer sits at a known place in
exactly one document. Both indexes hold the same documents, encoded by the MiniLM stand-in
(:mod:`colbert_az_pylate.standin`, converted): one with ``Searcher.index`` as it is now (long documents split into
passages, document hits at their best passage), one with ``passages=False`` (each document encoded once, cut at the
model's document length: what indexing did before passages). Scored by exact MaxSim, so the graph plays no part;
recall@k of the answer's document, over all questions and by where the answer sits (within the first 256 tokens
of its document, or past them). Also times splitting one 5 MB document (a careless input).

    python benchmarks/long_documents.py --dataset ../shared/data/az-mirage/dataset.json
        # writes benchmarks/results/long-documents.json; about 4 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from colbert_az_pylate.tokenization import DOCUMENT_LENGTH, document_token_count

KS = (1, 5, 10)


def build_documents(dataset: Path, documents: int, per_document: int, seed: int) -> tuple[list[str], list[dict]]:
    """Long documents of concatenated answers, and one question per answer with its document and offset."""
    rows = json.loads(dataset.read_text(encoding="utf-8"))
    by_answer: dict[str, str] = {}
    for row in rows:
        answers = [a.strip() for a in row["answer"] if a.strip()]
        if len(answers) == 1 and answers[0] not in by_answer:
            by_answer[answers[0]] = row["query"]
    answers = list(by_answer)
    random.Random(seed).shuffle(answers)
    answers = answers[: documents * per_document]
    texts, questions = [], []
    for number in range(documents):
        chunk = answers[number * per_document : (number + 1) * per_document]
        text, offsets = "", []
        for answer in chunk:
            text += (" " if text else "") + answer
            offsets.append(len(text) - len(answer))
        texts.append(text)
        questions += [
            {"query": by_answer[a], "document": str(number), "offset": o} for a, o in zip(chunk, offsets, strict=True)
        ]
    return texts, questions


def recall(results, questions, select) -> dict:
    """recall@k of the answer's document over the questions ``select`` keeps."""
    chosen = [(hits, q) for hits, q in zip(results, questions, strict=True) if select(q)]
    figures = {f"recall@{k}": sum(q["document"] in [h.id for h in hits[:k]] for hits, q in chosen) for k in KS}
    return {"questions": len(chosen), **{name: round(hit / max(len(chosen), 1), 4) for name, hit in figures.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="AZ-MIRAGE dataset.json")
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--answers-per-document", type=int, default=40)
    parser.add_argument("--queries", type=int, default=400, help="questions asked (a seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "long-documents.json"))
    args = parser.parse_args()

    from colbert_az_pylate import convert, load
    from colbert_az_pylate.retrieval.passages import split_document
    from colbert_az_pylate.retrieval.searcher import Searcher
    from colbert_az_pylate.standin import build_minilm_standin

    texts, questions = build_documents(Path(args.dataset), args.documents, args.answers_per_document, args.seed)
    questions = random.Random(args.seed).sample(questions, min(args.queries, len(questions)))
    report: dict = {
        "command": "python benchmarks/long_documents.py --dataset ../shared/data/az-mirage/dataset.json",
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "model": "MiniLM stand-in (converted), document length 256",
        "search": "exact MaxSim (Searcher.search(..., exact=True)), Voyager backend",
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory() as tmp:
        convert(build_minilm_standin(Path(tmp) / "raw"), Path(tmp) / "model", verify=False)
        model = load(str(Path(tmp) / "model"), device="cpu")
        tokenizer = model.tokenizer
        for question in questions:  # where the answer starts, in tokens of its document
            text = texts[int(question["document"])]
            question["token_offset"] = document_token_count(tokenizer, text[: question["offset"]]) - 3
        lengths = [document_token_count(tokenizer, t) for t in texts]
        report["corpus"] = {
            "documents": len(texts),
            "answers_per_document": args.answers_per_document,
            "mean_tokens_per_document": round(sum(lengths) / len(lengths)),
            "max_tokens_per_document": max(lengths),
            "questions": len(questions),
        }
        queries = [q["query"] for q in questions]
        for name, passages in (("passages", True), ("truncation", False)):
            searcher = Searcher(model, Path(tmp) / name, batch_size=32, show_progress_bar=False)
            began = time.perf_counter()
            searcher.index(texts, ids=[str(i) for i in range(len(texts))], passages=passages)
            index_s = time.perf_counter() - began
            began = time.perf_counter()
            results = searcher.search(queries, k=max(KS), exact=True)
            search_s = time.perf_counter() - began
            report[name] = {
                **searcher.passage_report.to_dict(),
                "index_s": round(index_s, 1),
                "search_ms_per_query": round(1000 * search_s / len(queries), 1),
                "all": recall(results, questions, lambda q: True),
                "answer_in_first_256_tokens": recall(results, questions, lambda q: q["token_offset"] < DOCUMENT_LENGTH),
                "answer_past_token_256": recall(results, questions, lambda q: q["token_offset"] >= DOCUMENT_LENGTH),
            }
            print(name, json.dumps(report[name]), flush=True)
        passages_per_s = report["passages"]["entries"] / report["passages"]["index_s"]

        big = " ".join(texts)
        while len(big.encode()) < 5_000_000:
            big += " " + big
        big = big.encode()[:5_000_000].decode(errors="ignore")
        began = time.perf_counter()
        pieces = split_document(big, tokenizer, model.document_length)
        split_s = time.perf_counter() - began
        report["five_mb_document"] = {
            "bytes": len(big.encode()),
            "passages": len(pieces),
            "split_s": round(split_s, 1),
            "estimated_encode_s_at_measured_rate": round(len(pieces) / passages_per_s),
        }
        print("5 MB document", json.dumps(report["five_mb_document"]), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
