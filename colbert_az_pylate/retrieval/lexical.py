"""BM25 beside late interaction: Azerbaijani-aware words and a lexical index (bm25s) kept in an index folder.

Lexical matching catches what a neural ranker can blur (names, numbers, rare agglutinated forms). Azerbaijani needs
its own casing: ``İ`` lowers to ``i`` and ``I`` to ``ı`` (Python's ``str.lower()`` makes ``İ`` into ``i`` plus a
combining dot and ``I`` into ``i``); the letters ``ə ğ ı ö ş ü ç`` are kept whole (Unicode NFC).

:class:`LexicalIndex` stores entries (ids and payloads, the same entries as the vector index: documents or
passages of them) with bm25s's sparse score matrix. It is written like the vector indexes: each commit writes a new
generation of files and then the manifest, atomically, so a reader sees the old commit or the new one, never half.
It serves twice: as the ``"bm25"`` backend (a folder with no token vectors at all: modes ``bm25`` and
``bm25+rerank``) and as the companion ``bm25/`` sub-folder of a Voyager or PLAID index (mode ``fusion``), written
after each commit of the vector index and refused on open when its entries are not the vector index's.

>>> words("İlham Əliyev İƏİ-nin 2024-cü il hesabatı")
['ilham', 'əliyev', 'iəi', 'nin', '2024', 'cü', 'il', 'hesabatı']
>>> words("ISTANBUL, Iğdır") == ["ıstanbul", "ığdır"]
True
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from colbert_az_pylate.errors import ColbertAzError, IndexFormatError, InvalidArgumentError, first_line
from colbert_az_pylate.files import atomic_path, atomic_write, replace_synced
from colbert_az_pylate.retrieval.folders import LEXICAL_MANIFEST, acquire_writer_lock, release_writer_lock
from colbert_az_pylate.retrieval.passages import count_entries

__all__ = ["LEXICAL_MANIFEST", "NORMALIZATION", "LexicalIndex", "normalize_text", "words"]

COMPANION_FOLDER = "bm25"  # the companion of a vector index, inside its folder
NORMALIZATION = "az-nfc-lower-words-1"  # recorded: an index built with other rules is refused, not misread
FORMAT_VERSION = 1
_WORD = re.compile(r"[^\W_]+")
_GENERATION_FILE = re.compile(r"^\.?bm25-(entries|scores)\.(\d+)(\.jsonl|\.tmp)?$")  # .tmp: a killed commit's


def normalize_text(text: str) -> str:
    """``text`` in NFC, lower-cased by Azerbaijani rules (``İ``→``i``, ``I``→``ı``, then Unicode lower case).

    >>> normalize_text("İNFORMASİYA TEXNOLOGİYALARI")
    'informasiya texnologiyaları'
    >>> normalize_text("I\\u0307lham") == normalize_text("İlham") == "ilham"  # a decomposed İ too
    True
    """
    text = unicodedata.normalize("NFC", text).replace("İ", "i").replace("I", "ı")
    # ``i`` + combining dot above: what another tool's ``str.lower()`` made of ``İ``
    return unicodedata.normalize("NFC", text.lower().replace("i\u0307", "i"))


def words(text: str) -> list[str]:
    """The words BM25 matches: :func:`normalize_text`, split at everything that is not a letter or a digit.

    >>> words("Şəki xan sarayı (1762), Qəbələ!")
    ['şəki', 'xan', 'sarayı', '1762', 'qəbələ']
    """
    return _WORD.findall(normalize_text(text))


def _bm25s():
    """bm25s (the ``bm25`` extra), or one line saying how to install it."""
    try:
        import bm25s  # optional dependency: loaded only by lexical indexes
    except ImportError as exc:
        raise InvalidArgumentError(
            'BM25 (modes bm25, bm25+rerank, fusion) needs bm25s; install it with: pip install "colbert-az-pylate[bm25]"'
        ) from exc
    return bm25s


def _scores_of(texts: Sequence[str], settings: dict):
    """A bm25s index of ``texts`` (one per entry), tokenized by :func:`words` with our own vocabulary."""
    bm25s = _bm25s()
    vocabulary: dict[str, int] = {}
    token_ids = [[vocabulary.setdefault(word, len(vocabulary)) for word in words(text)] for text in texts]
    scorer = bm25s.BM25(**settings)
    scorer.index(bm25s.tokenization.Tokenized(ids=token_ids, vocab=vocabulary), show_progress=False)
    return scorer


def _top_k(scorer, ids: list[str], queries: Sequence[str], k: int, mask=None) -> list[list[dict]]:
    """Each query's ``k`` best entries of ``scorer`` (positive scores only, ties in index order)."""
    if scorer is None or not ids:
        return [[] for _ in queries]
    results = []
    for query in queries:
        tokens = [word for word in words(query) if word in scorer.vocab_dict]
        if not tokens:
            results.append([])
            continue
        scores = np.asarray(scorer.get_scores(tokens), np.float32)
        if mask is not None:
            scores = scores * mask
        matched = np.flatnonzero(scores > 0)
        best = matched[np.lexsort((matched, -scores[matched]))][:k]
        results.append([{"id": ids[i], "score": float(scores[i])} for i in best])
    return results


