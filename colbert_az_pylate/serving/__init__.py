"""Serving: ``colbert-az serve``, a search API over an index (FastAPI + uvicorn, the ``[serve]`` extra).

``create_app`` builds the app, ``ServeLimits`` bounds what one request may ask, ``MicroBatcher`` shares forward
passes between concurrent queries. Importing this package imports neither FastAPI nor torch.
"""

from colbert_az_pylate.serving.app import ServeLimits, create_app
from colbert_az_pylate.serving.batching import MicroBatcher

__all__ = ["MicroBatcher", "ServeLimits", "create_app"]
