"""Optional extras in the tests: a missing one fails the run (one line), unless skipping is asked for explicitly.

``pip install -e ".[test]"`` installs every extra, so a test module that cannot import one is a broken environment,
not a reason to drop its tests from a run that still exits 0. Someone who runs without an extra on purpose sets
``COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS=1``: the tests that need it are then skipped (and listed by ``-ra``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

ALLOW_MISSING = "COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS"
INSTALL = 'pip install -e ".[test]"'


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` (part of the ``[extra]`` extra) or fail the test or module with one line naming both.

    With ``COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS=1`` a missing module skips instead. Works at module level (the whole
    file) and inside a test.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = f"{module} is not installed ({error}; the [{extra}] extra, which {INSTALL} installs)"
    # raised outside the except block, so that the report is the one line, not an import traceback
    if os.environ.get(ALLOW_MISSING, "") not in ("", "0"):
        pytest.skip(f"{missing}; skipped as {ALLOW_MISSING} asks", allow_module_level=True)
    pytest.fail(f"{missing}; set {ALLOW_MISSING}=1 to skip these tests instead", pytrace=False)
