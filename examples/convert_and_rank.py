"""Convert a colbert-az checkpoint and rank a few Azerbaijani passages with plain pylate.

    python examples/convert_and_rank.py SOURCE [OUTPUT]

SOURCE is LocalDoc/colbert-az (needs the hub) or a local folder in the colbert-az layout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pylate import models, rank

from colbert_az_pylate import convert

PASSAGES = [
    "Bakı Azərbaycanın paytaxtı və ən böyük şəhəridir.",
    "Nizami Gəncəvi XII əsrdə yaşamış böyük Azərbaycan şairidir.",
    "İçərişəhər UNESCO-nun Ümumdünya İrsi siyahısına daxil edilmişdir.",
]


def main(source: str, output: str = "colbert-az-pylate") -> None:
    if not Path(output).exists():
        print(convert(source, output).summary())
    model = models.ColBERT(str(Path(output).resolve()))  # a path, never taken for a hub id
    queries = ["Azərbaycanın paytaxtı hansı şəhərdir?"]
    reranked = rank.rerank(
        documents_ids=[list(range(len(PASSAGES)))],
        queries_embeddings=model.encode(queries, is_query=True),
        documents_embeddings=[model.encode(PASSAGES, is_query=False)],
    )
    for hit in reranked[0]:
        print(f"{hit['score']:8.3f}  {PASSAGES[hit['id']]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
