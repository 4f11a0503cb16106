"""A LlamaIndex retriever over colbert-az search and a LlamaIndex reranker (a node postprocessor), in process or
over HTTP (``pip install 'colbert-az-pylate[llamaindex]'``).

Without llama-index-core the module still imports; the retriever and the reranker then raise an ImportError that
names the extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.integrations import asearch_hits, hit_id, search_hits, search_target
from colbert_az_pylate.integrations.http import check_search_arguments
from colbert_az_pylate.integrations.rerank import check_top_n, rerank_scores, rerank_target, settings_error

INSTALL = "pip install 'colbert-az-pylate[llamaindex]'"
BOOKKEEPING = ["passage", "span"]  # node metadata kept out of what the LLM and the embedder see

try:
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, ValidationError
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
except ImportError as _missing:  # the extra is not installed: a stand-in that says how to get it
    _IMPORT_ERROR: ImportError | None = _missing
else:
    _IMPORT_ERROR = None


def to_node(hit: dict, group_by: str = "document") -> NodeWithScore:
    """A hit (``Hit.to_dict()``) as a LlamaIndex ``NodeWithScore``: a ``TextNode`` with the hit's text, its
    metadata plus ``id``, ``passage`` and ``span`` (these win over metadata keys of the same name), the document as
    its source (``ref_doc_id``), and the MaxSim score."""
    node = TextNode(
        id_=hit_id(hit, group_by),
        text=hit.get("text") or "",
        metadata={
            **(hit.get("metadata") or {}),
            "id": hit["id"],
            "passage": hit.get("passage"),
            "span": hit.get("span"),
        },
        excluded_embed_metadata_keys=list(BOOKKEEPING),
        excluded_llm_metadata_keys=list(BOOKKEEPING),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit["id"])},
    )
    return NodeWithScore(node=node, score=float(hit["score"]))


if _IMPORT_ERROR is None:

    class LlamaIndexRetriever(BaseRetriever):
        """A LlamaIndex retriever: colbert-az search as ``NodeWithScore`` objects, best first, in process or over
        HTTP.

        Each node is a ``TextNode`` with the hit's text, its id (the document's id; ``"ID#N"`` for passage ``N``
        with ``group_by="passage"``), the document as its source (``node.ref_doc_id``), and as metadata the
        document's own metadata plus ``id``, ``passage`` and ``span`` (where the text lies in the document; kept
        out of the LLM's and the embedder's view); ``NodeWithScore.score`` is the MaxSim score (higher is
        better). ``aretrieve`` does not block the event loop (``httpx.AsyncClient`` over HTTP, a thread in
        process).

        Parameters
        ----------
        searcher
            A :class:`~colbert_az_pylate.retrieval.Searcher` to search in process (see :meth:`from_index`).
        url
            Or a ``colbert-az serve`` server, e.g. ``"http://127.0.0.1:8000"``; exactly one of the two.
        api_key
            The server's API key, sent as ``Authorization: Bearer KEY`` (HTTP only; default: none).
        timeout
            Seconds to wait for the server (HTTP only; default 30).
        k
            Nodes per query, a whole number >= 1 (default 10).
        exact
            ``True``: brute-force MaxSim over every document; ``False``: the index's graph search; ``None``
            (default): the faster of the two (see :meth:`Searcher.search`).
        group_by
            ``"document"`` (default: one node per document, at its best passage) or ``"passage"``.
        subset
            Only these document ids may be returned (default: all).
        callback_manager
            LlamaIndex's callback manager (default: a new one).
        verbose
            LlamaIndex's verbose flag (default ``False``).

        Examples
        --------
        >>> import tempfile
        >>> from colbert_az_pylate import convert
        >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
        >>> from colbert_az_pylate.retrieval import Searcher
        >>> folder = tempfile.mkdtemp()
        >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
        >>> searcher = Searcher(f"{folder}/model", f"{folder}/index", show_progress_bar=False)
        >>> _ = searcher.index(["Bakı Azərbaycanın paytaxtıdır.", "Şəki xan sarayı"], ids=["baku", "sheki"],
        ...                    metadata=[{"city": "Bakı"}, {"city": "Şəki"}])
        >>> retriever = LlamaIndexRetriever(searcher, k=2)
        >>> nodes = retriever.retrieve("Şəki xan sarayı")
        >>> [(n.node.node_id, n.node.get_content(), n.node.metadata["city"]) for n in nodes]
        [('sheki', 'Şəki xan sarayı', 'Şəki'), ('baku', 'Bakı Azərbaycanın paytaxtıdır.', 'Bakı')]
        >>> nodes[0].score > nodes[1].score
        True
        >>> import shutil; shutil.rmtree(folder)
        """

        def __init__(
            self,
            searcher: Any = None,
            *,
            url: str | None = None,
            api_key: str | None = None,
            timeout: float = 30.0,
            k: int = 10,
            exact: bool | None = None,
            group_by: str = "document",
            subset: Sequence[str] | None = None,
            callback_manager: CallbackManager | None = None,
            verbose: bool = False,
        ) -> None:
            _, self.k, self.subset = check_search_arguments("query", k, exact, group_by, subset)
            self.exact, self.group_by = exact, group_by
            self._target = search_target(searcher, url, api_key, timeout)
            super().__init__(callback_manager=callback_manager, verbose=verbose)

        @classmethod
        def from_index(cls, folder: str | Path, *, model: Any = None, **settings: Any) -> LlamaIndexRetriever:
            """A retriever over an index folder, opened read-only with the model it records (or ``model``).

            Parameters
            ----------
            folder
                An index folder (``colbert-az index --index DIR``).
            model
                The model to encode queries with; default: the one the index records.
            **settings
                The retriever's other settings (``k``, ``exact``, ``group_by``, ``subset``).

            Returns
            -------
            LlamaIndexRetriever
                The retriever, searching in process.
            """
            from colbert_az_pylate.retrieval import Searcher

            return cls(Searcher.open(folder, model=model, show_progress_bar=False), **settings)

        def __repr__(self) -> str:
            return f"LlamaIndexRetriever({self._target!r}, k={self.k}, group_by={self.group_by!r})"

        def _settings(self) -> tuple:
            return self.k, self.exact, self.group_by, self.subset

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = search_hits(self._target, query_bundle.query_str, *self._settings())
            return [to_node(hit, self.group_by) for hit in hits]

        async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = await asearch_hits(self._target, query_bundle.query_str, *self._settings())
            return [to_node(hit, self.group_by) for hit in hits]

else:

    class LlamaIndexRetriever:  # type: ignore[no-redef]
        """Needs llama-index-core: ``pip install 'colbert-az-pylate[llamaindex]'``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(f"LlamaIndexRetriever needs llama-index-core: {INSTALL}") from _IMPORT_ERROR

        @classmethod
        def from_index(cls, *args: Any, **kwargs: Any) -> LlamaIndexRetriever:
            """Needs llama-index-core."""
            return cls()


