"""Probe texts on which conversion parity is checked: edge cases plus real Azerbaijani questions."""

from __future__ import annotations

import json
import random
from pathlib import Path

AZ_MIRAGE_DATASET = Path("..") / "shared" / "data" / "az-mirage" / "dataset.json"

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


def load_az_mirage_texts(path: Path, limit: int, seed: int = 0) -> list[str]:
    """``limit`` questions and answers sampled with ``seed`` from the AZ-MIRAGE ``dataset.json``."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    rng = random.Random(seed)
    chosen = rng.sample(entries, min(limit, len(entries)))
    texts: list[str] = []
    for entry in chosen:
        texts.append(entry["query"])
        texts.extend(entry.get("answer", [])[:1])
    return texts[:limit]


def probe_texts(dataset: Path | None = None, real_limit: int = 48) -> list[str]:
    """The edge cases plus up to ``real_limit`` real texts from AZ-MIRAGE, when the file is present.

    ``dataset`` defaults to ``../shared/data/az-mirage/dataset.json`` relative to the working directory.
    """
    path = AZ_MIRAGE_DATASET if dataset is None else Path(dataset)
    real = load_az_mirage_texts(path, real_limit) if real_limit and path.is_file() else []
    return [*EDGE_CASES, *real]
