"""The model card's own inference code, copied verbatim except where it downloads from the hub.

Independent of colbert_az_pylate on purpose: it checks the converted folder and our ReferenceColBERT alike.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer


class ColBERT(nn.Module):
    def __init__(self, model_name: str, embedding_dim: int = 128):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(model_name)
        self.projection = nn.Linear(self.backbone.config.hidden_size, embedding_dim, bias=False)

    @torch.no_grad()
    def encode(self, input_ids, attention_mask, keep_mask=None):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        emb = self.projection(out.last_hidden_state)
        emb = F.normalize(emb, p=2, dim=-1)
        eff_mask = attention_mask if keep_mask is None else attention_mask * keep_mask
        emb = emb * eff_mask.unsqueeze(-1).float()
        return emb, eff_mask


class ModelCardCode:
    """The card's module-level script, wrapped so that it can run on any local folder."""

    def __init__(self, path: str, embedding_dim: int):
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.add_special_tokens({"additional_special_tokens": ["[Q]", "[D]"]})
        self.model = ColBERT(path, embedding_dim)
        self.model.backbone.resize_token_embeddings(len(self.tokenizer))
        proj_path = f"{path}/projection.pt"  # hf_hub_download(...) in the card
        self.model.projection.load_state_dict(torch.load(proj_path, map_location="cpu"))
        self.model = self.model.eval()

    def tokenize_query(self, text: str, max_len: int = 32):
        tokenizer = self.tokenizer
        text = f"[Q] {text}"
        enc = tokenizer(text, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        pad_mask = enc["input_ids"] == tokenizer.pad_token_id
        enc["input_ids"][pad_mask] = tokenizer.mask_token_id
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        return enc

    def tokenize_doc(self, text: str, max_len: int = 256):
        text = f"[D] {text}"
        return self.tokenizer(text, padding=True, truncation=True, max_length=max_len, return_tensors="pt")

    def maxsim_score(self, query: str, document: str) -> float:
        q_enc = self.tokenize_query(query)
        d_enc = self.tokenize_doc(document)
        q_emb, _ = self.model.encode(q_enc["input_ids"], q_enc["attention_mask"])
        d_emb, d_mask = self.model.encode(d_enc["input_ids"], d_enc["attention_mask"])
        sim = torch.einsum("qld,bnd->qlbn", q_emb, d_emb)
        sim = sim.masked_fill(~d_mask.unsqueeze(0).unsqueeze(0).bool(), float("-inf"))
        max_per_token, _ = sim.max(dim=-1)
        return max_per_token.sum(dim=1).item()