def bm25_rank(
    corpus: dict[str, str], queries: Sequence[str], k: int, *, k1: float = 1.5, b: float = 0.75
) -> list[list[dict]]:
    """Rank ``corpus`` (id → text) for each query by BM25 in memory, with the rules of :class:`LexicalIndex`
    (what ``colbert-az evaluate --mode bm25`` runs; nothing is written).

    >>> [[entry["id"] for entry in ranking] for ranking in bm25_rank({"a": "Bakı", "b": "Şəki"}, ["ŞƏKİ"], k=2)]
    [['b']]
    """
    ids = list(corpus)
    scorer = _scores_of([corpus[i] for i in ids], {"k1": k1, "b": b, "method": "lucene"}) if ids else None
    return _top_k(scorer, ids, queries, k)


def _text(payload: dict) -> str:
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        raise InvalidArgumentError("a BM25 index needs each entry's text in its payload ({'text': ...})")
    return text


class LexicalIndex:
    """A BM25 index of entries (ids + payloads with their ``text``) in a folder, committed atomically.

    Parameters
    ----------
    folder
        Its folder (created when missing).
    model
        The :class:`~colbert_az_pylate.signature.ModelSignature` recorded for ``Searcher.open`` (which reranks
        with it); ``None`` keeps the one recorded.
    read_only
        Open without the writer lock (to search while another process writes).
    override
        Start afresh; the old index stays readable until the first commit.
    default_mode
        The search mode recorded for ``Searcher.open`` (``"bm25"``, ``"bm25+rerank"`` or ``"fusion"``).
    k1, b, method
        BM25's parameters (bm25s; defaults 1.5, 0.75, ``"lucene"``).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     index = LexicalIndex(folder)
    ...     index.write_entries(["baku", "sheki"], None, [{"text": "Bakı paytaxtdır"}, {"text": "Şəki xan sarayı"}],
    ...                         upsert=False, stale=[])
    ...     [entry["id"] for entry in index.search(["ŞƏKİ sarayı"], k=5)[0]], len(LexicalIndex(folder))
    (['sheki'], 2)
    """

    backend_name: ClassVar[str] = "bm25"
    updatable: ClassVar[bool] = True
    commits: ClassVar[bool] = True
    exact_search_available: ClassVar[bool] = False
    always_exact: ClassVar[bool] = False

    def __init__(
        self,
        folder: str | Path,
        *,
        model=None,
        read_only: bool = False,
        override: bool = False,
        default_mode: str | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
    ) -> None:
        self.folder = Path(folder)
        self.read_only = read_only
        self.settings = {"k1": float(k1), "b": float(b), "method": str(method)}
        self._lock = None  # the writer lock, taken at the first write (readers of a built index never wait)
        self._override = override
        self._batch_depth = 0
        self._dirty = False
        self.entries: dict[str, dict] = {}
        self.generation = 0
        self.model: dict | None = model.to_dict() if model is not None else None
        self.default_mode = default_mode
        self._scorer = None
        self._ids: list[str] = []
        self._positions: tuple[list[str] | None, dict[str, int]] = (None, {})  # self._ids' positions, for subsets
        if not override and (self.folder / LEXICAL_MANIFEST).is_file():
            self._load(model, default_mode)
        elif override and (self.folder / LEXICAL_MANIFEST).is_file():
            self.generation = self._read_manifest()["generation"]  # the next commit replaces it

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read_manifest(self) -> dict:
        path = self.folder / LEXICAL_MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexFormatError(
                f"the BM25 index at {self.folder} has an unreadable {path.name}: {first_line(exc)}"
            ) from exc
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"the BM25 index at {self.folder} has a {path.name} this version cannot read; build it again "
                "(override=True, --override)"
            )
        if manifest.get("normalization") != NORMALIZATION:
            raise IndexFormatError(
                f"the BM25 index at {self.folder} was built with other text rules ({manifest.get('normalization')}, "
                f"this version: {NORMALIZATION}); build it again (override=True, --override)"
            )
        return manifest

    def _load(self, model, default_mode: str | None) -> None:
        manifest = self._read_manifest()
        self.generation = int(manifest["generation"])
        self.settings = dict(manifest.get("bm25") or self.settings)
        recorded_model = manifest.get("model")
        if model is not None and recorded_model is not None and not model.made(recorded_model):
            raise IndexFormatError(
                f"the BM25 index at {self.folder} records the model {recorded_model.get('name')}, not "
                f"{model.name}; open it with that model, or build it again (override=True, --override)"
            )
        self.model = recorded_model if recorded_model is not None else self.model
        self.default_mode = manifest.get("default_mode") or default_mode
        entries: dict[str, dict] = {}
        try:
            with open(self.folder / manifest["entries"], encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    entries[record["id"]] = record["payload"]
            scorer = None
            if manifest["scores"] is not None:  # None: no entries (yet, or any more)
                scorer = _bm25s().BM25.load(
                    self.folder / manifest["scores"], allow_pickle=False, load_vocab=True, show_progress=False
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"the BM25 index at {self.folder} cannot be read: {first_line(exc)}") from exc
        scored = int(scorer.scores["num_docs"]) if scorer is not None else 0
        if not len(entries) == manifest.get("count") == scored:
            raise IndexFormatError(
                f"the BM25 index at {self.folder} is inconsistent ({len(entries)} entries, "
                f"{manifest.get('count')} recorded, {scored} scored); build it again (--override)"
            )
        self.entries, self._ids, self._scorer = entries, list(entries), scorer

    def refresh(self) -> LexicalIndex:
        """Move to the latest commit (a reader in another process than the writer)."""
        if (self.folder / LEXICAL_MANIFEST).is_file() and self.generation != self._read_manifest()["generation"]:
            self._load(None, self.default_mode)
        return self

    def commit_state(self) -> tuple | None:
        """The manifest's inode, mtime and size: it changes with every commit of any process (one ``stat``)."""
        try:
            stat = os.stat(self.folder / LEXICAL_MANIFEST)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.entries

    def payload(self, entry_id: str) -> dict:
        return self.entries[entry_id]

    def passage_count(self) -> int:
        return count_entries(self.entries)[0]

    def document_count(self) -> int:
        return count_entries(self.entries)[1]

    def search(self, queries: Sequence[str], k: int, *, subset: Sequence[str] | None = None) -> list[list[dict]]:
        """Top ``k`` entries per query text by BM25, best first (entries sharing no word with a query are left
        out, so a list may be shorter than ``k``); ``subset``: only these entry ids.

        Returns
        -------
        list[list[dict]]
            ``{"id", "score"}`` per entry, as :meth:`IndexBackend.rank` gives.
        """
        mask = None
        if subset is not None and self._ids:
            if self._positions[0] is not self._ids:  # built once per scored id list (a commit or a reload)
                self._positions = (self._ids, {entry_id: number for number, entry_id in enumerate(self._ids)})
            position = self._positions[1]
            mask = np.zeros(len(self._ids), np.float32)
            mask[[position[e] for e in subset if e in position]] = 1.0
        return _top_k(self._scorer, self._ids, queries, k, mask)

    def rank(
        self, queries_embeddings, k: int, *, exact: bool | None = None, k_token: int = 256, subset=None
    ) -> list[list[dict]]:
        """Refused: a BM25 index holds no token vectors (search it with ``mode="bm25"`` or ``"bm25+rerank"``)."""
        raise InvalidArgumentError(
            f"the index at {self.folder} holds no token vectors (built with mode bm25): search it with mode "
            "'bm25' or 'bm25+rerank'"
        )

    # -- writing ---------------------------------------------------------------------------------------------------

    @classmethod
    def open_for_searcher(
        cls, folder: Path, *, signature, embedding_size: int, override: bool, read_only: bool, show_progress,
        url: str | None, api_key: str | None, settings: dict,
    ) -> LexicalIndex:  # fmt: skip
        """The BM25-only index in ``folder`` (created when missing): the ``"bm25"`` backend of the searcher."""
        if url is not None:
            raise InvalidArgumentError("a BM25 index is a local folder; url= is for Qdrant")
        return cls(folder, model=signature, read_only=read_only, override=override, **settings)

    @classmethod
    def build_for_searcher(cls, folder, ids, vectors, payloads, **kwargs) -> LexicalIndex:
        raise ColbertAzError("a BM25 index is updatable: open it with open_for_searcher")

    def _writable(self) -> None:
        """Refuse writes to a read-only index; take the writer lock at the first write and move to the latest
        commit (another process may have committed since this one read the index)."""
        if self.read_only:
            raise ColbertAzError(f"the BM25 index at {self.folder} was opened read-only; open it to write")
        if self._lock is None:
            self._lock = acquire_writer_lock(self.folder)
            if not self._override and not self._dirty:
                self.refresh()

    def write_entries(self, ids, vectors, payloads, *, upsert: bool, stale) -> None:
        """Add (``upsert``: replace) entries and remove ``stale`` ones; ``vectors`` are not used (may be None)."""
        self._writable()
        for payload in payloads:
            _text(payload)  # every text checked before anything changes
        if not upsert:
            present = [entry_id for entry_id in ids if entry_id in self.entries]
            if present:
                raise InvalidArgumentError(f"{len(present)} ids are already in the BM25 index (e.g. {present[:3]})")
        for entry_id in stale:
            self.entries.pop(entry_id, None)
        for entry_id, payload in zip(ids, payloads, strict=True):
            self.entries[entry_id] = payload
        self._changed()

    def remove_documents(self, documents_ids: Sequence[str]) -> LexicalIndex:
        """Remove entries by id (unknown ids are ignored: the searcher checks them)."""
        self._writable()
        for entry_id in documents_ids:
            self.entries.pop(entry_id, None)
        self._changed()
        return self

    def replace_all(self, ids: Sequence[str], payloads: Sequence[dict]) -> None:
        """Hold exactly these entries, in one commit (the companion of an index built once)."""
        self._writable()
        for payload in payloads:
            _text(payload)
        self.entries = dict(zip(ids, payloads, strict=True))
        self._dirty = True
        self._commit()

    def _changed(self) -> None:
        self._dirty = True
        if self._batch_depth == 0:
            self._commit()

    @contextlib.contextmanager
    def batch(self) -> Iterator[LexicalIndex]:
        """Several writes as one commit (BM25's statistics are computed once, at the end)."""
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self._forget_uncommitted()
            raise
        self._batch_depth -= 1
        if self._batch_depth == 0 and self._dirty:
            self._commit()

    def _forget_uncommitted(self) -> None:
        if self._dirty and (self.folder / LEXICAL_MANIFEST).is_file():
            self._load(None, self.default_mode)
        elif self._dirty:
            self.entries, self._ids, self._scorer = {}, [], None
        self._dirty = False

    def _commit(self) -> None:
        """Write the entries and their BM25 scores as a new generation, then the manifest (the commit), then
        remove the old generation."""
        generation = self.generation + 1
        ids = list(self.entries)
        scorer = _scores_of([_text(self.entries[e]) for e in ids], self.settings) if ids else None
        self.folder.mkdir(parents=True, exist_ok=True)
        entries_name, scores_name = f"bm25-entries.{generation}.jsonl", f"bm25-scores.{generation}"
        with (
            atomic_path(self.folder / entries_name, sync_folder=False) as staged,
            open(staged, "w", encoding="utf-8") as handle,
        ):
            for entry_id in ids:
                record = {"id": entry_id, "payload": self.entries[entry_id]}
                handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        if scorer is not None:
            staging = self.folder / f".{scores_name}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            scorer.save(staging, show_progress=False, allow_pickle=False)
            shutil.rmtree(self.folder / scores_name, ignore_errors=True)
            replace_synced(staging, self.folder / scores_name)
        manifest = {
            "format_version": FORMAT_VERSION,
            "generation": generation,
            "normalization": NORMALIZATION,
            "bm25": self.settings,
            "count": len(ids),
            "entries": entries_name,
            "scores": scores_name if scorer is not None else None,
            "model": self.model,
            "default_mode": self.default_mode,
        }
        atomic_write(self.folder / LEXICAL_MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
        self.generation, self._ids, self._scorer, self._dirty = generation, ids, scorer, False
        self._override = False
        self._remove_old_generations()

    def _remove_old_generations(self) -> None:
        for path in self.folder.iterdir():
            found = _GENERATION_FILE.match(path.name)
            if found and int(found.group(2)) != self.generation:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()

    def close(self) -> None:
        """Give back the writer lock (reads keep working)."""
        if self._lock is not None:
            release_writer_lock(self._lock)
            self._lock = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
