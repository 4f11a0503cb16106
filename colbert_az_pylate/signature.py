"""A model's signature: what produced a set of vectors, recorded by indexes, encodings and exported graphs.

The fingerprint (signature version 2) hashes everything that changes the vectors of a pylate ColBERT:

- every tensor of the transformer's ``state_dict`` (embeddings, every layer, norms; by name, shape and raw bytes),
- every tensor of the modules after it (the projection ``Dense``),
- the tokenizer (its vocabulary, special tokens and normalizer),
- the settings: [Q]/[D] markers, query and document lengths, query expansion, skiplist and output dimension.

Tensors are hashed by their bytes (SHA-256, which CPUs with SHA extensions run at ~1.5 GB/s), floating tensors as
float32 so a checkpoint stored in bfloat16 and loaded in float32 keeps its signature. Same weights, same
fingerprint, wherever the folder lies and whichever encoder (torch, ONNX, OpenVINO) runs them.

Records written before version 2 (``signature_version`` absent) hashed only the input embeddings, the projection
and the markers and lengths. They are handled by what they cost to redo:

- an **index or a finished encoding** (hours of encoding to rebuild) with a version-1 record is still accepted
  when its fingerprint matches the model's version-1 fingerprint, with a one-line warning that the transformer
  layers were not recorded and that rebuilding it records them; a version-1 fingerprint that differs is refused, as
  before (and an unfinished version-1 encoding is not resumed: its plan names another model);
- an **exported graph** (``encoders/export.json``, a minute to redo) with a version-1 record is refused by
  ``load(..., encoder=...)`` with one line telling to export again; ``colbert-az export`` replaces it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

SIGNATURE_VERSION = 2

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # version-1 fingerprints already warned about in this process


@dataclass(frozen=True)
class BackboneDigest:
    """The hashes of a transformer backbone a signature needs, kept by an exported backbone (its torch weights are
    gone once the graph runs).

    Parameters
    ----------
    weights : str
        The SHA-256 of every tensor of the backbone's ``state_dict`` (:func:`weights_digest`).
    embeddings : hashlib object
        The running SHA-256 of its input embeddings, as the version-1 fingerprint starts it.
    """

    weights: str
    embeddings: object = field(repr=False)


def _tensor_bytes(tensor) -> memoryview:
    tensor = tensor.detach()
    if tensor.is_floating_point():
        tensor = tensor.float()  # a no-op for float32; bfloat16 has no numpy type
    return memoryview(tensor.cpu().contiguous().numpy()).cast("B")


def weights_digest(module) -> str:
    """The SHA-256 of every tensor of ``module.state_dict()``: its name, dtype class, shape and raw bytes, in the
    state dict's order (fixed by the architecture).

    Parameters
    ----------
    module : torch.nn.Module
        A transformer backbone or a projection.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> before = weights_digest(layer)
    >>> with torch.no_grad():
    ...     layer.weight[0, 0] += 1
    >>> before == weights_digest(layer), len(before)
    (False, 64)
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        kind = "float" if tensor.is_floating_point() else str(tensor.dtype)
        digest.update(f"{name}|{kind}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def backbone_digest(backbone) -> BackboneDigest:
    """The :class:`BackboneDigest` of a torch transformer backbone (``model[0].auto_model``)."""
    embeddings = hashlib.sha256()
    for tensor in backbone.get_input_embeddings().state_dict().values():
        embeddings.update(_tensor_bytes(tensor))
    return BackboneDigest(weights_digest(backbone), embeddings)


def tokenizer_digest(tokenizer) -> str:
    """The SHA-256 of what a tokenizer turns text into: its vocabulary (with added tokens), its special tokens and,
    for a fast tokenizer, its normalizer and pre-tokenizer.

    Examples
    --------
    >>> class Words:
    ...     def get_vocab(self): return {"bakı": 0, "şəki": 1}
    >>> len(tokenizer_digest(Words()))
    64
    """
    state = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),
        "special": sorted((str(k), str(v)) for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()),
        "lowercase": getattr(tokenizer, "do_lower_case", None),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # truncation and padding, which sentence-transformers changes per call, are left out
        pipeline = json.loads(backend.to_str())
        state["pipeline"] = {key: pipeline.get(key) for key in ("normalizer", "pre_tokenizer")}
    return hashlib.sha256(json.dumps(state, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def model_settings(model) -> dict:
    """The encoding settings of a pylate ColBERT that change its vectors.

    Examples
    --------
    >>> class Model:
    ...     query_prefix, document_prefix, query_length, document_length = "[Q] ", "[D] ", 32, 256
    >>> model_settings(Model())["query_length"]
    32
    """
    skiplist = getattr(model, "skiplist_words", None)
    return {
        "query_prefix": model.query_prefix,
        "document_prefix": model.document_prefix,
        "query_length": model.query_length,
        "document_length": model.document_length,
        "do_query_expansion": getattr(model, "do_query_expansion", None),
        "attend_to_expansion_tokens": getattr(model, "attend_to_expansion_tokens", None),
        "skiplist_words": sorted(skiplist) if skiplist is not None else None,
        "truncate_dim": getattr(model, "truncate_dim", None),
    }


@dataclass(frozen=True)
class ModelSignature:
    """What produced the vectors of an index: a name, the dimension and a fingerprint of the weights.

    Parameters
    ----------
    name
        The model's name or path, as recorded in the index (``Searcher.open`` loads it from there).
    embedding_size
        The dimension of its token vectors.
    fingerprint
        A hash of every weight, the tokenizer and the encoding settings (:meth:`of_model`).
    signature_version
        How ``fingerprint`` was computed: 2 (every weight) or 1 (records written before: the input embeddings, the
        projection and the settings only).
    legacy_fingerprint
        This model's version-1 fingerprint, to check records written before version 2 (not recorded).

    Examples
    --------
    >>> ModelSignature("colbert-az", 128, "ab12").to_dict()
    {'name': 'colbert-az', 'embedding_size': 128, 'fingerprint': 'ab12', 'signature_version': 2}
    """

    name: str
    embedding_size: int
    fingerprint: str
    signature_version: int = SIGNATURE_VERSION
    legacy_fingerprint: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The signature as the JSON object the manifest records."""
        return {
            "name": self.name,
            "embedding_size": self.embedding_size,
            "fingerprint": self.fingerprint,
            "signature_version": self.signature_version,
        }

    def made(self, recorded: dict | None) -> bool:
        """Whether this model made the vectors of an index that records ``recorded`` (``None``: no record).

        The same weights and settings make the same vectors wherever the folder lies: the name (a path, which a
        copy or a move changes) is informative only; dimension and fingerprint decide. A version-1 record (no
        ``signature_version``) is checked against this model's version-1 fingerprint and, when it matches,
        accepted with a one-line warning: it never recorded the transformer layers.

        Examples
        --------
        >>> moved = {"name": "/new/place", "embedding_size": 128, "fingerprint": "ab12", "signature_version": 2}
        >>> ModelSignature("/old/place", 128, "ab12").made(moved)
        True
        >>> ModelSignature("m", 128, "ab12").made({**moved, "fingerprint": "cd34"})
        False
        >>> old = {"embedding_size": 128, "fingerprint": "ef56"}  # version 1: checked against the legacy fingerprint
        >>> ModelSignature("m", 128, "ab12", legacy_fingerprint="0000").made(old)
        False
        """
        if recorded is None:
            return True
        if recorded.get("embedding_size") != self.embedding_size:
            return False
        version = recorded.get("signature_version", 1)
        if version == self.signature_version:
            return recorded.get("fingerprint") == self.fingerprint
        if version != 1 or self.legacy_fingerprint is None or recorded.get("fingerprint") != self.legacy_fingerprint:
            return False
        if self.legacy_fingerprint not in _WARNED:
            _WARNED.add(self.legacy_fingerprint)
            log.warning(
                "warning: vectors recorded as made by %s carry a version-1 signature, which covers the embeddings "
                "and projection but not the transformer layers; accepted, rebuild them to have every weight checked",
                recorded.get("name", "this model"),
            )
        return True

    @classmethod
    def of_model(cls, model, name: str | None = None, backbone: BackboneDigest | None = None) -> ModelSignature:
        """The signature of a pylate ColBERT: its output dimension and a hash of every weight, the tokenizer and the
        encoding settings.

        Parameters
        ----------
        model
            A pylate ``models.ColBERT`` (its transformer may be an exported backbone that keeps its digest).
        name
            The name to record (default: the backbone's ``name_or_path``).
        backbone
            The :func:`backbone_digest` of its transformer when already computed (default: the exported
            backbone's own, or hashed now).

        Returns
        -------
        ModelSignature
            The signature.
        """
        transformer = model[0].auto_model
        if backbone is None:
            backbone = getattr(transformer, "signature_digest", None) or backbone_digest(transformer)
        dimension = int(model[-1].get_sentence_embedding_dimension())
        digest = hashlib.sha256(f"colbert-az signature {SIGNATURE_VERSION}|{backbone.weights}|".encode())
        for index, module in enumerate(list(model)[1:], start=1):
            digest.update(f"module {index} {type(module).__name__}|{weights_digest(module)}|".encode())
        digest.update(f"tokenizer|{tokenizer_digest(model.tokenizer)}|".encode())
        settings = {**model_settings(model), "dimension": dimension}
        digest.update(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode())
        name = name or str(transformer.config.name_or_path or "unnamed model")
        return cls(name, dimension, digest.hexdigest()[:32], SIGNATURE_VERSION, _legacy_fingerprint(model, backbone))


def _legacy_fingerprint(model, backbone: BackboneDigest) -> str:
    """The version-1 fingerprint: input embeddings, the last module and four settings (to read old records)."""
    digest = backbone.embeddings.copy()
    for tensor in model[-1].state_dict().values():
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    settings = (model.query_prefix, model.document_prefix, model.query_length, model.document_length)
    digest.update(repr(settings).encode())
    return digest.hexdigest()[:16]
