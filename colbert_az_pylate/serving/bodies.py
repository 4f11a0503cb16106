"""The request bodies the endpoints take (pydantic models: unknown fields and loose types are refused)."""

# no `from __future__ import annotations`: pydantic reads the fields' annotations
from types import SimpleNamespace
from typing import Any, Literal

__all__ = ["request_bodies"]


def request_bodies() -> SimpleNamespace:
    """The pydantic request models (built on first use: pydantic is imported only by the server)."""
    from pydantic import BaseModel, ConfigDict, Field  # the [serve] extra: imported by the server only

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    class SearchRequest(Body):
        queries: list[str] = Field(description="query texts")
        k: int = Field(10, description="hits per query")
        exact: bool | None = Field(
            None,
            description="true: exact MaxSim over every document; false: the graph search; null or absent: the "
            "faster of the two for this index (Voyager)",
        )
        group_by: Literal["document", "passage"] = Field("document", description="one hit per document or passage")
        subset: list[str] | None = Field(None, description="only these document ids may be returned")
        mode: Literal["late", "bm25", "bm25+rerank", "fusion"] | None = Field(
            None,
            description="late (MaxSim), bm25, bm25+rerank (BM25's candidates reranked by MaxSim) or fusion; null or "
            "absent: the mode the index was built for",
        )
        candidates: int = Field(100, description="how deep BM25 (and for fusion, MaxSim) ranks before the rerank")

    class Document(Body):
        id: str
        text: str
        metadata: dict[str, Any] = Field(default_factory=dict)

    class AddRequest(Body):
        documents: list[Document]
        upsert: bool = Field(False, description="replace documents whose id is already indexed")

    class DeleteRequest(Body):
        ids: list[str]

    class EmbeddingRequest(Body):
        input: list[str] | str = Field(description="text(s) to encode")
        is_query: bool = True
        model: str | None = Field(None, description="the served model's name (optional; checked when given)")

    class RerankRequest(Body):
        """Cohere's v1 and v2 rerank request and Jina's; the documents' forms are checked by the endpoint (one line
        per problem, not pydantic's list)."""

        query: str = Field(description="the query text")
        documents: list[Any] = Field(description='texts, or objects {"text": ...} (other fields are not ranked)')
        model: str | None = Field(None, description="the served model's name (optional; checked when given)")
        top_n: int | None = Field(None, description="results to return, best first (default: every document)")
        return_documents: bool = Field(False, description='each result carries its document as {"text": ...}')
        rank_fields: list[str] | None = Field(None, description='Cohere v1: only ["text"] is ranked')
        max_chunks_per_doc: int | None = Field(None, description="Cohere v1: ignored (one chunk per document)")
        max_tokens_per_doc: int | None = Field(
            None, description="Cohere v2: ignored (documents are cut at the model's document length)"
        )
        relevant_spans: dict[str, Any] | None = Field(None, description='Cohere v2: only {"mode": "disabled"}')
        priority: int | None = Field(None, description="Cohere v2: ignored (queries go first, then documents)")

    return SimpleNamespace(
        search=SearchRequest, add=AddRequest, delete=DeleteRequest, embedding=EmbeddingRequest, rerank=RerankRequest
    )