if _IMPORT_ERROR is None:

    class LlamaIndexReranker(BaseNodePostprocessor):
        """A LlamaIndex reranker (a node postprocessor): the nodes a first stage found, ranked by the model's
        MaxSim for the query, best first, in process or over HTTP (``POST /v1/rerank``).

        Each node comes back as a new ``NodeWithScore`` of the same node whose ``score`` is its MaxSim (higher is
        better); the scores equal :func:`~colbert_az_pylate.retrieval.searcher.rerank`'s. A node's text is its
        ``get_content()`` (without metadata). No nodes: ``[]``, nothing is called. Use it as a query engine's
        ``node_postprocessors=[...]``.

        Parameters
        ----------
        model
            A model folder, a hub id or a loaded pylate ColBERT, to score in process (a folder is loaded once,
            here).
        url
            Or a ``colbert-az serve`` server, e.g. ``"http://127.0.0.1:8000"``; exactly one of the two.
        api_key
            The server's API key, sent as ``Authorization: Bearer KEY`` (HTTP only; default: none).
        timeout
            Seconds to wait for the server (HTTP only; default 30).
        top_n
            Nodes to keep, a whole number >= 1, or ``None`` for all (default 3).
        batch_size
            Encoding batch size (in process only; default: that of :func:`~colbert_az_pylate.retrieval.rerank`).

        Examples
        --------
        >>> import tempfile
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> from colbert_az_pylate import convert
        >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
        >>> folder = tempfile.mkdtemp()
        >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
        >>> reranker = LlamaIndexReranker(model=f"{folder}/model", top_n=1)
        >>> found = [NodeWithScore(node=TextNode(id_="baku", text="Bakı Azərbaycanın paytaxtıdır."), score=0.9),
        ...          NodeWithScore(node=TextNode(id_="sheki", text="Şəki xan sarayı"), score=0.1)]
        >>> [n.node.node_id for n in reranker.postprocess_nodes(found, query_str="Şəki xan sarayı")]
        ['sheki']
        >>> import shutil; shutil.rmtree(folder)
        """

        model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

        model: Any = Field(default=None, exclude=True, repr=False)
        url: Any = None
        api_key: Any = Field(default=None, exclude=True, repr=False)  # never shown
        # checked by our rule after pydantic (one line, the same as the retrievers' and the server's)
        timeout: Any = 30.0
        top_n: Any = 3
        batch_size: Any = None  # rerank's own default (8 texts on a CPU, 32 on an accelerator)

        _target: Any = PrivateAttr(default=None)

        def __init__(self, **settings: Any) -> None:
            try:
                super().__init__(**settings)
            except ValidationError as error:
                raise settings_error(error, "LlamaIndexReranker") from None
            if self.api_key is not None and not isinstance(self.api_key, str):
                raise InvalidArgumentError(f"api_key must be a text, got {type(self.api_key).__name__}")
            self.top_n = check_top_n(self.top_n)
            self._target = rerank_target(self.model, self.url, self.api_key, self.timeout, self.batch_size)

        @classmethod
        def class_name(cls) -> str:
            return "LlamaIndexReranker"

        def _postprocess_nodes(
            self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
        ) -> list[NodeWithScore]:
            if query_bundle is None:
                raise InvalidArgumentError("LlamaIndexReranker needs the query: give query_bundle= or query_str=")
            nodes = list(nodes)
            texts = [node.node.get_content() for node in nodes]
            ranked = rerank_scores(self._target, query_bundle.query_str, texts, self.top_n)
            return [NodeWithScore(node=nodes[index].node, score=score) for index, score in ranked]

else:

    class LlamaIndexReranker:  # type: ignore[no-redef]
        """Needs llama-index-core: ``pip install 'colbert-az-pylate[llamaindex]'``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(f"LlamaIndexReranker needs llama-index-core: {INSTALL}") from _IMPORT_ERROR
