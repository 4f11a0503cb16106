"""The model card's inference code as a small class: the yardstick of every parity claim.

It follows the "Usage" code of the LocalDoc/colbert-az model card step by step (AutoTokenizer + ``[Q]``/``[D]``
special tokens, AutoModel backbone resized to the tokenizer, ``projection.pt`` as a bias-free linear layer, L2
normalisation, query expansion with mask tokens, MaxSim), and works on any checkpoint of that layout: any
``AutoModel`` backbone and any projection size. ``tests/model_card_code.py`` holds that code verbatim and the
tests check this class against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from colbert_az_pylate.conversion.checkpoint import PROJECTION_FILE, check_layout, load_projection, resolve_source
from colbert_az_pylate.errors import CheckpointError, ColbertAzError, first_line
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
    backbone : torch.nn.Module
        A Hugging Face encoder whose ``last_hidden_state`` is projected.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer, with ``[Q]``/``[D]`` added (``from_pretrained`` does that).
    projection_weight : torch.Tensor
        The (embedding_dim, hidden_size) weight of the bias-free projection.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     model = ReferenceColBERT.from_pretrained(build_checkpoint(Path(tmp) / "colbert-az", "wordpiece"))
    >>> vectors, ids = model.encode_queries(["Azərbaycanın paytaxtı"])
    >>> tuple(vectors.shape)
    (1, 32, 24)
    >>> model.score(["Bakı"], ["Bakı Azərbaycanın paytaxtıdır.", "Nizami"]).shape
    torch.Size([1, 2])
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
        """Load a local folder in the colbert-az layout (backbone, tokenizer, ``projection.pt``).

        Parameters
        ----------
        path : str or Path
            The folder (relative paths are taken from the working directory).
        device : str or torch.device, default "cpu"
            Where the model runs.

        Returns
        -------
        ReferenceColBERT
            In evaluation mode, computing in float32 as the card's code does.

        Raises
        ------
        SourceNotFoundError, CheckpointError
            When the folder is missing, lacks a file of the layout, or cannot be loaded (truncated weights …).
        """
        path = resolve_source(path)
        check_layout(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            add_markers(tokenizer)
            backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        except ColbertAzError:
            raise
        except Exception as exc:  # any loader failure on the user's files
            raise CheckpointError(f"cannot load {path} as the model card does: {first_line(exc)[:200]}") from exc
        backbone.resize_token_embeddings(len(tokenizer))
        hidden_size = backbone.get_input_embeddings().embedding_dim
        model = cls(backbone, tokenizer, load_projection(path / PROJECTION_FILE, hidden_size))
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        """The device of the projection (and of the whole model)."""
        return self.projection.weight.device

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised token vectors, zeroed where the attention mask is 0 (the card's ``encode``).

        Parameters
        ----------
        input_ids, attention_mask : torch.Tensor
            A tokenized batch, shape (batch, tokens).

        Returns
        -------
        torch.Tensor
            (batch, tokens, embedding_dim) on the model's device.
        """
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
        """Query vectors and their input ids, as the card encodes queries (``[Q]``, expanded with mask tokens).

        Parameters
        ----------
        texts : Sequence[str]
            The queries.
        batch_size : int, default 32
            Queries per forward pass.
        max_length : int, default 32
            Query length after expansion.

        Returns
        -------
        tuple[torch.Tensor, torch.Tensor]
            Vectors (n, max_length, embedding_dim) on the CPU and input ids (n, max_length).
        """
        ids, vectors = [], []
        for start in range(0, len(texts), batch_size):
            enc = reference_query_inputs(self.tokenizer, texts[start : start + batch_size], max_length)
            vectors.append(self.encode(enc["input_ids"], enc["attention_mask"]).cpu())
            ids.append(enc["input_ids"])
        return torch.cat(vectors), torch.cat(ids)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = DOCUMENT_LENGTH
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each document, its unpadded token vectors and input ids, as the card encodes documents (``[D]``).

        Parameters
        ----------
        texts : Sequence[str]
            The documents.
        batch_size : int, default 32
            Documents per forward pass.
        max_length : int, default 256
            Documents are truncated to this many tokens.

        Returns
        -------
        list[tuple[torch.Tensor, torch.Tensor]]
            Per document: vectors (tokens, embedding_dim) on the CPU and input ids (tokens,).
        """
        out = []
        for start in range(0, len(texts), batch_size):
            enc = reference_document_inputs(self.tokenizer, texts[start : start + batch_size], max_length)
            vectors = self.encode(enc["input_ids"], enc["attention_mask"]).cpu()
            for row, ids, mask in zip(vectors, enc["input_ids"], enc["attention_mask"], strict=True):
                keep = mask.bool()
                out.append((row[keep], ids[keep]))
        return out

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """MaxSim scores of every query against every document, as the card's ``maxsim_score``.

        Parameters
        ----------
        queries, documents : Sequence[str]
            The texts.

        Returns
        -------
        torch.Tensor
            (n_queries, n_documents).
        """
        query_vectors, _ = self.encode_queries(queries)
        docs = [vectors for vectors, _ in self.encode_documents(documents)]
        return maxsim_scores(query_vectors, *pad_documents(docs))
