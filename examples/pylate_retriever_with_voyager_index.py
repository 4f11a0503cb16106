"""VoyagerIndex inside pylate's own retriever, on the offline stand-in and the packaged Azerbaijani corpus.

    HF_HUB_OFFLINE=1 python examples/pylate_retriever_with_voyager_index.py

Prints pylate's ranking and VoyagerIndex.search's for the same queries (they agree), and the exact MaxSim top hit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pylate import retrieve

from colbert_az_pylate import convert, load
from colbert_az_pylate.retrieval import VoyagerIndex, read_corpus
from colbert_az_pylate.retrieval.corpus import demo_corpus_path
from colbert_az_pylate.standin import build_minilm_standin

QUERIES = ["Qız qalasının hündürlüyü nə qədərdir?", "Novruz bayramında süfrəyə nə qoyulur?"]

with tempfile.TemporaryDirectory() as tmp:
    convert(build_minilm_standin(Path(tmp) / "raw"), Path(tmp) / "model")
    model = load(str(Path(tmp) / "model"), device="cpu")
    corpus = read_corpus(demo_corpus_path())

    index = VoyagerIndex(index_folder=tmp, index_name="az", embedding_size=128)
    index.add_documents(corpus.ids, model.encode(corpus.texts, is_query=False, show_progress_bar=False))
    queries = model.encode(QUERIES, is_query=True, show_progress_bar=False)

    through_pylate = retrieve.ColBERT(index=index).retrieve(queries, k=3)
    direct = index.search(queries, k=3)
    exact = index.exact_search(queries, k=1)
    for query, a, b, e in zip(QUERIES, through_pylate, direct, exact, strict=True):
        print(query)
        print("  pylate retrieve.ColBERT:", [hit["id"] for hit in a])
        print("  VoyagerIndex.search:    ", [hit["id"] for hit in b])
        print("  exact MaxSim top hit:   ", e[0]["id"])
