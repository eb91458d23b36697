"""Typed fields with their bounds in metadata: one place that checks, describes and documents.

Every option dataclass of rayprune (the spec sections in :mod:`rayprune.config.sections`,
:class:`~rayprune.data.spec.DataSpec`, each method's ``Options``, the sparsity schedule) may put
its bounds and help text in the field metadata under these keys::

    field(default=0.1, metadata={"help": "fraction of the steps spent warming up",
                                 "minimum": 0.0, "maximum": 1.0})

``minimum`` / ``maximum`` are inclusive, ``exclusive_minimum`` / ``exclusive_maximum`` strict;
``help`` (or ``note``) is one line for ``rayprune methods`` and the JSON Schema; ``validate`` (a
callable raising ``TypeError``/``ValueError`` with its own message) checks a value's form before
the type check, and ``pattern`` (a regular expression) is its JSON Schema counterpart (both for
strings with a grammar, e.g. ``sparsity_pattern``).  The same entries
feed :func:`check_value` (validation before any trial starts), :func:`field_schema` (the JSON
Schema) and :func:`describe_bounds` (``rayprune methods``), so a bound is written once.

This module imports neither torch nor ray.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal

import yaml

__all__ = [
    "split_key",
    "check_value",
    "field_schema",
    "describe_bounds",
    "describe_value",
    "shorten",
    "number_hint",
    "type_hints",
    "BOUND_KEYS",
]

#: The metadata keys that hold bounds, with the comparison each one allows.
BOUND_KEYS = {
    "minimum": ">=",
    "exclusive_minimum": ">",
    "maximum": "<=",
    "exclusive_maximum": "<",
}
#: Integers beyond this are refused everywhere (they overflow float conversions and C ints).
INT_LIMIT = 2**63


def split_key(key: str) -> tuple[str | None, str]:
    """Split a space key into ``(scope, name)``: ``"mgpp.sigma0"`` -> ``("mgpp", "sigma0")``,
    ``"learning_rate"`` -> ``(None, "learning_rate")``.  The one place that reads a dotted key;
    scopes are ``schedule``, ``distill`` or a method name."""
    scope, dot, name = key.partition(".")
    return (scope, name) if dot else (None, key)


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (the last three ``...``): a user's key or value in a
    message, so that a 5,000-character one cannot flood it."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_EXPONENT = re.compile(r"([-+]?)([0-9][0-9_]*)?(?:\.([0-9_]*))?[eE]([-+]?)([0-9]+)")


def _scalar(text: str) -> Any:
    """What YAML (PyYAML, 1.1) reads ``text`` as when it stands unquoted."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number_hint(value: Any) -> str:
    """What to write instead, when a string that was meant as a number reached a numeric field:
    ``"; YAML 1.1 reads 1e-4 as text: write 1.0e-4 ..."`` for an exponent without a ``.`` in the
    number or without a sign in the exponent (PyYAML follows YAML 1.1 there), ``"; a number in
    quotes is text: remove the quotes"`` for a quoted number, else ``""``."""
    if not isinstance(value, str) or len(value) > 40:
        return ""
    text = value.strip()
    match = _EXPONENT.fullmatch(text)
    if match and (match.group(2) or match.group(3)) and not _is_number(_scalar(text)):
        sign, whole, frac, exp_sign, exp = match.groups()
        fixed = f"{sign}{whole or '0'}.{frac or '0'}e{exp_sign or '+'}{exp}"
        if isinstance(_scalar(fixed), float):
            return (f"; YAML 1.1 reads {text} as text: write {fixed} (a '.' in the number and a sign "
                    f"in the exponent)")
    if _is_number(_scalar(text)):
        return "; a number in quotes is text: remove the quotes"
    return ""


