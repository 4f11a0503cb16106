"""Retrieval: a crash-safe Voyager index (drop-in for pylate's), a high-level searcher, corpus reading, the demo."""

from colbert_az_pylate.retrieval.corpus import Corpus, read_corpus
from colbert_az_pylate.retrieval.plaid_index import PlaidIndex
from colbert_az_pylate.retrieval.qdrant_index import QdrantIndex
from colbert_az_pylate.retrieval.searcher import Hit, Searcher, rerank
from colbert_az_pylate.retrieval.voyager_index import ModelSignature, VoyagerIndex

__all__ = [
    "Corpus",
    "Hit",
    "ModelSignature",
    "PlaidIndex",
    "QdrantIndex",
    "Searcher",
    "VoyagerIndex",
    "read_corpus",
    "rerank",
]
