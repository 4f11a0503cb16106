"""The package's import graph has no circles, counting imports inside functions too (a circle closed through a
function-level import is still a circle: the two modules cannot be understood or tested apart)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "colbert_az_pylate"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            lines |= {sub.lineno for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports anywhere in its code (module level or inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import module` names the module; `from module import name` names the module
                targets = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys() or {node.module}
            elif isinstance(node, ast.Import):
                targets = {alias.name for alias in node.names}
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_circle_closed_inside_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_package_imports_in_no_circle():
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the graph is the package's, not empty
    assert "colbert_az_pylate.encoders.export" in graph["colbert_az_pylate.loading"]  # function-level imports count
    assert circles(graph) == []


# Layers, bottom up: a module imports only from its own layer or below (the README's architecture section).
LAYERS = {
    "ground": {"errors", "files", "threads", "tokenization", "scores", "signature", "console", "packaged"},
    "models": {"reference", "conversion", "loading", "encoders", "standin", "losses"},
    "work": {"retrieval", "evaluation", "training"},
    "entry points": {"cli", "serving", "integrations", "__main__"},
}


def layer_of(module: str) -> int:
    """The layer number of a module of ours (0 = ground floor); the package's own ``__init__`` sits on top."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)
    for number, names in enumerate(LAYERS.values()):
        if parts[1] in names:
            return number
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def test_lower_layers_never_import_higher_ones():
    """Ground floor (errors, files, scores, …) → models (conversion, loading, encoders, losses) → work (retrieval,
    evaluation, training) → entry points (cli, serving, integrations): an import goes down or sideways, never up,
    inside functions included."""
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []
