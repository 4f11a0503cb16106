"""Every public object (the ``__all__`` of the package and its parts) documents itself like pylate's:
a summary line, ``Parameters`` where it takes any, ``Returns`` where it returns something, and an ``Examples``
block whose code runs (--doctest-modules)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = [
    "colbert_az_pylate",
    "colbert_az_pylate.conversion",
    "colbert_az_pylate.evaluation",
    "colbert_az_pylate.retrieval",
    "colbert_az_pylate.training",
    "colbert_az_pylate.losses",
    "colbert_az_pylate.integrations",
    "colbert_az_pylate.serving",
    "colbert_az_pylate.encoders",
]


def _public_objects():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                yield pytest.param(value, id=f"{module_name}.{name}")


def _takes_parameters(value) -> bool:
    target = value.__init__ if inspect.isclass(value) else value
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return any(name not in ("self", "args", "kwargs") for name in parameters)


@pytest.mark.parametrize("value", list(_public_objects()))
def test_public_object_has_a_numpydoc_docstring_with_a_runnable_example(value):
    doc = inspect.getdoc(value) or ""
    assert doc.strip(), "no docstring"
    if issubclass(value, BaseException) if inspect.isclass(value) else False:
        return  # an error class says when it is raised; it takes a message, nothing else
    assert "Examples" in doc and ">>>" in doc, "no Examples block with runnable code"
    if _takes_parameters(value) and not _is_dataclass_documented(value, doc):
        assert "Parameters" in doc, "no Parameters section"
    if inspect.isfunction(value) and _returns_something(value):
        assert "Returns" in doc or "Yields" in doc, "no Returns section"


def _returns_something(function) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation not in (inspect.Signature.empty, None, "None")


def _is_dataclass_documented(value, doc: str) -> bool:
    """A dataclass (a record) may document its fields as ``Attributes``."""
    import dataclasses

    return inspect.isclass(value) and dataclasses.is_dataclass(value) and "Attributes" in doc
