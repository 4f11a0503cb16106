"""A LangChain retriever over colbert-az search and a LangChain reranker (a document compressor), in process or
over HTTP (``pip install 'colbert-az-pylate[langchain]'``).

Without langchain-core the module still imports; the retriever and the reranker then raise an ImportError that
names the extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

from colbert_az_pylate.integrations import asearch_hits, hit_id, search_hits, search_target
from colbert_az_pylate.integrations.http import check_search_arguments, check_timeout
from colbert_az_pylate.integrations.rerank import check_top_n, rerank_scores, rerank_target, settings_error

INSTALL = "pip install 'colbert-az-pylate[langchain]'"

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun, Callbacks
    from langchain_core.documents import Document
    from langchain_core.documents.compressor import BaseDocumentCompressor
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError
except ImportError as _missing:  # the extra is not installed: a stand-in that says how to get it
    _IMPORT_ERROR: ImportError | None = _missing
else:
    _IMPORT_ERROR = None


def to_document(hit: dict, group_by: str = "document") -> Document:
    """A hit (``Hit.to_dict()``) as a LangChain ``Document``: its text, and its metadata plus ``id``, ``score``,
    ``passage`` and ``span`` (these four win over metadata keys of the same name)."""
    metadata = {
        **(hit.get("metadata") or {}),
        "id": hit["id"],
        "score": float(hit["score"]),
        "passage": hit.get("passage"),
        "span": hit.get("span"),
    }
    return Document(page_content=hit.get("text") or "", metadata=metadata, id=hit_id(hit, group_by))


if _IMPORT_ERROR is None:

    class LangChainRetriever(BaseRetriever):
        """A LangChain retriever: colbert-az search as ``Document`` objects, best first, in process or over HTTP.

        Each ``Document`` carries the hit's text as ``page_content``, its ``id`` (``"ID#N"`` for passage ``N``
        with ``group_by="passage"``), and as ``metadata`` the document's own metadata plus ``id`` (the document's
        id), ``score`` (MaxSim, higher is better), ``passage`` and ``span`` (where the text lies in the document).
        ``invoke(query, k=..., exact=..., group_by=..., subset=...)`` overrides a setting for one call;
        ``ainvoke`` does not block the event loop (``httpx.AsyncClient`` over HTTP, a thread in process).

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
            Documents per query, a whole number >= 1 (default 10).
        exact
            ``True``: brute-force MaxSim over every document; ``False``: the index's graph search; ``None``
            (default): the faster of the two (see :meth:`Searcher.search`).
        group_by
            ``"document"`` (default: one hit per document, at its best passage) or ``"passage"``.
        subset
            Only these document ids may be returned (default: all).

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
        >>> retriever = LangChainRetriever(searcher=searcher, k=2)
        >>> documents = retriever.invoke("Şəki xan sarayı")
        >>> documents[0].page_content, documents[0].metadata["id"], documents[0].metadata["city"]
        ('Şəki xan sarayı', 'sheki', 'Şəki')
        >>> [document.id for document in retriever.invoke("Şəki xan sarayı", k=1)]
        ['sheki']
        >>> import shutil; shutil.rmtree(folder)
        """

        model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

        searcher: Any = Field(default=None, exclude=True)
        url: str | None = None
        api_key: SecretStr | None = None
        # checked by our rule after pydantic (one line, the same as the searcher's and the server's)
        timeout: Any = 30.0
        k: Any = 10
        exact: Any = None
        group_by: Any = "document"
        subset: Any = None

        _target: Any = PrivateAttr(default=None)

        def __init__(self, **settings: Any) -> None:
            try:
                super().__init__(**settings)
            except ValidationError as error:
                raise settings_error(error, "LangChainRetriever") from None
            # after pydantic, not in a validator: pydantic would wrap our one-line error in a ValidationError
            # whose text shows every argument given, the API key included
            _, self.k, self.subset = check_search_arguments("query", self.k, self.exact, self.group_by, self.subset)
            self.timeout = check_timeout(self.timeout)
            self._open_target()

        def _open_target(self) -> Any:
            key = self.api_key.get_secret_value() if self.api_key is not None else None
            self._target = search_target(self.searcher, self.url, key, self.timeout)
            return self._target

        @classmethod
        def from_index(cls, folder: str | Path, *, model: Any = None, **settings: Any) -> LangChainRetriever:
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
            LangChainRetriever
                The retriever, searching in process.
            """
            from colbert_az_pylate.retrieval import Searcher

            return cls(searcher=Searcher.open(folder, model=model, show_progress_bar=False), **settings)

        def _settings(self, k: Any, exact: Any, group_by: Any, subset: Any) -> tuple:
            """This call's settings: the retriever's, where the call gives none."""
            return (
                self.k if k is None else k,
                self.exact if exact is None else exact,
                self.group_by if group_by is None else group_by,
                self.subset if subset is None else subset,
            )

        def _get_relevant_documents(
            self,
            query: str,
            *,
            run_manager: CallbackManagerForRetrieverRun,
            k: int | None = None,
            exact: bool | None = None,
            group_by: str | None = None,
            subset: list[str] | None = None,
        ) -> list[Document]:
            settings = self._settings(k, exact, group_by, subset)
            target = self._target or self._open_target()  # model_validate() and the like skip __init__
            return [to_document(hit, settings[2]) for hit in search_hits(target, query, *settings)]

        async def _aget_relevant_documents(
            self,
            query: str,
            *,
            run_manager: AsyncCallbackManagerForRetrieverRun,
            k: int | None = None,
            exact: bool | None = None,
            group_by: str | None = None,
            subset: list[str] | None = None,
        ) -> list[Document]:
            settings = self._settings(k, exact, group_by, subset)
            target = self._target or self._open_target()
            return [to_document(hit, settings[2]) for hit in await asearch_hits(target, query, *settings)]

