"""Encode once, index anywhere: a corpus encoded into shards of token vectors, on one process or many.

``colbert-az encode MODEL CORPUS --out DIR`` cuts the corpus into shards of ``shard_size`` documents (shard ``i``
holds documents ``i * shard_size`` to ``(i + 1) * shard_size``), turns each document into index entries exactly as
``Searcher.index`` does (:func:`~colbert_az_pylate.retrieval.passages.index_entries`: long documents become
passages) and encodes them. Under ``torchrun``/``accelerate launch`` (``RANK`` and ``WORLD_SIZE`` set) rank ``r``
encodes the shards ``i`` with ``i % WORLD_SIZE == r``; no collective is used, so a rank that dies never hangs the
others. A shard is ``shard-NNNNN.npy`` (float16 token vectors, one row per token; float32 on request) and
``shard-NNNNN.json`` (entry ids, payloads, row offsets and the SHA-256 of the ``.npy``), each written to a temporary
file and renamed: the ``.json`` appears last, so a shard with a ``.json`` whose checksum matches is finished and a
rerun skips it. ``plan.json`` (model signature, corpus fingerprint, settings) is written first; the rank that
finishes the last shard writes ``manifest.json`` (the plan plus every shard's checksum), which makes the folder
complete. Nothing here is pickled: ``np.load(allow_pickle=False)`` and JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colbert_az_pylate.errors import (
    DataFormatError,
    IndexFormatError,
    InvalidArgumentError,
    OutputExistsError,
    check_count,
    first_line,
)
from colbert_az_pylate.files import atomic_write
from colbert_az_pylate.loading import resolve_model
from colbert_az_pylate.retrieval.corpus import check_documents, check_metadata
from colbert_az_pylate.retrieval.passages import DEFAULT_OVERLAP, PASSAGE_SEPARATOR, PassageReport, index_entries
from colbert_az_pylate.retrieval.pooling import pool_document_tokens

__all__ = ["EncodeReport", "EncodedCorpus", "encode_corpus"]

FORMAT = "colbert-az-encoded"
VERSION = 1
PLAN = "plan.json"
MANIFEST = "manifest.json"
_SHARD = re.compile(r"^shard-(\d{5,})\.(npy|json)$")
_PLAN_KEYS = ("format", "version", "corpus", "shard_size", "shards", "passages", "overlap", "pool_factor", "dtype")


def shard_name(number: int) -> str:
    """The file stem of shard ``number`` (``shard-00003``)."""
    return f"shard-{number:05d}"


def encode_document_vectors(
    model, documents: Sequence[str], batch_size: int, pool_factor: int = 1, show_progress_bar: bool = False
) -> list[np.ndarray]:
    """Document token vectors (float32), pooled about ``pool_factor``:1 when ``pool_factor > 1``: how every index
    and ``colbert-az encode`` encode documents."""
    vectors = model.encode(
        list(documents),
        is_query=False,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        convert_to_numpy=True,
    )
    vectors = [np.asarray(v, dtype=np.float32) for v in vectors]
    if pool_factor > 1:
        vectors = [pool_document_tokens(v, pool_factor) for v in vectors]
    return vectors


def corpus_fingerprint(ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict]) -> str:
    """A SHA-256 of the ids, texts and metadata in order: a rerun on another corpus is refused, not mixed in."""
    digest = hashlib.sha256()
    for doc_id, text, meta in zip(ids, texts, metadata, strict=True):
        digest.update(json.dumps([doc_id, text, meta], ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_bytes(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexFormatError(f"{what} {path} cannot be read: {first_line(exc)}") from exc
    if not isinstance(value, dict):
        raise IndexFormatError(f"{what} {path} is not a JSON object")
    return value


@dataclass
class EncodeReport:
    """What one ``encode_corpus`` call (one rank) did.

    Parameters
    ----------
    folder
        The encoded folder.
    shards
        Shards of the whole corpus.
    encoded
        Shards this call encoded.
    skipped
        Shards of this rank found finished (a resumed run) and not encoded again.
    complete
        Whether every shard is finished and ``manifest.json`` written.
    passages
        What splitting did to the documents of the shards this call encoded.

    Examples
    --------
    >>> report = EncodeReport("enc", 4, 1, 1, False, PassageReport(3, 1, 4, 6))
    >>> report.summary()[:60]
    'encoded 1 of 4 shards into enc (1 already finished, skipped)'
    >>> report.to_dict()["complete"]
    False
    """

    folder: str
    shards: int
    encoded: int
    skipped: int
    complete: bool
    passages: PassageReport

    def summary(self) -> str:
        """One line for the command's summary."""
        state = "complete" if self.complete else "not complete yet: other ranks or a rerun finish it"
        return (
            f"encoded {self.encoded} of {self.shards} shards into {self.folder} ({self.skipped} already finished, "
            f"skipped); {self.passages.summary()}; {state}"
        )

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        return {
            "out": self.folder,
            "shards": self.shards,
            "encoded": self.encoded,
            "skipped": self.skipped,
            "complete": self.complete,
            "passages": self.passages.to_dict(),
        }


