"""Cross-field checks before any trial starts: every trial the space can produce must build.

A value can pass its own bounds and still make every trial fail: ``mgpp.sigma0: 0.04`` with
``mgpp.sigma1: 0.02`` (the spike variance must be below the slab's), ``schedule.end: 0.05`` for
``pins`` (whose default ``schedule.start`` is 0.064), ``schedule.start`` after ``schedule.end``,
``schedule.initial_sparsity`` above ``target_sparsity`` (a ramp that runs downwards).
:func:`check_trials` builds each method (its ``Options``, as the trial does) and its
:class:`~rayprune.methods.schedules.SparsitySchedule` at the *corners* of the space (every choice,
both ends of every range) and for every ``points_to_evaluate`` entry, and turns the first refusal
into one :class:`SpecError` that names the file, the keys and what is allowed.

Corners suffice for the constraints methods have (bounds and orderings between two values are
monotone in each value).  When the corners of one method multiply to more than
:data:`MAX_COMBINATIONS`, every pair of keys is combined over its corners instead (the others
at their first corner): each two-value constraint is still checked at every corner pair.

This module imports the method classes (and so torch); it runs after the space's structure has
been checked, so a malformed file is reported without it.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

from rayprune.config.fields import describe_value, split_key, type_hints
from rayprune.config.sections import DistillOptions, SparsityTarget
from rayprune.config.space import check_entry, values_of
from rayprune.errors import SpecError
from rayprune.methods import get_method
from rayprune.methods.masks import check_pattern_target
from rayprune.methods.schedules import SparsitySchedule

__all__ = ["check_trials", "MAX_COMBINATIONS"]

MAX_COMBINATIONS = 4096
_ERRORS = (TypeError, ValueError, ArithmeticError)
Fail = Callable[[str, str], SpecError]


def _combinations(values: Sequence[tuple]) -> Iterator[tuple]:
    """Every combination of the corner values, or every pair's when there are too many."""
    if len(values) < 2 or math.prod(len(v) for v in values) <= MAX_COMBINATIONS:
        yield from itertools.product(*values)
        return
    first = [v[0] for v in values]
    for i, j in itertools.combinations(range(len(values)), 2):
        for a, b in itertools.product(values[i], values[j]):
            combo = list(first)
            combo[i], combo[j] = a, b
            yield tuple(combo)


def _check_ramp(schedule: SparsitySchedule) -> None:
    """A ramp (cubic, linear) rises from ``initial_sparsity`` to the target: one that starts above
    the target would un-prune during the ramp, and is as much a mistake as ``start > end``.
    (``SparsitySchedule`` itself allows it: methods build a placeholder schedule with target 0
    from their defaults.)  ``constant`` and ``oneshot`` ignore ``initial_sparsity``."""
    if schedule.kind in ("cubic", "linear") and schedule.initial_sparsity > schedule.final_sparsity:
        raise ValueError(f"need initial_sparsity <= target_sparsity (a {schedule.kind} ramp rises from one to the "
                         f"other), got initial_sparsity={schedule.initial_sparsity}, "
                         f"target_sparsity={schedule.final_sparsity}")


def _scenarios(points: Sequence[Mapping], method: str | None) -> Iterator[tuple[str, dict]]:
    """``(where, fixed values)``: the space itself, then each point a trial of ``method`` may start
    from (every point when ``method`` is None)."""
    yield "space", {}
    for i, point in enumerate(points):
        if method is None or point.get("method", method) == method:
            yield f"points_to_evaluate[{i}]", dict(point)


def _first_failure(keys: list[str], values: list[tuple], build: Callable[[dict], Any]) -> tuple[dict, Exception] | None:
    for combo in _combinations(values):
        chosen = dict(zip(keys, combo))
        try:
            build(chosen)
        except _ERRORS as err:
            return chosen, err
    return None


def _culprits(chosen: dict, err: Exception, build: Callable[[dict], Any]) -> dict:
    """The keys of a failing combination that matter: a key stays when leaving it at its default
    makes the build pass or changes the refusal."""
    keep = dict(chosen)
    for key in list(keep):
        rest = {k: v for k, v in keep.items() if k != key}
        try:
            build(rest)
        except _ERRORS as other:
            if str(other) == str(err):
                keep = rest
    return keep


