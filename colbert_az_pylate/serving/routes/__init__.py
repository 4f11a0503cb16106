"""The app's routes, one module per group, each a ``build_*_router(state) -> APIRouter`` over the shared
:class:`~colbert_az_pylate.serving.state.ServerState`: search, documents (add, delete, compact), embeddings,
rerank, health."""
