"""Pruning methods behind one interface, and the name -> class registry.

Adding a method: write ``rayprune/methods/<name>.py`` with a ``PruningMethod`` subclass and add one
line to ``_BUILTIN`` below (lazy import: the module loads on first use).  Third-party code can
instead decorate its class with ``@register("<name>")``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from rayprune.methods.schedules import SparsitySchedule

if TYPE_CHECKING:
    from rayprune.methods.base import MethodOptions, PruningMethod, TrainingContext

__all__ = [
    "PruningMethod",
    "MethodOptions",
    "TrainingContext",
    "SparsitySchedule",
    "register",
    "get_method",
    "available_methods",
]

# The base classes import torch: loaded on first use, so that `available_methods()` (the space
# file's validation, `rayprune --help`) needs no torch.
_BASE_NAMES = ("PruningMethod", "MethodOptions", "TrainingContext")


def __getattr__(name: str) -> Any:
    if name in _BASE_NAMES:
        return getattr(importlib.import_module("rayprune.methods.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# name -> "module:ClassName"; imported lazily so `rayprune methods` stays fast.
_BUILTIN: dict[str, str] = {
    "magnitude": "rayprune.methods.magnitude:MagnitudeMethod",
    "movement": "rayprune.methods.movement:MovementMethod",
    "soft_movement": "rayprune.methods.soft_movement:SoftMovementMethod",
    "platon": "rayprune.methods.platon:PlatonMethod",
    "mgpp": "rayprune.methods.mgpp:MGPPMethod",
    "pins": "rayprune.methods.pins:PINSMethod",
    "seven": "rayprune.methods.seven:SevenMethod",
    "rpp": "rayprune.methods.rpp:RPPMethod",
    "wanda": "rayprune.methods.wanda:WandaMethod",
    "sparsegpt": "rayprune.methods.sparsegpt:SparseGPTMethod",
    "grain": "rayprune.methods.structured.grain:GrainMethod",
    "head_ffn": "rayprune.methods.structured.grain:HeadFFNMethod",
}
_REGISTERED: dict[str, type[PruningMethod]] = {}


def register(name: str) -> Callable[[type[PruningMethod]], type[PruningMethod]]:
    """Class decorator adding a method under ``name`` (for methods outside this package)."""

    def wrap(cls: type[PruningMethod]) -> type[PruningMethod]:
        from rayprune.methods.base import PruningMethod

        if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
            raise TypeError(f"@register({name!r}) needs a PruningMethod subclass, got {cls!r}")
        _REGISTERED[name] = cls
        return cls

    return wrap


def available_methods() -> list[str]:
    """Sorted names of every registered method."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_method(name: str) -> type[PruningMethod]:
    """Return the class registered under ``name``; unknown names list the valid ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown pruning method {name!r}; available: {available_methods()}")
    module_name, class_name = _BUILTIN[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    _REGISTERED[name] = cls
    return cls
