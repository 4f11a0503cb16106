"""Probe texts on which conversion parity is checked: edge cases plus Azerbaijani/English sentences shipped here.

Everything the default check needs lives inside the package (``colbert_az_pylate/data/probes.jsonl``), so
``convert`` and ``verify`` check the same texts wherever they run; real AZ-MIRAGE questions are optional extras.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, first_line

PACKAGED_PROBES = "probes.jsonl"

AZERBAIJANI_LETTERS = "abcçdeəfgğhxıijkqlmnoöprsştuüvyz"
AZERBAIJANI_UPPERCASE = "ABCÇDEƏFGĞHXIİJKQLMNOÖPRSŞTUÜVYZ"

EDGE_CASES: tuple[str, ...] = (
    "a",
    "Ə",
    "?!...",
    "«»—;:()[]{}",
    "1918 2018 3.14 +994 50 123 45 67",
    "Azərbaycan  Respublikası   paytaxt",
    "sətir\tsonu\nyeni sətir\r\nvə  son",
    AZERBAIJANI_LETTERS + " " + AZERBAIJANI_UPPERCASE,
    "Salam 👋 dünya 🌍🇦🇿",
    "sual [Q] cavab [D] son",
    "sual[Q]cavab[D]son",
    "The quick brown fox jumps over the lazy dog.",
    "Azərbaycan mədəniyyətinin tarixi",
    "Azərbaycan mədəniyyəti zəngin tarixə malikdir və qədim dövrlərdən başlayaraq inkişaf edib.",
    "  leading and trailing spaces  ",
    " ".join(["Bakı Azərbaycanın paytaxtı və ən böyük şəhəridir, Xəzər dənizinin sahilində yerləşir."] * 40),
    " ".join(f"söz{i}" for i in range(600)),
)


def packaged_probe_texts() -> list[str]:
    """The Azerbaijani/English probe sentences shipped with the package, plus one text joining them all.

    They cover every Azerbaijani letter, numbers, dates and units, punctuation and quotes, URLs, English and
    mixed text, one-letter texts and paragraphs longer than the 256-token document limit.

    Returns
    -------
    list[str]
        The sentences in file order, then all of them joined into one long text.

    Examples
    --------
    >>> texts = packaged_probe_texts()
    >>> len(texts) >= 40, all(letter in "".join(texts) for letter in "əöüğışçƏÖÜĞİŞÇ")
    (True, True)
    """
    source = resources.files("colbert_az_pylate") / "data" / PACKAGED_PROBES
    texts = [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [*texts, " ".join(texts)]


def load_az_mirage_pairs(path: str | Path, limit: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``limit`` (question, first answer) pairs sampled with ``seed`` from an AZ-MIRAGE ``dataset.json``.

    Parameters
    ----------
    path : str or Path
        The AZ-MIRAGE ``dataset.json`` (a list of entries with ``query`` and ``answer``).
    limit : int
        How many pairs at most; entries without a text answer are skipped.
    seed : int, default 0
        Seed of the sample, so that a run is repeatable.

    Returns
    -------
    list[tuple[str, str]]
        The sampled pairs.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "dataset.json"
    ...     _ = path.write_text(json.dumps([{"query": "Bakı haradadır?", "answer": ["Xəzərin sahilində."]}]))
    ...     load_az_mirage_pairs(path, limit=5)
    [('Bakı haradadır?', 'Xəzərin sahilində.')]
    """
    pairs = []
    for entry in _sample_entries(path, limit, seed, with_answer=True):
        pairs.append((entry["query"], entry["answer"][0]))
    return pairs


def _first_answer(entry: dict) -> str | None:
    answers = entry.get("answer")
    return answers[0] if isinstance(answers, list) and answers and isinstance(answers[0], str) else None


def _sample_entries(path: str | Path, limit: int, seed: int, with_answer: bool = False) -> list[dict]:
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataFormatError(f"cannot read the probe data set {path}: {exc.strerror or first_line(exc)}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path} is not a JSON data set ({first_line(exc)})") from exc
    entries_ok = isinstance(entries, list) and all(
        isinstance(entry, dict) and isinstance(entry.get("query"), str) for entry in entries
    )
    if not entries_ok:
        raise DataFormatError(f"{path} must be a JSON list of AZ-MIRAGE entries, each with a text 'query'")
    if with_answer:
        entries = [entry for entry in entries if _first_answer(entry) is not None]
    return random.Random(seed).sample(entries, min(limit, len(entries)))


def load_az_mirage_texts(path: str | Path, limit: int, seed: int = 0) -> list[str]:
    """Up to ``limit`` questions and answers sampled with ``seed`` from an AZ-MIRAGE ``dataset.json``.

    Parameters
    ----------
    path : str or Path
        The AZ-MIRAGE ``dataset.json`` (a list of entries with ``query`` and ``answer``).
    limit : int
        How many texts at most.
    seed : int, default 0
        Seed of the sample, so that a run is repeatable.

    Returns
    -------
    list[str]
        The sampled texts, each entry's question followed by its first answer.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "dataset.json"
    ...     _ = path.write_text(json.dumps([{"query": "Bakı haradadır?", "answer": ["Xəzərin sahilində."]}]))
    ...     load_az_mirage_texts(path, limit=5)
    ['Bakı haradadır?', 'Xəzərin sahilində.']
    """
    texts: list[str] = []
    for entry in _sample_entries(path, limit, seed):
        texts.append(entry["query"])
        answer = _first_answer(entry)
        if answer is not None:
            texts.append(answer)
    return texts[:limit]


def probe_texts(dataset: str | Path | None = None, real_limit: int = 48) -> list[str]:
    """The probe texts of a parity check: edge cases, the packaged sentences, and optional real texts.

    Parameters
    ----------
    dataset : str or Path, optional
        An AZ-MIRAGE ``dataset.json`` whose questions and answers are added as extra probes; none by default.
        The default set depends on nothing outside the package.
    real_limit : int, default 48
        How many texts of ``dataset`` to add at most.

    Returns
    -------
    list[str]
        :data:`EDGE_CASES`, then :func:`packaged_probe_texts`, then the texts from ``dataset``.

    Examples
    --------
    >>> texts = probe_texts()
    >>> texts[:2], len(texts) == len(EDGE_CASES) + len(packaged_probe_texts())
    (['a', 'Ə'], True)
    """
    if isinstance(real_limit, bool) or not isinstance(real_limit, int) or real_limit < 0:
        raise InvalidArgumentError(f"real_limit must be a non-negative integer, got {real_limit!r}")
    real = load_az_mirage_texts(dataset, real_limit) if dataset is not None and real_limit else []
    return [*EDGE_CASES, *packaged_probe_texts(), *real]
