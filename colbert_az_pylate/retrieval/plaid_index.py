"""``PlaidIndex``: pylate's PLAID engine (fast-plaid) for corpora too large for HNSW over every token.

PLAID clusters the token vectors into centroids and keeps residuals compressed to ``nbits`` per dimension, so
memory and build time grow far more slowly than an HNSW graph over every token; the price is approximate
scores (decompressed residuals) and a build-once index.

Layout of an index folder::

    plaid-manifest.json    the committed build: format, model, settings, and the SHA-256 of every file below
    plaid.<gen>/           one build: ids.json, payloads.json (JSON) and fast_plaid/ (fast-plaid's own files)

A build writes ``plaid.<gen>`` in a temporary folder inside the index folder, renames it into place, then replaces
the manifest in one ``os.replace``: a killed or failed build leaves the previous index as it was, and files in the
folder that are not ours are never touched. The build before the committed one is kept, so a search process that
opened it keeps working; older builds are deleted. Opening checks every file against the manifest (a 50k-document
index is about 0.2 GB of files, hashed in well under a second).

fast-plaid's own update and delete paths read files with ``numpy.load(allow_pickle=True)``; to keep pickle off
every load path, this index is built once and never updated in place: rebuild it (``override=True``) to change
the corpus. Its search path reads plain arrays only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    InvalidArgumentError,
    OutputExistsError,
    check_count,
    first_line,
)
from colbert_az_pylate.files import atomic_write, replace_synced
from colbert_az_pylate.retrieval.folders import BUILDING, acquire_writer_lock, index_backend, release_writer_lock
from colbert_az_pylate.retrieval.folders import PLAID_MANIFEST as MANIFEST
from colbert_az_pylate.retrieval.ids import check_document_ids
from colbert_az_pylate.retrieval.passages import count_entries
from colbert_az_pylate.retrieval.vectors import as_matrices
from colbert_az_pylate.signature import ModelSignature

__all__ = ["MANIFEST", "PlaidIndex"]

FORMAT_VERSION = 2
ENGINE_FOLDER = "fast_plaid"
_ENGINE_LOCK = "plaid.lock"  # fast-plaid's own lock file, created when it opens an index: not part of the build
_BUILD = re.compile(r"^plaid\.(\d+)$")
_STAGING_PREFIX = ".plaid.tmp-"
_VERSION_1_ENTRIES = ("ids.json", "payloads.json", ENGINE_FOLDER)  # format 1 kept them at the top of the folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _layout(manifest: dict) -> tuple[str, str, str]:
    """The engine folder, ids file and payloads file of a manifest, relative to the index folder."""
    if manifest["format_version"] == 1:
        return ENGINE_FOLDER, "ids.json", "payloads.json"
    return manifest["engine"], manifest["ids"], manifest["payloads"]


class PlaidIndex:
    """A build-once PLAID index with string ids, payloads and a model signature.

    Open an index written by :meth:`build`; every file is checked against the SHA-256 its manifest records.

    Parameters
    ----------
    folder
        The index folder.
    model
        When given, the index must have been built by this model (keyword-only, as the settings below).
    n_ivf_probe
        Clusters probed per query token (default 8).
    n_full_scores
        Candidates scored in full per query (default 4096).
    device
        ``"cpu"`` (default) or a CUDA device.
    show_progress
        fast-plaid's progress bars while searching (default off).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((6, 8)).astype("float32") for _ in range(40)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     index = PlaidIndex.build(f"{folder}/plaid", [f"d{i}" for i in range(40)], docs, show_progress=False)
    ...     reopened = PlaidIndex(f"{folder}/plaid")
    ...     index.search([docs[3]], k=1)[0][0]["id"], len(reopened)
    ('d3', 40)
    """

    # the IndexBackend contract (colbert_az_pylate.retrieval.backends): built once, approximate scores only
    backend_name = "plaid"
    updatable, commits, exact_search_available, always_exact = False, False, False, False

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
        self.n_ivf_probe = check_count(n_ivf_probe, "n_ivf_probe")
        self.n_full_scores = check_count(n_full_scores, "n_full_scores")
        self.show_progress = show_progress
        backend = index_backend(self.folder)
        if backend != "plaid":
            what = "a Voyager index (open it with VoyagerIndex)" if backend == "voyager" else "no PLAID index"
            raise IndexFormatError(f"{self.folder} holds {what}; build one with PlaidIndex.build")
        manifest, engine = self._open()
        if model is not None and not model.made(manifest["model"]):
            raise IndexFormatError(
                f"PLAID index at {self.folder} was built with {manifest['model']['name']} (fingerprint "
                f"{manifest['model']['fingerprint']}), not {model.name} ({model.fingerprint}); use that model"
            )
        self.manifest = manifest
        self.model, self.embedding_size = manifest["model"], int(manifest["embedding_size"])
        try:
            self.engine = fast_plaid_search.FastPlaid(index=str(self.folder / engine), device=device)
        except Exception as exc:  # fast-plaid raises what its loaders raise
            raise IndexFormatError(f"fast-plaid cannot load {self.folder / engine}: {first_line(exc)}") from exc

    def _open(self) -> tuple[dict, str]:
        """Read and check the committed build; retried when a rebuild replaces it meanwhile."""
        tried = None
        for attempt in range(20):
            manifest = self._read_manifest()
            try:
                engine, ids_file, payloads_file = _layout(manifest)
                for name, digest in manifest["files"].items():
                    if _sha256(self.folder / name) != digest:
                        raise IndexFormatError(
                            f"{self.folder / name} does not match its checksum (changed since it was built): the "
                            "index cannot be trusted; rebuild it (--override)"
                        )
                ids = json.loads((self.folder / ids_file).read_text(encoding="utf-8"))
                payloads = json.loads((self.folder / payloads_file).read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                if manifest.get("generation") == tried:
                    raise IndexFormatError(
                        f"{exc.filename or 'a file'} is missing: the PLAID index at {self.folder} is damaged; "
                        "rebuild it (--override)"
                    ) from exc
                tried = manifest.get("generation")
                time.sleep(0.01 * attempt)
                continue
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, ColbertAzError):
                    raise
                raise IndexFormatError(
                    f"the PLAID index at {self.folder} is damaged ({type(exc).__name__}: {first_line(exc)}); "
                    "rebuild it (--override)"
                ) from exc
            if not isinstance(ids, list) or not isinstance(payloads, list) or len(ids) != len(payloads):
                raise IndexFormatError(f"the PLAID index at {self.folder} has inconsistent ids; rebuild it")
            self.doc_ids: list[str] = ids
            self._positions = {doc_id: i for i, doc_id in enumerate(ids)}
            self._payloads: list[dict] = payloads
            return manifest, engine
        raise IndexFormatError(f"the PLAID index at {self.folder} kept changing while it was opened; try again")

    def _read_manifest(self) -> dict:
        path = self.folder / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"cannot read {path}: {first_line(exc)}; rebuild the index (--override)") from exc
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexFormatError(f"{self.folder} has index format {version!r}; upgrade colbert-az-pylate")
        return manifest

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
        """Build the index of a whole corpus into ``folder``, atomically, and open it.

        Parameters
        ----------
        folder
            The index folder: missing, empty, or (with ``override=True``) a PLAID index to replace. A folder that
            holds anything else is refused; files in it that are not ours are kept.
        documents_ids
            One unique non-empty string per document.
        documents_embeddings
            One (tokens, dim) matrix per document.
        payloads
            One JSON-serialisable dict per document, returned by :meth:`payload` (default: ``{}`` each).
        model
            The :class:`ModelSignature` to record (checked when the index is opened with a model).
        override
            Replace an existing PLAID index; it stays in place, intact, if the build fails or is killed.
        nbits
            Bits per residual dimension (default 4).
        kmeans_niters
            K-means iterations for the centroids (default 4).
        seed
            Random seed of the clustering (default 42).
        device
            ``"cpu"`` (default) or a CUDA device.
        show_progress
            fast-plaid's progress bars (default on).
        **search_settings
            ``n_ivf_probe``, ``n_full_scores`` of the opened index.

        Returns
        -------
        PlaidIndex
            The new index, opened (see the class example).
        """
        from fast_plaid import search as fast_plaid_search

        folder = Path(folder)
        backend = index_backend(folder)
        if backend == "voyager":
            raise OutputExistsError(
                f"{folder} holds a Voyager index; build the PLAID index in another folder (or delete this one first)"
            )
        if backend == "plaid" and not override:
            raise OutputExistsError(
                f"{folder} holds a PLAID index, which is built once; rebuild it from the whole corpus with "
                "override=True (--override)"
            )
        ids = check_document_ids(documents_ids)
        if isinstance(documents_embeddings, (np.ndarray, torch.Tensor)) and documents_embeddings.ndim == 2:
            documents_embeddings = [documents_embeddings]
        if not isinstance(documents_embeddings, Iterable):
            raise InvalidArgumentError("documents_embeddings must be a list of (tokens, dim) matrices")
        documents_embeddings = list(documents_embeddings)
        dimension = model.embedding_size if model else None
        first = np.asarray(documents_embeddings[0]) if documents_embeddings else None
        dimension = dimension or (int(first.shape[-1]) if first is not None and first.ndim else 0)
        matrices = as_matrices(documents_embeddings, "document", dimension)
        if len(matrices) != len(ids):
            raise InvalidArgumentError(f"{len(ids)} ids but {len(matrices)} embedding matrices")
        payloads = [{} for _ in ids] if payloads is None else payloads
        if isinstance(payloads, (dict, str)) or len(payloads) != len(ids):
            raise InvalidArgumentError(f"payloads must be a list of {len(ids)} dicts, one per document")
        try:
            payloads_json = json.dumps(list(payloads), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"a payload cannot be stored as JSON: {first_line(exc)}") from exc
        settings = {"nbits": nbits, "kmeans_niters": kmeans_niters, "seed": seed}
        lock = acquire_writer_lock(folder)
        try:
            _build_in(folder, fast_plaid_search, ids, matrices, payloads_json, model, dimension, settings, device)
        finally:
            release_writer_lock(lock)
        return cls(folder, model=model, device=device, show_progress=show_progress, **search_settings)

    # ------------------------------------------------------------------------------ the IndexBackend contract
    @classmethod
    def open_for_searcher(
        cls, folder: Path, *, signature, embedding_size: int, override: bool, read_only: bool, show_progress,
        url: str | None, api_key: str | None, settings: dict,
    ) -> PlaidIndex | None:  # fmt: skip
        """The built index in ``folder``, or ``None`` before its build (or when it is to be rebuilt)."""
        if override or not (Path(folder) / MANIFEST).exists():
            return None
        return cls(folder, model=signature, **settings)

    @classmethod
    def build_for_searcher(
        cls, folder: Path, ids, vectors, payloads, *, signature, override: bool, show_progress: bool, settings: dict
    ) -> PlaidIndex:
        """:meth:`build` from a searcher's entries."""
        return cls.build(
            folder, ids, vectors, payloads=payloads, model=signature, override=override, show_progress=show_progress,
            **settings,
        )  # fmt: skip

    def write_entries(self, ids, vectors, payloads, *, upsert: bool, stale) -> None:
        raise ColbertAzError(
            f"the PLAID index at {self.folder} is built once; rebuild it with override=True (--override)"
        )

    def batch(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext(self)

    def remove_documents(self, documents_ids) -> None:
        raise ColbertAzError("PLAID indexes cannot be changed in place; rebuild without those documents")

    def rank(self, queries_embeddings, k: int, *, exact: bool | None = None, k_token: int = 256, subset=None):
        """PLAID's approximate ranking (``exact=True`` is refused: PLAID keeps compressed vectors only)."""
        if exact:
            raise InvalidArgumentError(
                "exact search (--exact) needs the Voyager backend (PLAID keeps compressed vectors only)"
            )
        return self.search(queries_embeddings, k=k, subset=subset)

    def passage_count(self) -> int:
        return count_entries(self._positions)[0]

    def document_count(self) -> int:
        return count_entries(self._positions)[1]

    def commit_state(self) -> None:
        return None

    def refresh(self) -> PlaidIndex:
        return self

    def close(self) -> None:
        """Nothing to release (the index holds no lock once built)."""

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __contains__(self, document_id: str) -> bool:
        return document_id in self._positions

    def payload(self, document_id: str) -> dict:
        """The payload stored with a document.

        Parameters
        ----------
        document_id
            The document's id (an error if it is not in the index).

        Returns
        -------
        dict
            Its payload.
        """
        try:
            return self._payloads[self._positions[document_id]]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"document {document_id!r} is not in the index at {self.folder}") from None

    def search(self, queries_embeddings, k: int = 10, subset: Sequence[str] | None = None) -> list[list[dict]]:
        """Top ``k`` documents per query, by PLAID's approximate MaxSim.

        Parameters
        ----------
        queries_embeddings
            One (tokens, dim) matrix per query.
        k
            Documents per query (default 10).
        subset
            Only these ids may be returned (unknown ids are ignored).

        Returns
        -------
        list[list[dict]]
            pylate's format: per query, ``[{"id": ..., "score": ...}, ...]``, best first.
        """
        k = check_count(k, "k")
        if subset is not None and (isinstance(subset, (str, bytes)) or not isinstance(subset, Iterable)):
            raise InvalidArgumentError("subset must be a list of document ids, not one id; wrap it in a list")
        queries = as_matrices(queries_embeddings, "query", self.embedding_size)
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


