"""Exact (brute-force MaxSim) full-corpus retrieval: the quality yardstick for evaluation and indexes.

:func:`exact_run` scores blocks of queries against runs of whole documents with
:func:`colbert_az_pylate.scores.maxsim_top_k`, keeping only each query's running top ``k``: the memory scoring takes
is set by ``block_elements`` and ``query_block``, not by the number of queries. The document vectors are held in
memory, or, given ``cache_dir`` (the CLI's ``--run-dir``), written there by
:func:`colbert_az_pylate.retrieval.encoding.encode_corpus` (float32 shards, atomic, checksummed) and read back one
shard at a time. The cache folder is named after the model's signature and the corpus fingerprint: an interrupted
evaluation resumes at the last finished shard, and a second evaluation of the same model on the same corpus encodes
no document again.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from colbert_az_pylate.errors import DataFormatError, IndexFormatError, InvalidArgumentError, check_count, first_line
from colbert_az_pylate.evaluation.metrics import check_run, ranked_documents
from colbert_az_pylate.scores import maxsim_top_k, merge_top_k

DEFAULT_BLOCK_ELEMENTS = 1 << 22
"""Similarities computed at once by :func:`exact_run` (16 MiB of float32), whatever the number of queries."""
DEFAULT_QUERY_BLOCK = 1024
"""Queries encoded and scored together by :func:`exact_run` (their vectors: 16 MiB at 32 × 128 float32)."""
CACHE_SHARD_SIZE = 1024
"""Documents per shard of a cached encoding: the most a resumed evaluation encodes again."""
ENCODE_CHUNK = 512
"""Texts per ``model.encode`` call: how often the encoding progress bar moves."""
_LONG_ENCODING = 256  # documents: above this the default shows the encoding bar
_LONG_SCORING = 1 << 20  # query-document pairs: above this the default shows the scoring bar


def _float32(vectors) -> np.ndarray:
    if hasattr(vectors, "detach"):  # a torch tensor
        vectors = vectors.detach().float().cpu().numpy()
    return np.asarray(vectors, dtype=np.float32)


def _encode(model, texts: Sequence[str], is_query: bool, batch_size: int, bar=None) -> list[np.ndarray]:
    """``model.encode`` in calls of :data:`ENCODE_CHUNK` texts (moving ``bar``), as float32 matrices."""
    vectors: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = list(texts[start : start + ENCODE_CHUNK])
        vectors += [
            _float32(v) for v in model.encode(chunk, is_query=is_query, batch_size=batch_size, show_progress_bar=False)
        ]
        if bar is not None:
            bar.update(len(chunk))
    return vectors


class _BarEncoder:
    """A pylate model whose document encoding moves our progress bar (``encode_corpus`` calls it once a shard)."""

    def __init__(self, model, batch_size: int, bar) -> None:
        self._model, self._batch_size, self._bar = model, batch_size, bar

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __getitem__(self, index):
        return self._model[index]

    def encode(self, texts, is_query: bool = False, **kwargs):
        return _encode(self._model, texts, is_query, self._batch_size, self._bar)


def cache_refusal(model, corpus: Mapping[str, str]) -> str | None:
    """Why the document encodings of ``corpus`` by ``model`` cannot be cached (``None``: they can).

    The cache is :func:`~colbert_az_pylate.retrieval.encoding.encode_corpus`'s shards, which need a pylate ColBERT
    (its signature names the cache), non-empty texts and ids without the passage mark.

    Parameters
    ----------
    model
        The model :func:`exact_run` is given.
    corpus : Mapping[str, str]
        Document id → text.

    Returns
    -------
    str or None
        One line saying why not, or ``None``.

    Examples
    --------
    >>> cache_refusal(object(), {"d1": "Bakı"})
    'the model is not a pylate ColBERT'
    """
    if not all(hasattr(model, name) for name in ("tokenizer", "document_length", "__getitem__")):
        return "the model is not a pylate ColBERT"
    from colbert_az_pylate.retrieval.passages import PASSAGE_SEPARATOR

    for doc_id, text in corpus.items():
        if not doc_id or PASSAGE_SEPARATOR in doc_id:
            return f"document id {doc_id!r} is empty or holds the passage mark \\x1f"
        if not text.strip():
            return f"document {doc_id!r} is empty or whitespace only"
    return None


def _cache_folder(model, ids: list[str], texts: list[str], cache_dir: Path) -> Path:
    """The cache of these documents by this model: named after its weights' fingerprint and everything else the
    encoding depends on (corpus, exported-encoder precision, shard size, dtype)."""
    from colbert_az_pylate.retrieval import encoding
    from colbert_az_pylate.signature import ModelSignature

    signature = ModelSignature.of_model(model)
    settings = {
        "format": [encoding.FORMAT, encoding.VERSION],
        "model": [signature.embedding_size, signature.fingerprint],
        "encoder": getattr(model[0].auto_model, "quantize", None),
        "corpus": encoding.corpus_fingerprint(ids, texts, [{}] * len(ids)),
        "shard_size": CACHE_SHARD_SIZE,
        "dtype": "float32",
        "passages": False,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{signature.fingerprint}-{digest}"


def _cached_pieces(model, ids, texts, batch_size, cache_dir, show, say) -> Callable[[], Iterator]:
    """Encode (or finish encoding) the documents into the cache; the shards, one memory map at a time."""
    from colbert_az_pylate.retrieval import encoding
    from colbert_az_pylate.retrieval.corpus import Corpus

    folder = _cache_folder(model, ids, texts, Path(cache_dir))
    done = 0
    if not (folder / encoding.MANIFEST).is_file():
        shards = -(-len(ids) // CACHE_SHARD_SIZE)
        finished = [n for n in range(shards) if (folder / f"{encoding.shard_name(n)}.json").is_file()]
        done = sum(min(CACHE_SHARD_SIZE, len(ids) - n * CACHE_SHARD_SIZE) for n in finished)
        if say is not None:
            resumed = f" (resumed: {done} already there)" if done else ""
            say(f"encoding {len(ids)} documents into {folder}{resumed}")
        bar = tqdm(total=len(ids), initial=done, desc="Encoding documents", unit="doc", disable=not show)
        with bar:
            encoding.encode_corpus(
                _BarEncoder(model, batch_size, bar),
                Corpus(ids, texts, []),
                folder,
                shard_size=CACHE_SHARD_SIZE,
                batch_size=batch_size,
                passages=False,
                rank=0,
                world_size=1,
                show_progress_bar=False,
                dtype="float32",
            )
    elif say is not None:
        say(f"reusing the {len(ids)} document encodings in {folder}")
    encoded = encoding.EncodedCorpus.open(folder)
    shards, stored_ids, first = [], [], 0
    for record, vectors in encoded.shards():
        name = encoding.shard_name(record["shard"])
        shards.append((folder / f"{name}.npy", np.asarray(record["offsets"][:-1], np.int64), first))
        stored_ids += record["ids"]
        first += len(record["ids"])
        del vectors
    if stored_ids != ids:
        raise IndexFormatError(f"the cached encoding in {folder} holds other documents; remove the folder")

    def pieces():
        for path, starts, first in shards:
            # copy-on-write: writable for torch.from_numpy (no copy of each block), never written; unmapped once scored
            yield np.load(path, mmap_mode="c", allow_pickle=False), starts, first

    return pieces


def _memory_pieces(model, texts, batch_size, show) -> Callable[[], Iterator]:
    """Encode the documents in memory, packed in runs of :data:`CACHE_SHARD_SIZE` documents."""
    pieces = []
    with tqdm(total=len(texts), desc="Encoding documents", unit="doc", disable=not show) as bar:
        for first in range(0, len(texts), CACHE_SHARD_SIZE):
            vectors = _encode(model, texts[first : first + CACHE_SHARD_SIZE], False, batch_size, bar)
            if any(len(v) == 0 for v in vectors):
                raise DataFormatError("a document encodes to no token vector; give every document some text")
            starts = np.cumsum([0] + [len(v) for v in vectors[:-1]])
            pieces.append((np.concatenate(vectors), starts, first))
    return lambda: iter(pieces)


def _advance(bar, queries: int) -> Callable[[int], None]:
    """``maxsim_top_k``'s progress (documents done) as query-document pairs on ``bar``."""
    return lambda documents: bar.update(documents * queries)


