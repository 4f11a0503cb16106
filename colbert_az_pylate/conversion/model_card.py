"""The model card section a converted folder carries: how to use it with pylate."""

from __future__ import annotations

from colbert_az_pylate.tokenization import DOCUMENT_LENGTH, QUERY_LENGTH

PYLATE_SECTION_MARKER = "<!-- colbert-az-pylate -->"


def pylate_usage_section(model_id: str, embedding_dim: int, fixes: list[str]) -> str:
    """Markdown that tells a pylate user how to load and search with the converted model."""
    fixed = "\n".join(f"- {fix}" for fix in fixes) or "- nothing: the tokenizer already matched"
    return f"""{PYLATE_SECTION_MARKER}
## Using this model with pylate

This folder loads directly in [pylate](https://github.com/lightonai/pylate) and scores exactly like the
reference code above (checked token by token by `colbert-az verify`): the `[Q]`/`[D]` markers are the trained
tokens, queries are expanded to {QUERY_LENGTH} mask tokens that are attended to, documents are truncated at
{DOCUMENT_LENGTH} tokens, no punctuation is skipped, and `projection.pt` is the `1_Dense` layer
(→ {embedding_dim} dimensions).

```python
from pylate import indexes, models, retrieve

model = models.ColBERT("{model_id}")
queries = model.encode(["Azərbaycan mədəniyyətinin tarixi"], is_query=True)
documents = model.encode(["Azərbaycan mədəniyyəti zəngin tarixə malikdir."], is_query=False)
```

Changes made to the tokenizer by the conversion (the reference code still produces the same ids):
{fixed}
"""


def converted_model_card(original: str | None, model_id: str, embedding_dim: int, fixes: list[str]) -> str:
    """The original card (if any) with the pylate section appended (replacing an earlier one)."""
    body = (original or f"# {model_id}\n").split(PYLATE_SECTION_MARKER)[0].rstrip()
    return f"{body}\n\n{pylate_usage_section(model_id, embedding_dim, fixes)}"
