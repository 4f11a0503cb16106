"""Type checks of settings against a dataclass's annotations (the YAML config, ``Recipe``, trainer arguments).

YAML gives strings, numbers, booleans, lists and mappings; a value of the wrong kind (``rows: lots``,
``learning_rate: fast``) is refused with one line naming the key, before anything is loaded. A float written
without a dot (``1e-6``, which YAML reads as a string) is taken as the number it spells.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping

from colbert_az_pylate.errors import ColbertAzError, InvalidArgumentError

_ACCEPTED = object()  # the annotation is not one we can check from YAML values: accept


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(annotation))
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        type(None): "null",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))


def _convert(value, annotation):
    """``value`` as ``annotation`` wants it (possibly converted), or raise TypeError; ``_ACCEPTED`` if unknown."""
    if annotation is typing.Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        for member in sorted(members, key=lambda m: m is float):  # exact kinds before a string read as a float
            try:
                return _convert(value, member)
            except TypeError:
                continue
        raise TypeError
    if origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
        raise TypeError
    if annotation is type(None) or annotation is None:
        if value is None:
            return value
        raise TypeError
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise TypeError
    if annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return value  # an int stays an int (save_steps: 5000)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise TypeError from None
            if math.isfinite(number):
                return number
        raise TypeError
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if isinstance(value, list | tuple):
            return value
        raise TypeError
    if origin in (dict, Mapping) or annotation is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, annotation) or value in {item.value for item in annotation}:
            return value
        raise TypeError
    if origin is Callable or annotation is Callable:
        if callable(value):
            return value
        raise TypeError
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise TypeError
    return value  # a generic we cannot check: leave it to the consumer


def check_value(value, annotation, name: str, error: type[ColbertAzError] = InvalidArgumentError):
    """``value`` if it has the kind ``annotation`` asks for (a number string is read as a float), else ``error``.

    Parameters
    ----------
    value
        The value given.
    annotation
        A type annotation (``int``, ``float | None``, ``Literal["a", "b"]`` …).
    name
        The key, as the message names it (``"trainer.max_steps"``).
    error
        The error class raised.

    Returns
    -------
    object
        The value, converted where the annotation asks for a float and a string spells one.

    Examples
    --------
    >>> check_value("1e-6", float, "recipe.learning_rate")
    1e-06
    >>> check_value("two", int, "trainer.max_steps")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: trainer.max_steps must be a whole number, got 'two'
    """
    try:
        return _convert(value, annotation)
    except TypeError:
        raise error(f"{name} must be {_describe(annotation)}, got {value!r}") from None


def check_fields(
    values: Mapping,
    cls,
    where: str,
    error: type[ColbertAzError] = InvalidArgumentError,
    skip: tuple = (),
    prefix: str | None = None,
) -> dict:
    """``values`` with every key known to the dataclass ``cls`` and every value of its field's type.

    Parameters
    ----------
    values
        Settings by field name.
    cls
        The dataclass whose fields they set.
    where
        How the message names the mapping (``"recipe"``, ``"trainer"``).
    error
        The error class raised.
    skip
        Fields not checked here (checked by the caller).
    prefix
        How a message names a key: ``prefix + key`` (default ``where + "."``).

    Returns
    -------
    dict
        The values, floats converted (see :func:`check_value`).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Settings:
    ...     steps: int = 1
    ...     rate: float | None = None
    >>> check_fields({"steps": 3, "rate": "2e-5"}, Settings, "settings")
    {'steps': 3, 'rate': 2e-05}
    >>> check_fields({"stepz": 3}, Settings, "settings")
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: unknown key 'stepz' in settings; known keys: steps, rate
    """
    known = [item.name for item in dataclasses.fields(cls)]
    prefix = f"{where}." if prefix is None else prefix
    if not isinstance(values, Mapping):
        raise error(f"{where} must be a mapping of keys to values, got {type(values).__name__}")
    for key in values:
        if key not in known:
            raise error(f"unknown key {key!r} in {where}; known keys: {', '.join(known)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: check what can be
        hints = {item.name: item.type for item in dataclasses.fields(cls) if not isinstance(item.type, str)}
    return {
        key: value if key in skip or key not in hints else check_value(value, hints[key], f"{prefix}{key}", error)
        for key, value in values.items()
    }