def exact_run(
    model,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    k: int = 10,
    batch_size: int = 32,
    chunk_size: int | None = None,
    show_progress_bar: bool | None = True,
    *,
    cache_dir: str | Path | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    query_block: int = DEFAULT_QUERY_BLOCK,
    say: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Top-``k`` documents of ``corpus`` for every query by exact MaxSim with ``model`` (a pylate ColBERT).

    Documents are encoded once (or read from ``cache_dir``), then queries are encoded ``query_block`` at a time and
    scored against every document by :func:`colbert_az_pylate.scores.maxsim_top_k`, keeping each query's top
    ``k``: memory does not grow with the number of queries.

    Parameters
    ----------
    model
        A ``pylate.models.ColBERT`` (anything with its ``encode``; caching needs a real one).
    queries : Mapping[str, str]
        Query id → text.
    corpus : Mapping[str, str]
        Document id → text.
    k : int, default 10
        Documents kept per query.
    batch_size : int, default 32
        Encoding batch size.
    chunk_size : int, optional
        Deprecated and ignored (scoring is bounded by ``block_elements``); a ``DeprecationWarning`` when given.
    show_progress_bar : bool or None, default True
        Progress bars with an ETA on stderr (encoding documents; encoding queries and scoring); ``None``: only
        for long work.
    cache_dir : str or Path, optional
        Keep the document encodings in a folder under it, named after the model and the corpus; a rerun with the
        same model and corpus reuses them, an interrupted one finishes them. Not used (documents encoded in
        memory) when :func:`cache_refusal` gives a reason, which ``say`` is told.
    block_elements : int, default 2**22
        Query-token × document-token similarities computed at once (float32).
    query_block : int, default 1024
        Queries encoded and scored together.
    say : callable, optional
        Told, one line at a time, where the encodings are cached or why they are not.

    Returns
    -------
    dict[str, dict[str, float]]
        Query id → {document id: MaxSim score}, best first (ties: the document that comes first in ``corpus``).

    Examples
    --------
    >>> import numpy as np
    >>> class OneHotWords:  # a stand-in encoder: MaxSim counts the query words a document holds
    ...     words = ["bakı", "paytaxt", "şəki"]
    ...     def encode(self, texts, is_query, **kwargs):
    ...         eye = np.eye(len(self.words), dtype=np.float32)
    ...         return [np.stack([eye[self.words.index(w)] for w in text.split()]) for text in texts]
    >>> exact_run(OneHotWords(), {"q1": "bakı paytaxt"}, {"d1": "şəki", "d2": "bakı"}, show_progress_bar=False)
    {'q1': {'d2': 1.0, 'd1': 0.0}}
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
    batch_size = check_count(batch_size, "batch_size")
    block_elements = check_count(block_elements, "block_elements")
    query_block = check_count(query_block, "query_block")
    if chunk_size is not None:
        warnings.warn(
            "exact_run's chunk_size is ignored: scoring memory is bounded by block_elements", DeprecationWarning, 2
        )
    if not corpus:
        raise DataFormatError("the corpus is empty; nothing to retrieve from")
    doc_ids, texts = list(corpus), list(corpus.values())
    query_ids = list(queries)
    if not query_ids:
        return {}
    show_encoding = show_progress_bar if show_progress_bar is not None else len(doc_ids) > _LONG_ENCODING
    refusal = cache_refusal(model, corpus) if cache_dir is not None else None
    if refusal is not None and say is not None:
        say(f"document encodings not cached: {refusal}")
    if cache_dir is not None and refusal is None:
        pieces = _cached_pieces(model, doc_ids, texts, batch_size, cache_dir, show_encoding, say)
    else:
        pieces = _memory_pieces(model, texts, batch_size, show_encoding)
    pairs = len(query_ids) * len(doc_ids)
    show_scoring = show_progress_bar if show_progress_bar is not None else pairs > _LONG_SCORING
    run: dict[str, dict[str, float]] = {}
    with tqdm(total=pairs, desc="Scoring", unit="pair", unit_scale=True, disable=not show_scoring) as bar:
        for begin in range(0, len(query_ids), query_block):
            block = query_ids[begin : begin + query_block]
            vectors = _encode(model, [queries[q] for q in block], True, batch_size)
            best_documents = np.zeros((len(block), 0), np.int64)
            best_scores = np.zeros((len(block), 0), np.float32)
            advance = _advance(bar, len(block))
            for documents, starts, first in pieces():
                found, scores = maxsim_top_k(
                    vectors,
                    documents,
                    starts,
                    k,
                    block_elements=block_elements,
                    progress=advance,
                )
                del documents
                best_documents, best_scores = merge_top_k(best_documents, best_scores, found + first, scores, k)
            for query, found, scores in zip(block, best_documents.tolist(), best_scores.tolist(), strict=True):
                run[query] = {doc_ids[j]: float(s) for j, s in zip(found, scores, strict=True)}
    return run


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str) -> None:
    """Save ``run`` in TREC format (``qid Q0 docid rank score tag``), ranked by score.

    Parameters
    ----------
    run : Mapping[str, Mapping[str, float]]
        Query id → {document id: score}.
    path : str or Path
        The file to write (replaced if it exists).
    tag : str
        The run name written in the last column.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_trec_run({"q1": {"d1": 0.5, "d2": 0.9}}, Path(tmp) / "run.trec", "colbert-az")
    ...     print((Path(tmp) / "run.trec").read_text(), end="")
    q1 Q0 d2 1 0.900000 colbert-az
    q1 Q0 d1 2 0.500000 colbert-az
    """
    check_run(run)
    tag = re.sub(r"\s+", "_", tag) or "run"
    try:
        with open(path, "w", encoding="utf-8") as handle:
            for query, scores in run.items():
                for rank, doc in enumerate(ranked_documents(scores, len(scores)), start=1):
                    handle.write(f"{query} Q0 {doc} {rank} {scores[doc]:.6f} {tag}\n")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write the run file {path}: {exc.strerror or first_line(exc)}") from exc


