"""The model card's inference code as a small class: the yardstick of every parity claim.

It follows ``../shared/seed/colbert-az-model-card.md`` step by step (AutoTokenizer + ``[Q]``/``[D]`` special
tokens, AutoModel backbone resized to the tokenizer, ``projection.pt`` as a bias-free linear layer, L2
normalisation, query expansion with mask tokens, MaxSim), and works on any checkpoint of that layout:
any ``AutoModel`` backbone and any projection size.

>>> from colbert_az_pylate.reference import ReferenceColBERT
>>> model = ReferenceColBERT.from_pretrained("path/to/colbert-az")  # doctest: +SKIP
>>> model.score(["Azərbaycanın paytaxtı"], ["Bakı Azərbaycanın paytaxtıdır."])  # doctest: +SKIP
tensor([[25.1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from colbert_az_pylate.conversion.checkpoint import PROJECTION_FILE, load_projection
from colbert_az_pylate.scores import maxsim_scores, pad_documents
from colbert_az_pylate.tokenization import (
    DOCUMENT_LENGTH,
    QUERY_LENGTH,
    add_markers,
    reference_document_inputs,
    reference_query_inputs,
)


class ReferenceColBERT(nn.Module):
    """Backbone + projection, encoding exactly as the model card's ``ColBERT.encode``.

    Parameters
    ----------
    backbone
        A Hugging Face encoder whose ``last_hidden_state`` is projected.
    tokenizer
        Its tokenizer, with ``[Q]``/``[D]`` added (``from_pretrained`` does that).
    projection_weight
        The (embedding_dim, hidden_size) weight of the bias-free projection.
    """

    def __init__(self, backbone: nn.Module, tokenizer, projection_weight: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        out_features, in_features = projection_weight.shape
        self.projection = nn.Linear(in_features, out_features, bias=False)
        with torch.no_grad():
            self.projection.weight.copy_(projection_weight)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> ReferenceColBERT:
        """Load a local folder in the colbert-az layout (backbone, tokenizer, ``projection.pt``)."""
        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        add_markers(tokenizer)
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        backbone.resize_token_embeddings(len(tokenizer))
        hidden_size = backbone.get_input_embeddings().embedding_dim
        model = cls(backbone, tokenizer, load_projection(path / PROJECTION_FILE, hidden_size))
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised token vectors, zeroed where the attention mask is 0 (the card's ``encode``)."""
        out = self.backbone(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            return_dict=True,
        )
        embeddings = F.normalize(self.projection(out.last_hidden_state), p=2, dim=-1)
        return embeddings * attention_mask.to(self.device).unsqueeze(-1).float()

    def encode_queries(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = QUERY_LENGTH
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query vectors (n, max_length, dim) and their input ids."""
        ids, vectors = [], []
        for start in range(0, len(texts), batch_size):
            enc = reference_query_inputs(self.tokenizer, texts[start : start + batch_size], max_length)
            vectors.append(self.encode(enc["input_ids"], enc["attention_mask"]).cpu())
            ids.append(enc["input_ids"])
        return torch.cat(vectors), torch.cat(ids)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = DOCUMENT_LENGTH
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each document, its unpadded token vectors (tokens, dim) and input ids."""
        out = []
        for start in range(0, len(texts), batch_size):
            enc = reference_document_inputs(self.tokenizer, texts[start : start + batch_size], max_length)
            vectors = self.encode(enc["input_ids"], enc["attention_mask"]).cpu()
            for row, ids, mask in zip(vectors, enc["input_ids"], enc["attention_mask"], strict=True):
                keep = mask.bool()
                out.append((row[keep], ids[keep]))
        return out

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """MaxSim scores (n_queries, n_documents), as the card's ``maxsim_score`` for every pair."""
        query_vectors, _ = self.encode_queries(queries)
        docs = [vectors for vectors, _ in self.encode_documents(documents)]
        return maxsim_scores(query_vectors, *pad_documents(docs))
