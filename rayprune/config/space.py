"""The ``space`` section: searched values (:class:`Distribution`), their keys, and the Optuna
define-by-run function built from them.

Keys are flat: ``method``, ``target_sparsity``, the training knobs of
:data:`~rayprune.config.sections.SEARCHABLE_TRAINING_KEYS`, ``schedule.<field>`` (a field of
:class:`~rayprune.methods.schedules.SparsitySchedule`), ``distill.<field>``
(:class:`~rayprune.config.sections.DistillOptions`) and ``<method>.<option>`` (a field of the
method's ``Options``).  A method's options exist only when that method is chosen (Optuna
define-by-run), so ``all_methods.yaml`` is one conditional space.

This module imports neither torch nor ray; checking ``<method>.<option>`` values needs the method
classes and happens in :mod:`rayprune.config.checks`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from rayprune.config.fields import check_value, describe_value, number_hint, split_key, type_hints
from rayprune.config.sections import (
    SEARCHABLE_TRAINING_KEYS,
    DistillOptions,
    SparsityTarget,
    TrainingSection,
)
from rayprune.methods import available_methods
from rayprune.methods.schedules import SparsitySchedule

__all__ = [
    "Distribution",
    "DefineByRun",
    "DISTRIBUTION_KINDS",
    "SCHEDULE_FIELDS",
    "parse_distribution",
    "check_entry",
    "scalar_field",
    "values_of",
    "same_value",
]

DISTRIBUTION_KINDS = ("choice", "uniform", "loguniform", "int")
#: ``schedule.<field>`` keys: every SparsitySchedule field but the target (``target_sparsity``).
SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(SparsitySchedule) if f.name != "final_sparsity")
_DISTRIBUTION_HELP = "{choice: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]} or {int: [lo, hi]}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_value(a: Any, b: Any) -> bool:
    """Equality that does not mix types (``True == 1`` in Python, not in a space file)."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Distribution:
    """One searched value: ``kind`` in choice/uniform/loguniform/int, with the choices or the
    ``(low, high)`` bounds in ``args``."""

    kind: str
    args: tuple

    def suggest(self, trial, name: str):
        """Ask an Optuna trial for a value (called by :class:`DefineByRun`)."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.args))
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.args)
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.args, log=True)
        return trial.suggest_int(name, *self.args)

    def contains(self, value: Any) -> bool:
        """Whether a trial could get ``value`` (any type: a string is simply not in a range)."""
        if self.kind == "choice":
            return any(same_value(value, a) for a in self.args)
        if not _is_number(value) or not math.isfinite(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        lo, hi = self.args
        return lo <= value <= hi

    def corners(self) -> tuple:
        """The values that bound what a trial may get: every choice, or both ends of a range."""
        return self.args

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)}"


def values_of(entry: Any) -> tuple:
    """The corner values of a space entry: a distribution's corners or the constant itself."""
    return entry.corners() if isinstance(entry, Distribution) else (entry,)


def parse_distribution(where: str, value: Any, fail) -> Any:
    """``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{int: [lo, hi]}``
    -> :class:`Distribution`; anything that is not a mapping is a constant.

    Args:
        where: the key for messages (``space.learning_rate``).
        fail: ``fail(key, message) -> SpecError``.
    """
    if not isinstance(value, Mapping):
        if isinstance(value, list):
            raise fail(where, f"a list is not a value; a distribution is one of {_DISTRIBUTION_HELP}")
        return value
    kinds = list(value)
    if len(kinds) != 1 or not isinstance(kinds[0], str) or kinds[0] not in DISTRIBUTION_KINDS:
        raise fail(where, f"a distribution is one of {_DISTRIBUTION_HELP}; got {describe_value(dict(value))}")
    kind, args = kinds[0], value[kinds[0]]
    if not isinstance(args, list) or not args:
        raise fail(f"{where}.{kind}", f"expected a non-empty list, got {describe_value(args)}")
    if kind == "choice":
        for i, a in enumerate(args):
            if not (a is None or isinstance(a, (bool, int, float, str))):
                raise fail(f"{where}.choice[{i}]", f"a choice is null, true/false, a number or a string; "
                                                   f"got {describe_value(a)}")
        return Distribution("choice", tuple(args))
    if len(args) != 2:
        raise fail(f"{where}.{kind}", f"expected [low, high], got {describe_value(args)}")
    for i, a in enumerate(args):
        if not _is_number(a) or (kind == "int" and not float(a).is_integer()):
            need = "an integer" if kind == "int" else "a number"
            raise fail(f"{where}.{kind}[{i}]", f"expected {need}, got {describe_value(a)}{number_hint(a)}")
    lo, hi = (int(a) for a in args) if kind == "int" else (float(a) for a in args)
    if not lo < hi:
        raise fail(f"{where}.{kind}", f"empty range: need low < high, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise fail(f"{where}.{kind}", f"loguniform needs low > 0, got {lo}")
    return Distribution(kind, (lo, hi))


def scalar_field(key: str) -> tuple[Any, Mapping] | None:
    """``(type hint, metadata)`` of a space key that is not a method option, or None."""
    scope, name = split_key(key)
    if scope is None:
        if key == "target_sparsity":
            cls = SparsityTarget
        elif key in SEARCHABLE_TRAINING_KEYS:
            cls = TrainingSection
        else:
            return None
    elif scope == "schedule" and name in SCHEDULE_FIELDS:
        cls = SparsitySchedule
    elif scope == "distill" and name in {f.name for f in dataclasses.fields(DistillOptions)}:
        cls = DistillOptions
    else:
        return None
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return type_hints(cls)[name], f.metadata


def _base(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is not Literal and len(args) == 1 else hint


def check_entry(where: str, entry: Any, hint: Any, metadata: Mapping, fail) -> None:
    """Check a space entry (constant or distribution) against a field's type and bounds: every
    choice, both ends of a range, or the constant.  A range over an integer field must be
    ``int``; a range over a non-numeric field is refused."""
    base = _base(hint)
    if isinstance(entry, Distribution) and entry.kind != "choice":
        if base is int and entry.kind != "int":
            raise fail(where, f"an integer: use {{int: [lo, hi]}} or {{choice: [...]}}, not {entry.kind}")
        if base not in (int, float):
            raise fail(where, f"not a number: use {{choice: [...]}}, not {entry.kind}")
    for value in values_of(entry):
        try:
            check_value(value, hint, metadata)
        except (TypeError, ValueError) as err:
            raise fail(where, str(err)) from None


class DefineByRun:
    """The Optuna define-by-run space of a :class:`~rayprune.config.SearchSpec` (a picklable
    callable: Ray checkpoints the searcher with the experiment).

    The method is suggested first; ``<method>.<option>`` entries are suggested only for the
    chosen method, so each method's hyperparameters exist only when it is chosen.  Constants are
    returned and Ray adds them to the trial config.
    """

    def __init__(self, space: Mapping[str, Any]) -> None:
        self.space = dict(space)

    def __call__(self, trial) -> dict:
        method_dist = self.space["method"]
        if isinstance(method_dist, Distribution):
            method = method_dist.suggest(trial, "method")
            constants = {}
        else:
            method, constants = method_dist, {"method": method_dist}
        methods = set(available_methods())
        for key, value in self.space.items():
            if key == "method":
                continue
            scope, _ = split_key(key)
            if scope in methods and scope != method:
                continue
            if isinstance(value, Distribution):
                value.suggest(trial, key)
            else:
                constants[key] = value
        return constants
