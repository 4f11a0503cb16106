"""Rules of the code that no single behaviour test sees: each rule kept in one place, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "colbert_az_pylate"
TESTS = Path(__file__).resolve().parent


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_maxsims_reduction_is_written_once_in_scores():
    """The best document token per query token, summed: only scores.py reduces similarities (the loss, the
    search, the evaluation and the rerank call it), so the card's rule cannot drift in one place."""
    reducing = [
        f"{path.relative_to(PACKAGE)}:{call.lineno}"
        for path in _modules()
        for call in _calls(path)
        if call.func.attr in ("max", "amax")
        and any(k.arg in ("dim", "axis") and ast.literal_eval(k.value) == -1 for k in call.keywords if k.arg)
    ]
    assert reducing and all(place.startswith("scores.py:") for place in reducing), reducing


def test_files_are_renamed_into_place_only_through_files_py():
    """A rename that publishes a file or folder syncs its data first: every one goes through files.py."""
    renames = [
        f"{path.relative_to(PACKAGE)}:{call.lineno}"
        for path in _modules()
        for call in _calls(path)
        if call.func.attr in ("rename", "replace")
        and (call.func.attr == "rename" or (isinstance(call.func.value, ast.Name) and call.func.value.id == "os"))
    ]
    assert renames and all(place.startswith("files.py:") for place in renames), renames


def test_only_files_py_locks_files_and_the_package_ships_no_test_fixtures():
    imports = {
        path.relative_to(PACKAGE).as_posix(): {
            alias.name
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        | {
            node.module
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and node.module
        }
        for path in _modules()
    }
    assert [name for name, found in imports.items() if {"fcntl", "msvcrt"} & found] == ["files.py"]
    assert not [name for name, found in imports.items() if "tiny_checkpoints" in found]


def test_tests_need_their_extras_instead_of_skipping_without_them():
    """A missing extra fails the run under CI (tests/extras.py); pytest.importorskip would skip in silence."""
    skipping = [
        f"{path.name}:{call.lineno}"
        for path in sorted(TESTS.glob("*.py"))
        for call in _calls(path)
        if call.func.attr == "importorskip"
    ]
    assert skipping == []


def test_the_searcher_cli_and_server_never_branch_on_a_backends_name():
    """They ask the registry what a backend can do (retrieval/backends.py); a comparison of a backend variable
    with a registered name would make a new backend more than one module and one line."""
    from colbert_az_pylate.retrieval.backends import BACKENDS

    callers = [PACKAGE / "retrieval" / "searcher.py", *PACKAGE.glob("cli/*.py"), *PACKAGE.glob("serving/**/*.py")]
    branching = []
    for path in callers:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            names = {ast.unparse(side) for side in sides if isinstance(side, (ast.Name, ast.Attribute, ast.Call))}
            constants = {
                element.value
                for side in sides
                for element in ([side] if isinstance(side, ast.Constant) else getattr(side, "elts", []))
                if isinstance(element, ast.Constant)
            }
            if any("backend" in name for name in names) and constants & set(BACKENDS):
                branching.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert branching == []


def test_a_missing_extra_fails_the_run_unless_skipping_is_asked_for(tmp_path):
    """tests/extras.py: a test module needing an extra that is not installed fails pytest with one line naming
    the extra; with COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS=1 it is skipped and listed instead."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_needs_extra.py").write_text(
        "from extras import require_extra\n"
        "require_extra('no_such_module_for_colbert_az', 'serve')\n"
        "def test_never_runs():\n    assert False\n",
        encoding="utf-8",
    )
    (tmp_path / "test_other.py").write_text("def test_runs():\n    assert True\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)]
    failed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert failed.returncode != 0 and "no_such_module_for_colbert_az is not installed" in failed.stdout
    assert "[serve] extra" in failed.stdout and "Traceback" not in failed.stdout
    env["COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS"] = "1"
    skipped = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert skipped.returncode == 0 and "skipped as COLBERT_AZ_TESTS_ALLOW_MISSING_EXTRAS asks" in skipped.stdout


def test_no_module_over_600_lines_and_no_function_over_80_lines_of_code():
    """The size rule of the layout: a module over 600 lines is split by concern; a function's code (its docstring
    aside: numpydoc docstrings with runnable examples are long on purpose) stays within 80 lines."""
    long_modules, long_functions = [], []
    for path in _modules():
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > 600:
            long_modules.append(path.relative_to(PACKAGE).as_posix())
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = node.body[0]
            docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            doc_lines = first.end_lineno - first.lineno + 1 if docstring and isinstance(first.value.value, str) else 0
            if node.end_lineno - node.lineno + 1 - doc_lines > 80:
                long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert long_modules == [] and long_functions == []
