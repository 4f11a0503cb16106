"""pytest collection for the whole repository: tests/ and the doctests of every module of the package."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))  # the test helpers (tiny_checkpoints, extras)

collect_ignore = ["colbert_az_pylate/__main__.py"]  # importing it runs the command line


@pytest.fixture(autouse=True, scope="session")
def _tiny_checkpoint_builder(doctest_namespace):
    """The package's doctests build a tiny random test checkpoint with ``build_checkpoint`` (tests/tiny_checkpoints.py,
    not part of the installed package); a user passes their own colbert-az model folder instead."""
    from tiny_checkpoints import build_checkpoint

    doctest_namespace["build_checkpoint"] = build_checkpoint


# Doctests over about 5 s on 2 cores (measured with --durations): marked slow like the tests, so that
# `pytest -m "not slow"` leaves them out.
SLOW_DOCTESTS = {
    "colbert_az_pylate.conversion.verification.verify",
    "colbert_az_pylate.encoders.export.export_model",
    "colbert_az_pylate.encoders.parity.verify_encoder",
    "colbert_az_pylate.encoders.runtime.use_exported_encoder",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)