def _check_group(where: str, label: str, keys: list[str], space: Mapping, fixed: Mapping,
                 build: Callable[[dict], Any], fail: Fail, note: str = "") -> None:
    values = [(fixed[k],) if k in fixed else values_of(space[k]) for k in keys]
    found = _first_failure(keys, values, build)
    if found is None:
        return
    chosen, err = found
    culprits = _culprits(chosen, err, build)
    named = ", ".join(f"{k}={describe_value(v)}" for k, v in culprits.items()) or "its defaults"
    prefix = where if where != "space" else ", ".join(f"space.{k}" for k in culprits) or "space"
    raise fail(prefix, f"{label} rejects {named}{note}: {err}")


def check_trials(space: Mapping[str, Any], points: Sequence[Mapping], methods: Sequence[str], *,
                 has_reference: bool, fail: Fail) -> None:
    """Build every method's options and schedule, and the distillation options, at the corners
    of ``space`` and for every point; raise the first refusal.

    Args:
        space: parsed space entries (constants or :class:`~rayprune.config.space.Distribution`).
        points: the ``points_to_evaluate`` mappings (already checked to lie in the space).
        methods: the methods the space can choose.
        has_reference: False under ``reference: none`` (methods that distil are then refused).
        fail: ``fail(key, message) -> SpecError`` naming the file.
    """
    distill_on = any(v > 0 for k in space if k == "distill.alpha" for v in values_of(space[k]))
    if distill_on and not has_reference:
        raise fail("space.distill.alpha", "distillation needs the dense reference; remove `reference: none` "
                                          "or keep distill.alpha at 0")
    base_schedule_keys = ["target_sparsity"] + [k for k in space if split_key(k)[0] == "schedule"]
    distill_keys = [k for k in space if split_key(k)[0] == "distill"]
    for method in methods:
        cls = get_method(method)
        fields = {f.name: f for f in cls.option_fields()}
        hints = type_hints(cls.Options)
        option_keys = [k for k in space if split_key(k)[0] == method]
        schedule_keys = base_schedule_keys + [k for k in option_keys if split_key(k)[1] == "sparsity_pattern"]
        for key in option_keys:
            name = split_key(key)[1]
            if name not in fields:
                raise fail(f"space.{key}", f"unknown option of {method}; allowed: {sorted(fields)}")
            check_entry(f"space.{key}", space[key], hints[name], fields[name].metadata, fail)
        if cls.needs_teacher and not has_reference:
            raise fail("reference", f"method {method!r} distils from the dense reference; "
                                    f"remove `reference: none` or drop {method!r} from space.method")

        def build_method(chosen: dict, cls=cls) -> None:
            cls(**{split_key(k)[1]: v for k, v in chosen.items()})

        def build_schedule(chosen: dict, cls=cls, method=method) -> None:
            given = {split_key(k)[1]: v for k, v in chosen.items()
                     if k != "target_sparsity" and split_key(k)[0] == "schedule"}
            target = chosen.get("target_sparsity", SparsityTarget.target_sparsity)
            schedule = SparsitySchedule(final_sparsity=target, **{**dict(cls.schedule_defaults), **given})
            _check_ramp(schedule)
            if cls.one_shot and schedule.kind not in ("oneshot", "constant"):
                raise ValueError(f"{method} prunes once from calibration data: schedule.kind must be "
                                 f"'oneshot' or 'constant', got {schedule.kind!r}")
            # An N:M pattern reaches exactly 1 - N/M: the target must say so.
            check_pattern_target(chosen.get(f"{method}.sparsity_pattern", "unstructured"), target)

        overridden = {split_key(k)[1] for k in schedule_keys if split_key(k)[0] != method}
        defaults = {k: v for k, v in dict(cls.schedule_defaults).items() if k not in overridden}
        note = (f" (with the defaults of {method}: " + ", ".join(f"schedule.{k}={v!r}" for k, v in defaults.items()) + ")"
                if defaults else "")
        for where, fixed in _scenarios(points, method):
            _check_group(where, method, option_keys, space, fixed, build_method, fail)
            _check_group(where, f"the sparsity schedule of {method}", schedule_keys, space, fixed,
                         build_schedule, fail, note)
    for where, fixed in _scenarios(points, None):
        _check_group(where, "distillation", distill_keys, space, fixed,
                     lambda chosen: DistillOptions(**{split_key(k)[1]: v for k, v in chosen.items()}), fail)

