"""Texts shipped in the package: the demo corpus and its sample queries (the demo, the int8 query graph's
calibration and the examples use them)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_CORPUS = "demo_corpus_az.jsonl"

SAMPLE_QUERIES = (
    "Azərbaycanın paytaxtı hansı şəhərdir?",
    "Leyli və Məcnun operasını kim yazıb?",
    "Azərbaycanın ən yüksək dağ zirvəsi hansıdır?",
    "Qayaüstü təsvirlər harada qorunur?",
    "İşçiyə ildə neçə gün məzuniyyət verilir?",
)


def demo_corpus_path() -> Path:
    """The small Azerbaijani corpus shipped with the package (53 passages written for the demo).

    Returns
    -------
    Path
        A JSONL file with ``id``, ``title`` and ``text`` fields.

    Examples
    --------
    >>> demo_corpus_path().name
    'demo_corpus_az.jsonl'
    """
    return Path(str(resources.files("colbert_az_pylate") / "data" / DEMO_CORPUS))