else:

    class LangChainRetriever:  # type: ignore[no-redef]
        """Needs langchain-core: ``pip install 'colbert-az-pylate[langchain]'``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(f"LangChainRetriever needs langchain-core: {INSTALL}") from _IMPORT_ERROR

        @classmethod
        def from_index(cls, *args: Any, **kwargs: Any) -> LangChainRetriever:
            """Needs langchain-core."""
            return cls()


if _IMPORT_ERROR is None:

    class LangChainReranker(BaseDocumentCompressor):
        """A LangChain reranker (a ``BaseDocumentCompressor``): the documents a first stage found, ranked by the
        model's MaxSim for the query, best first, in process or over HTTP (``POST /v1/rerank``).

        Each document comes back as a copy with ``relevance_score`` (MaxSim, higher is better) added to its
        metadata, as LangChain's Cohere reranker does; the scores equal
        :func:`~colbert_az_pylate.retrieval.searcher.rerank`'s. No documents: ``[]``, nothing is called. Use it
        in LangChain's ``ContextualCompressionRetriever`` (package ``langchain``) as ``base_compressor``.

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
            Documents to keep, a whole number >= 1, or ``None`` for all (default 3, as LangChain's Cohere
            reranker).
        batch_size
            Encoding batch size (in process only; default: that of :func:`~colbert_az_pylate.retrieval.rerank`).

        Examples
        --------
        >>> import tempfile
        >>> from langchain_core.documents import Document
        >>> from colbert_az_pylate import convert
        >>> # build_checkpoint writes a tiny random test checkpoint (tests/); pass your model folder instead
        >>> folder = tempfile.mkdtemp()
        >>> _ = convert(build_checkpoint(f"{folder}/raw"), f"{folder}/model", verify=False)  # a tiny random model
        >>> reranker = LangChainReranker(model=f"{folder}/model", top_n=1)
        >>> found = [Document("Bakı Azərbaycanın paytaxtıdır."),
        ...          Document("Şəki xan sarayı", metadata={"city": "Şəki"})]
        >>> [(d.page_content, d.metadata["city"]) for d in reranker.compress_documents(found, "Şəki xan sarayı")]
        [('Şəki xan sarayı', 'Şəki')]
        >>> LangChainReranker(model=f"{folder}/model", top_n=0)
        Traceback (most recent call last):
        ...
        colbert_az_pylate.errors.InvalidArgumentError: top_n must be a whole number >= 1, got 0 (int)
        >>> import shutil; shutil.rmtree(folder)
        """

        model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

        model: Any = Field(default=None, exclude=True, repr=False)
        url: Any = None
        api_key: SecretStr | None = None
        # checked by our rule after pydantic (one line, the same as the retrievers' and the server's)
        timeout: Any = 30.0
        top_n: Any = 3
        batch_size: Any = None  # rerank's own default (8 texts on a CPU, 32 on an accelerator)

        _target: Any = PrivateAttr(default=None)

        def __init__(self, **settings: Any) -> None:
            try:
                super().__init__(**settings)
            except ValidationError as error:
                raise settings_error(error, "LangChainReranker") from None
            self.top_n = check_top_n(self.top_n)
            self._open_target()

        def _open_target(self) -> Any:
            key = self.api_key.get_secret_value() if self.api_key is not None else None
            self._target = rerank_target(self.model, self.url, key, self.timeout, self.batch_size)
            return self._target

        def compress_documents(
            self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
        ) -> Sequence[Document]:
            """``documents`` ranked for ``query``, best first, the best ``top_n`` of them, each a copy with
            ``relevance_score`` in its metadata."""
            documents = list(documents)
            target = self._target or self._open_target()  # model_validate() and the like skip __init__
            ranked = rerank_scores(target, query, [document.page_content for document in documents], self.top_n)
            return [
                documents[index].model_copy(
                    update={"metadata": {**deepcopy(documents[index].metadata), "relevance_score": score}}
                )
                for index, score in ranked
            ]

else:

    class LangChainReranker:  # type: ignore[no-redef]
        """Needs langchain-core: ``pip install 'colbert-az-pylate[langchain]'``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(f"LangChainReranker needs langchain-core: {INSTALL}") from _IMPORT_ERROR