def run_tags(models: Sequence[str]) -> list[str]:
    """A distinct, file-name-safe tag per model, from the end of its path or hub id.

    The last path component when it is unique; otherwise as many trailing components as make it unique
    (``r1/model`` and ``r2/model`` give ``r1-model`` and ``r2-model``), and a number as a last resort.

    Parameters
    ----------
    models : Sequence[str]
        Model folders or hub ids, as given.

    Returns
    -------
    list[str]
        One tag per model, in order, no two alike.

    Examples
    --------
    >>> run_tags(["r1/model", "r2/model", "LocalDoc/colbert-az", "./other"])
    ['r1-model', 'r2-model', 'colbert-az', 'other']
    >>> run_tags(["a/m", "a/m/"])
    ['a-m', 'a-m-2']
    """
    parts = [
        [re.sub(r"[^\w.-]+", "_", part) for part in Path(str(name)).parts if part not in ("/", "\\", ".", "..", "~")]
        or ["run"]
        for name in models
    ]
    depth = [1] * len(parts)
    while True:
        tags = ["-".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        counts = Counter(tags)
        grow = [i for i, tag in enumerate(tags) if counts[tag] > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    unique: list[str] = []
    for tag in tags:
        candidate, number = tag, 1
        while candidate in unique or (candidate != tag and candidate in tags):
            number += 1
            candidate = f"{tag}-{number}"
        unique.append(candidate)
    return unique