def _build_in(folder, fast_plaid_search, ids, matrices, payloads_json, model, dimension, settings, device) -> None:
    """Build into a staging folder inside ``folder``, rename it to ``plaid.<gen>``, then commit the manifest."""
    for child in folder.iterdir():  # we hold the lock: staging folders left here are a killed build's
        if child.name.startswith(_STAGING_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
    previous = None
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    builds = [int(m.group(1)) for c in folder.iterdir() if (m := _BUILD.match(c.name))]
    generation = max([*builds, int((previous or {}).get("generation", 0) or 0)]) + 1
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
    final = folder / f"plaid.{generation}"
    committed = False
    try:
        engine = fast_plaid_search.FastPlaid(index=str(staging / ENGINE_FOLDER), device=device)
        engine.create(
            documents_embeddings=[torch.from_numpy(m / np.linalg.norm(m, axis=1, keepdims=True)) for m in matrices],
            **settings,
        )
        atomic_write(staging / "ids.json", json.dumps(ids, ensure_ascii=False), sync_folder=False)
        atomic_write(staging / "payloads.json", payloads_json, sync_folder=False)
        files = {
            f"{final.name}/{path.relative_to(staging).as_posix()}": _sha256(path)
            for path in sorted(staging.rglob("*"))
            if path.is_file() and path.name != _ENGINE_LOCK
        }
        (staging / BUILDING).touch()  # until the manifest names it, a killed build's leftover, not a lost index
        replace_synced(staging, final)
        manifest = {
            "format_version": FORMAT_VERSION,
            "generation": generation,
            "model": model.to_dict() if model else None,
            "embedding_size": dimension,
            "settings": settings,
            "documents": len(ids),
            "engine": f"{final.name}/{ENGINE_FOLDER}",
            "ids": f"{final.name}/ids.json",
            "payloads": f"{final.name}/payloads.json",
            "files": files,
        }
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1), temporary=folder / f"{MANIFEST}.tmp")
        committed = True
        (final / BUILDING).unlink()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not committed:
            shutil.rmtree(final, ignore_errors=True)
        raise
    # Keep the build just replaced (a search process may have it open); delete older ones.
    keep = {final.name}
    if previous and previous.get("format_version") == 1:
        keep |= set(_VERSION_1_ENTRIES)
    elif previous:
        keep.add(str(previous.get("engine", "")).split("/")[0])
    for child in folder.iterdir():
        if (_BUILD.match(child.name) or child.name in _VERSION_1_ENTRIES) and child.name not in keep:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