def describe_value(value: Any, limit: int = 60) -> str:
    """``repr`` of a user value, shortened so that a huge string or number cannot flood a message."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= INT_LIMIT:
        return f"an integer of {value.bit_length()} bits"
    return shorten(repr(value), limit)


def type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (strings under ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def _optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(hint, False)``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return hint, False


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def describe_bounds(metadata: typing.Mapping) -> str:
    """The bounds of a field in words: ``"in [0, 1)"``, ``"> 0"``, ``"<= 8192"`` or ``""``."""
    lo = ("[", metadata["minimum"]) if metadata.get("minimum") is not None else (
        ("(", metadata["exclusive_minimum"]) if metadata.get("exclusive_minimum") is not None else None)
    hi = ("]", metadata["maximum"]) if metadata.get("maximum") is not None else (
        (")", metadata["exclusive_maximum"]) if metadata.get("exclusive_maximum") is not None else None)
    if lo and hi:
        return f"in {lo[0]}{_number(lo[1])}, {_number(hi[1])}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {_number(lo[1])}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {_number(hi[1])}"
    return ""


def _describe_type(hint: Any) -> str:
    hint, _ = _optional(hint)
    if typing.get_origin(hint) is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    elif hint is bool:
        text = "true or false"
    elif hint is int:
        text = "an integer"
    elif hint is float:
        text = "a number"
    elif hint is str:
        text = "a string"
    elif typing.get_origin(hint) is list:
        text = "a list"
    elif dataclasses.is_dataclass(hint):
        text = "a mapping"
    else:
        text = str(hint)
    return text


def allowed_text(hint: Any, metadata: typing.Mapping) -> str:
    """What a field accepts, in words: ``"a number > 0"``, ``"an integer in [1, 1024] or null"``."""
    bounds = describe_bounds(metadata)
    return _describe_type(hint) + (f" {bounds}" if bounds else "") + (" or null" if _optional(hint)[1] else "")


def check_value(value: Any, hint: Any, metadata: typing.Mapping | None = None) -> Any:
    """Check one user value against a field's type hint and metadata bounds.

    Integers are accepted for floats (and converted); floats with an integral value for ints
    (YAML writes ``1e3`` as a float).  Types this function does not know (lists, nested
    dataclasses) pass unchanged: their constructor checks them.

    Returns:
        The value, converted where said above.

    Raises:
        TypeError / ValueError: with a message that says what is allowed.
    """
    metadata = metadata or {}
    base, optional = _optional(hint)
    allowed = allowed_text(hint, metadata)
    if value is None:
        if optional:
            return None
        raise TypeError(f"expected {allowed}, got null")
    validate = metadata.get("validate")
    if validate is not None:
        validate(value)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ValueError(f"expected {allowed}, got {describe_value(value)}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected {allowed}, got {describe_value(value)}")
        return value
    if base is str:
        if not isinstance(value, str):
            raise TypeError(f"expected {allowed}, got {describe_value(value)}")
        return value
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected {allowed}, got {type(value).__name__} {describe_value(value)}"
                            f"{number_hint(value)}")
        if isinstance(value, int) and abs(value) >= INT_LIMIT:
            raise ValueError(f"expected {allowed}, got {describe_value(value)} (|value| must be < 2**63)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"expected {allowed}, got {value} (numbers must be finite)")
        if base is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise TypeError(f"expected {allowed}, got {describe_value(value)}")
                value = int(value)
        else:
            value = float(value)
        for key, op in BOUND_KEYS.items():
            bound = metadata.get(key)
            if bound is None:
                continue
            ok = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
            if not ok:
                raise ValueError(f"expected {allowed}, got {describe_value(value)}")
        return value
    return value


def field_schema(hint: Any, metadata: typing.Mapping | None = None) -> dict:
    """The JSON Schema of one field: its type, enum, bounds and description."""
    metadata = metadata or {}
    base, optional = _optional(hint)
    if typing.get_origin(base) is Literal:
        schema: dict[str, Any] = {"enum": list(typing.get_args(base))}
    elif base is bool:
        schema = {"type": "boolean"}
    elif base is int:
        schema = {"type": "integer"}
    elif base is float:
        schema = {"type": "number"}
    elif base is str:
        schema = {"type": "string"}
        if metadata.get("pattern"):
            schema["pattern"] = metadata["pattern"]
    elif typing.get_origin(base) is list:
        item = field_schema(typing.get_args(base)[0]) if typing.get_args(base) else {}
        schema = {"oneOf": [{"type": "array", "items": item}, item]} if item else {"type": "array"}
    else:
        schema = {}
    if base in (int, float):
        names = {"minimum": "minimum", "maximum": "maximum", "exclusive_minimum": "exclusiveMinimum",
                 "exclusive_maximum": "exclusiveMaximum"}
        for key, name in names.items():
            if metadata.get(key) is not None:
                schema[name] = metadata[key]
    if optional and schema:
        if "enum" in schema:
            schema["enum"] = schema["enum"] + [None]
        elif "type" in schema:
            schema["type"] = [schema["type"], "null"]
        else:
            schema = {"oneOf": [schema, {"type": "null"}]}
    text = metadata.get("help") or metadata.get("note")
    if text:
        schema["description"] = text
    return schema
