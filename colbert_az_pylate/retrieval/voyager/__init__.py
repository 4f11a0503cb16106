"""The parts of :class:`~colbert_az_pylate.retrieval.voyager_index.VoyagerIndex`, one mixin per concern.

- :mod:`~colbert_az_pylate.retrieval.voyager.store`: the append-only store files (token vectors, payloads) and
  their chunk checksums;
- :mod:`~colbert_az_pylate.retrieval.voyager.manifest`: the committed state, ``manifest.json`` and the generation
  files it names: opening, committing, removing stale files;
- :mod:`~colbert_az_pylate.retrieval.voyager.graph`: the HNSW graph and the searches (graph candidates with an
  exact MaxSim rerank, or exact MaxSim over everything);
- :mod:`~colbert_az_pylate.retrieval.voyager.writer`: the writer lock, batches, adding, removing and compacting.

The mixins share the index's state (its attributes) and call one another's methods through ``self``; only the
class composed of all of them, ``VoyagerIndex`` in ``colbert_az_pylate/retrieval/voyager_index.py``, is used.
"""
