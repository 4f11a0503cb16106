"""The runnable examples in public docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "colbert_az_pylate",
    "colbert_az_pylate.scores",
    "colbert_az_pylate.tokenization",
    "colbert_az_pylate.evaluation.metrics",
    "colbert_az_pylate.conversion.checkpoint",
    "colbert_az_pylate.training.data",
    "colbert_az_pylate.training.sources",
    "colbert_az_pylate.training.dataset",
    "colbert_az_pylate.training.config",
    "colbert_az_pylate.retrieval.pooling",
    "colbert_az_pylate.retrieval.voyager_index",
    "colbert_az_pylate.retrieval.plaid_index",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