def _rank_and_world(rank, world_size) -> tuple[int, int]:
    """This process's rank and the number of processes: given, else from torchrun's ``RANK``/``WORLD_SIZE``."""
    try:
        rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    except ValueError as exc:
        raise InvalidArgumentError(f"RANK and WORLD_SIZE must be whole numbers: {first_line(exc)}") from exc
    world_size = check_count(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise InvalidArgumentError(f"rank must be a whole number from 0 to {world_size - 1}, got {rank!r}")
    return rank, world_size


def _check_plan(folder: Path, plan: dict) -> None:
    """Write ``plan.json`` into a new or empty folder; accept an existing one only if it plans the same work."""
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"--out {folder} is a file; name a folder for the shards")
    existing = folder / PLAN
    if existing.exists():
        recorded = _read_json(existing, "the plan")
        from colbert_az_pylate.retrieval.voyager_index import ModelSignature

        signature = ModelSignature(**plan["model"])
        differs = [key for key in (*_PLAN_KEYS, "encoder") if recorded.get(key) != plan.get(key)]
        if not signature.made(recorded.get("model")):
            differs.insert(0, "model")
        if differs:
            raise OutputExistsError(
                f"{folder} holds an encoding with another {', '.join(differs)}; rerun with the same model, corpus "
                "and settings to resume it, or choose an empty --out folder"
            )
        return
    if folder.exists() and any(folder.iterdir()):
        names = [p.name for p in folder.iterdir() if not p.name.startswith(f".{PLAN}.tmp-")]
        if names:
            raise OutputExistsError(
                f"{folder} is not empty and holds no encoding (e.g. {sorted(names)[:3]}); choose an empty --out folder"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot create --out {folder}: {exc.strerror or first_line(exc)}") from exc
    atomic_write(existing, _json_bytes(plan))  # every rank writes the same bytes: no coordination needed


def _finished(folder: Path, number: int) -> dict | None:
    """Shard ``number``'s record when its ``.json`` is readable and its ``.npy`` matches the checksum, else None."""
    stem = folder / shard_name(number)
    try:
        record = json.loads((stem.with_suffix(".json")).read_text(encoding="utf-8"))
        if not (stem.with_suffix(".npy")).exists() or _sha256_file(stem.with_suffix(".npy")) != record["sha256"]:
            return None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    return record


def _encode_shard(model, folder, number, entries, batch_size, pool_factor, show_progress_bar, dtype="float16") -> dict:

    flat = [entry for document in entries for entry in document]
    vectors = encode_document_vectors(model, [text for _, text, _ in flat], batch_size, pool_factor, show_progress_bar)
    offsets = np.cumsum([0] + [len(v) for v in vectors]).tolist()
    matrix = np.concatenate(vectors).astype(dtype)
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    data = buffer.getvalue()
    stem = folder / shard_name(number)
    atomic_write(stem.with_suffix(".npy"), data)
    record = {
        "shard": number,
        "ids": [entry_id for entry_id, _, _ in flat],
        "payloads": [payload for _, _, payload in flat],
        "offsets": offsets,
        "documents": len(entries),
        "embedding_size": int(matrix.shape[1]),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write(stem.with_suffix(".json"), _json_bytes(record))  # last: the shard is finished
    return record


def encode_corpus(
    model,
    corpus,
    out: str | Path,
    *,
    shard_size: int = 10_000,
    batch_size: int = 32,
    passages: bool = True,
    overlap: int = DEFAULT_OVERLAP,
    pool_factor: int = 1,
    rank: int | None = None,
    world_size: int | None = None,
    show_progress_bar: bool | None = None,
    dtype: str = "float16",
) -> EncodeReport:
    """Encode a corpus into shards of token vectors under ``out``, resuming a killed run where it stopped.

    Parameters
    ----------
    model
        A pylate ColBERT, or anything :func:`colbert_az_pylate.load` accepts.
    corpus
        A :class:`~colbert_az_pylate.retrieval.corpus.Corpus` (ids, texts, metadata).
    out
        The folder of shards: new or empty, or a previous run of the same model, corpus and settings (resumed).
    shard_size
        Documents per shard (default 10,000): the unit of work a rank takes and a rerun skips.
    batch_size
        Encoding batch size (default 32).
    passages
        Split documents longer than the model's document length into passages, as ``Searcher.index`` does
        (default); ``False``: one entry per document, truncated.
    overlap
        Tokens a passage shares with the previous one (default 32).
    pool_factor
        Pool each document's token vectors about ``pool_factor``:1 (default 1: none).
    rank, world_size
        This process's rank among ``world_size`` processes; default: torchrun's ``RANK``/``WORLD_SIZE``, else 0 of 1.
    show_progress_bar
        Progress bars while encoding (default: on long work only).
    dtype
        How the token vectors are stored: ``"float16"`` (default; half the disk) or ``"float32"`` (the vectors
        exactly as the model made them, for exact evaluation). Recorded in the plan: the two never mix.

    Returns
    -------
    EncodeReport
        Shards encoded and skipped by this call, and whether the folder is complete.

    Examples
    --------
    >>> import tempfile
    >>> from colbert_az_pylate import convert
    >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
    >>> from colbert_az_pylate.retrieval.corpus import Corpus
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
    >>> corpus = Corpus(["a", "b", "c"], ["Bakı", "Gəncə", "Şəki"], [{}, {}, {}])
    >>> encode_corpus(f"{folder}/model", corpus, f"{folder}/enc", shard_size=2).to_dict()["shards"]
    2
    >>> encode_corpus(f"{folder}/model", corpus, f"{folder}/enc", shard_size=2).skipped  # a rerun skips both
    2
    >>> len(EncodedCorpus.open(f"{folder}/enc"))
    3
    >>> import shutil; shutil.rmtree(folder)
    """
    from colbert_az_pylate.retrieval.ids import check_document_ids
    from colbert_az_pylate.retrieval.voyager_index import ModelSignature

    shard_size = check_count(shard_size, "shard_size")
    batch_size = check_count(batch_size, "batch_size")
    pool_factor = check_count(pool_factor, "pool_factor")
    if dtype not in ("float16", "float32"):
        raise InvalidArgumentError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    rank, world_size = _rank_and_world(rank, world_size)
    texts = check_documents(corpus.texts)
    ids = check_document_ids(corpus.ids, len(texts))
    marked = next((doc_id for doc_id in ids if PASSAGE_SEPARATOR in doc_id), None)
    if marked is not None:
        raise InvalidArgumentError(f"document id {marked!r} contains the character \\x1f, which marks passages")
    metadata = check_metadata(corpus.metadata or None, ids) or [{}] * len(texts)
    model, name = resolve_model(model)
    signature = ModelSignature.of_model(model, name)
    folder = Path(out)
    count = -(-len(texts) // shard_size)
    plan = {
        "format": FORMAT,
        "version": VERSION,
        "model": signature.to_dict(),
        "corpus": {"fingerprint": corpus_fingerprint(ids, texts, metadata), "documents": len(texts)},
        "shard_size": shard_size,
        "shards": count,
        "passages": bool(passages),
        "overlap": int(overlap),
        "pool_factor": pool_factor,
        "dtype": dtype,
    }
    quantized = getattr(model[0].auto_model, "quantize", None)  # float32 graphs equal torch within float16 storage
    if quantized:
        plan["encoder"] = quantized  # int8/bf16 shards never mix with float32 ones in one encoding
    _check_plan(folder, plan)
    report, encoded, skipped = PassageReport(), 0, 0
    for number in range(rank, count, world_size):
        if _finished(folder, number) is not None:
            skipped += 1
            continue
        start, end = number * shard_size, min((number + 1) * shard_size, len(texts))
        entries, _ = index_entries(
            texts[start:end], ids[start:end], metadata[start:end], model.tokenizer, int(model.document_length),
            passages, overlap,
        )  # fmt: skip
        progress = show_progress_bar if show_progress_bar is not None else end - start > 256
        _encode_shard(model, folder, number, entries, batch_size, pool_factor, progress, dtype)
        for entry_count in (len(document) for document in entries):
            report.add(entry_count)
        encoded += 1
    complete = _write_manifest_when_complete(folder, plan)
    return EncodeReport(str(folder), count, encoded, skipped, complete, report)


def _write_manifest_when_complete(folder: Path, plan: dict) -> bool:
    """The manifest, once every shard is finished (by whichever rank finishes last; the same bytes from any)."""
    records = []
    for number in range(plan["shards"]):
        record = _finished(folder, number)
        if record is None:
            return False
        records.append(record)
    shards = [
        {
            "name": shard_name(record["shard"]),
            "entries": len(record["ids"]),
            "documents": record["documents"],
            "bytes": record["bytes"],
            "sha256": record["sha256"],
        }
        for record in records
    ]
    atomic_write(folder / MANIFEST, _json_bytes({**plan, "shard_list": shards}))
    return True


class EncodedCorpus:
    """A complete folder written by :func:`encode_corpus`, checked shard by shard when opened.

    Parameters
    ----------
    folder
        The folder.
    manifest
        Its manifest (use :meth:`open`, which checks it).

    Examples
    --------
    >>> EncodedCorpus.open("no-such-folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: no-such-folder is not an encoded folder; write one with ...
    """

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder, self.manifest = folder, manifest
        self.model: dict = manifest["model"]

    def __len__(self) -> int:
        """Number of documents."""
        return int(self.manifest["corpus"]["documents"])

    @classmethod
    def open(cls, folder: str | Path) -> EncodedCorpus:
        """Open ``folder``, refusing (one line) an unfinished encoding and a missing, changed or extra shard."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            if (folder / PLAN).is_file():
                plan = _read_json(folder / PLAN, "the plan")
                shards = int(plan.get("shards", 0))
                done = sum(1 for n in range(shards) if _finished(folder, n) is not None)
                if done == shards:  # stopped between its last shard and the manifest
                    raise IndexFormatError(
                        f"every shard in {folder} is written but its manifest is not; rerun `colbert-az encode` "
                        "with the same arguments to write it (nothing is encoded again)"
                    )
                raise IndexFormatError(
                    f"the encoding in {folder} is unfinished ({done} of {shards} shards); rerun "
                    "`colbert-az encode` with the same arguments to finish it"
                )
            raise InvalidArgumentError(
                f"{folder} is not an encoded folder; write one with `colbert-az encode MODEL CORPUS --out DIR`"
            )
        manifest = _read_json(folder / MANIFEST, "the manifest")
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise IndexFormatError(
                f"{folder / MANIFEST} is not a colbert-az encoding of version {VERSION} "
                f"(format {manifest.get('format')!r}, version {manifest.get('version')!r})"
            )
        try:
            listed = {shard["name"]: shard for shard in manifest["shard_list"]}
            int(manifest["model"]["embedding_size"]) + int(manifest["corpus"]["documents"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{folder / MANIFEST} is incomplete: {first_line(exc)} is missing") from exc
        for path in sorted(folder.iterdir()):
            match = _SHARD.match(path.name)
            if match and path.name.rsplit(".", 1)[0] not in listed:
                raise IndexFormatError(
                    f"{folder} holds {path.name}, which its manifest does not list (another encoding's shard?); "
                    "remove it, or re-encode into an empty folder"
                )
        for name, shard in listed.items():
            for suffix in (".npy", ".json"):
                if not (folder / f"{name}{suffix}").is_file():
                    raise IndexFormatError(
                        f"shard {name}{suffix} is missing from {folder}; rerun `colbert-az encode` with the same "
                        "arguments to write it again"
                    )
            if _sha256_file(folder / f"{name}.npy") != shard["sha256"]:
                raise IndexFormatError(
                    f"shard {name}.npy in {folder} is truncated or changed (its SHA-256 differs from the "
                    "manifest's); rerun `colbert-az encode` with the same arguments to write it again"
                )
        return cls(folder, manifest)

    def shards(self):
        """Per shard, ``(records, vectors)``: its entry ids, payloads and offsets, and its token matrix (float16, or
        float32 when encoded so)."""
        size = int(self.model["embedding_size"])
        for shard in self.manifest["shard_list"]:
            name = shard["name"]
            record = _read_json(self.folder / f"{name}.json", "the shard record")
            try:
                vectors = np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                ids, payloads, offsets = record["ids"], record["payloads"], record["offsets"]
            except (OSError, ValueError, KeyError) as exc:
                raise IndexFormatError(f"shard {name} in {self.folder} cannot be read: {first_line(exc)}") from exc
            if (
                vectors.ndim != 2
                or vectors.shape[1] != size
                or len(ids) != len(payloads)
                or len(offsets) != len(ids) + 1
                or offsets[-1] != vectors.shape[0]
                or record.get("sha256") != shard["sha256"]
            ):
                raise IndexFormatError(
                    f"shard {name} in {self.folder} does not match its record (ids, offsets, dimension {size}); "
                    "re-encode into an empty folder"
                )
            yield record, vectors

    def entries_and_vectors(self) -> tuple[list[list[tuple[str, str, dict]]], dict[str, np.ndarray]]:
        """Per document its entries ``(id, text, payload)``, as :func:`index_entries` made them, and each
        entry's token vectors (as stored, read lazily from the shards)."""
        documents: list[list[tuple[str, str, dict]]] = []
        vectors: dict[str, np.ndarray] = {}
        for record, matrix in self.shards():
            offsets = record["offsets"]
            for position, (entry_id, payload) in enumerate(zip(record["ids"], record["payloads"], strict=True)):
                if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
                    raise DataFormatError(f"entry {entry_id!r} of {self.folder} has no text in its payload")
                vectors[entry_id] = matrix[offsets[position] : offsets[position + 1]]
                entry = (entry_id, payload["text"], payload)
                if payload.get("passage", 0) == 0:
                    documents.append([entry])
                else:
                    documents[-1].append(entry)
        return documents, vectors
