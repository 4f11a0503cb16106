"""``PlaidIndex``: pylate's PLAID engine (fast-plaid) for corpora too large for HNSW over every token.

PLAID clusters the token vectors into centroids and keeps residuals compressed to ``nbits`` per dimension, so
memory and build time grow far more slowly than an HNSW graph over every token; the price is approximate
scores (decompressed residuals) and a build-once index. Ids, payloads and the model signature live beside
fast-plaid's files in JSON, checked by SHA-256 like :class:`VoyagerIndex`; the folder is built in a temporary
sibling and renamed into place, so a killed build leaves nothing half-written.

fast-plaid's own update and delete paths read files with ``numpy.load(allow_pickle=True)``; to keep pickle off
every load path, this index is built once and never updated in place: rebuild it (``override=True``) to change
the corpus. Its search path reads plain arrays only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, OutputExistsError
from colbert_az_pylate.retrieval.voyager_index import ModelSignature, _as_matrices

FORMAT_VERSION = 1
MANIFEST = "plaid-manifest.json"
ENGINE_FOLDER = "fast_plaid"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PlaidIndex:
    """A build-once PLAID index with string ids, payloads and a model signature.

    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((6, 8)).astype("float32") for _ in range(40)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     index = PlaidIndex.build(f"{folder}/plaid", [f"d{i}" for i in range(40)], docs, show_progress=False)
    ...     index.search([docs[3]], k=1)[0][0]["id"]
    'd3'
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        model: ModelSignature | None = None,
        n_ivf_probe: int = 8,
        n_full_scores: int = 4096,
        device: str = "cpu",
        show_progress: bool = False,
    ) -> None:
        from fast_plaid import search as fast_plaid_search

        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.exists():
            raise IndexFormatError(f"no PLAID index at {self.folder}; build one with PlaidIndex.build")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"cannot read {manifest_path}: {exc}; rebuild the index") from exc
        if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > FORMAT_VERSION:
            raise IndexFormatError(f"{self.folder} has a newer index format; upgrade colbert-az-pylate")
        for name, digest in manifest["files"].items():
            if not (self.folder / name).exists() or _sha256(self.folder / name) != digest:
                raise IndexFormatError(f"{self.folder / name} is missing or corrupted; rebuild the index")
        if model is not None and manifest["model"] not in (None, model.to_dict()):
            raise IndexFormatError(
                f"PLAID index at {self.folder} was built with {manifest['model']['name']} (fingerprint "
                f"{manifest['model']['fingerprint']}), not {model.name} ({model.fingerprint}); use that model"
            )
        self.model, self.embedding_size = manifest["model"], manifest["embedding_size"]
        self.doc_ids: list[str] = json.loads((self.folder / "ids.json").read_text(encoding="utf-8"))
        self._positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        self._payloads: list[dict] = json.loads((self.folder / "payloads.json").read_text(encoding="utf-8"))
        self.n_ivf_probe, self.n_full_scores, self.show_progress = n_ivf_probe, n_full_scores, show_progress
        self.engine = fast_plaid_search.FastPlaid(index=str(self.folder / ENGINE_FOLDER), device=device)

    @classmethod
    def build(
        cls,
        folder: str | Path,
        documents_ids: Sequence[str],
        documents_embeddings,
        *,
        payloads: Sequence[dict] | None = None,
        model: ModelSignature | None = None,
        override: bool = False,
        nbits: int = 4,
        kmeans_niters: int = 4,
        seed: int = 42,
        device: str = "cpu",
        show_progress: bool = True,
        **search_settings,
    ) -> PlaidIndex:
        """Build the index of a whole corpus into ``folder`` (atomically); returns it opened."""
        from fast_plaid import search as fast_plaid_search

        folder = Path(folder)
        if folder.exists() and not override:
            raise OutputExistsError(f"{folder} exists; pass override=True to rebuild it")
        ids = list(documents_ids)
        if not ids or any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
            raise ColbertAzError("document ids must be unique non-empty strings, at least one")
        dimension = model.embedding_size if model else None
        first = documents_embeddings[0] if len(documents_embeddings) else None
        dimension = dimension or (int(np.asarray(first).shape[-1]) if first is not None else 0)
        matrices = _as_matrices(documents_embeddings, "document", dimension)
        if len(matrices) != len(ids) or (payloads is not None and len(payloads) != len(ids)):
            raise ColbertAzError(f"{len(ids)} ids, {len(matrices)} embedding matrices and payloads must match")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            engine = fast_plaid_search.FastPlaid(index=str(staging / ENGINE_FOLDER), device=device)
            engine.create(
                documents_embeddings=[torch.from_numpy(m / np.linalg.norm(m, axis=1, keepdims=True)) for m in matrices],
                nbits=nbits,
                kmeans_niters=kmeans_niters,
                seed=seed,
            )
            (staging / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
            (staging / "payloads.json").write_text(
                json.dumps(list(payloads or [{}] * len(ids)), ensure_ascii=False), encoding="utf-8"
            )
            manifest = {
                "format_version": FORMAT_VERSION,
                "model": model.to_dict() if model else None,
                "embedding_size": dimension,
                "settings": {"nbits": nbits, "kmeans_niters": kmeans_niters, "seed": seed},
                "documents": len(ids),
                "files": {name: _sha256(staging / name) for name in ("ids.json", "payloads.json")},
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            if folder.exists():
                old = folder.with_name(f".{folder.name}-old")
                os.replace(folder, old)
                os.replace(staging, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(folder, model=model, device=device, show_progress=show_progress, **search_settings)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __contains__(self, document_id: str) -> bool:
        return document_id in self._positions

    def payload(self, document_id: str) -> dict:
        return self._payloads[self._positions[document_id]]

    def search(self, queries_embeddings, k: int = 10, subset: Sequence[str] | None = None) -> list[list[dict]]:
        """Top ``k`` documents per query in pylate's format; ``subset`` keeps only those ids."""
        queries = _as_matrices(queries_embeddings, "query", self.embedding_size)
        if k < 1:
            raise ColbertAzError(f"k must be at least 1, got {k}")
        allowed = None
        if subset is not None:
            allowed = [self._positions[i] for i in subset if i in self._positions]
            if not allowed:
                return [[] for _ in queries]
        found = self.engine.search(
            queries_embeddings=[torch.from_numpy(q) for q in queries],
            top_k=min(k, len(self.doc_ids)),
            n_ivf_probe=self.n_ivf_probe,
            n_full_scores=self.n_full_scores,
            show_progress=self.show_progress,
            subset=allowed,
        )
        return [[{"id": self.doc_ids[int(i)], "score": float(s)} for i, s in hits] for hits in found]
