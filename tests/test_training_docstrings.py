"""The examples in the docstrings of training/ and losses/ run (fast: tiny tensors, tiny tables, no model)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "colbert_az_pylate.training",
    "colbert_az_pylate.training.checks",
    "colbert_az_pylate.training.config",
    "colbert_az_pylate.training.data",
    "colbert_az_pylate.training.dataset",
    "colbert_az_pylate.training.sources",
    "colbert_az_pylate.training.trainer",
    "colbert_az_pylate.losses.distillation_infonce",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", ["Recipe", "train", "prepare_training_data", "load_source", "DistillationInfoNCE"])
def test_public_training_objects_document_parameters_returns_and_examples(name):
    import colbert_az_pylate.losses as losses
    import colbert_az_pylate.training as training

    doc = getattr(training if hasattr(training, name) else losses, name).__doc__
    assert "Parameters\n    ----------" in doc and "Examples\n    --------" in doc
    if name not in ("Recipe", "DistillationInfoNCE"):
        assert "Returns\n    -------" in doc
