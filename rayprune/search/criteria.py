"""What a search judges its trials by: the dense reference, the chance floor, ``objective.min_metric``
/ ``min_retained`` and ``objective.constraints`` (:class:`~rayprune.search.results.Criteria`).

Set up on the driver before the trials start (:func:`establish_criteria`): the floor comes from
the eval split's labels, the reference is trained (or a given model evaluated) once per search
directory, and the trials learn the reference's metric (to report ``retained``), its directory
(their teacher) and the constraints (what to measure at their last evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from rayprune.errors import SpecError
from rayprune.search.results import CONSTRAINT_KEYS, Criteria

__all__ = ["establish_criteria", "objective_options", "reference_options", "distills"]


def _get(section: Any, key: str, default=None):
    """``section.key`` or ``section[key]``: the spec's typed sections and plain mappings alike."""
    if section is None:
        return default
    if isinstance(section, Mapping):
        return section.get(key, default)
    return getattr(section, key, default)


def objective_options(spec) -> dict:
    """``objective.min_metric``, ``objective.min_retained`` and ``objective.constraints`` (all
    keys of :data:`CONSTRAINT_KEYS`, None when unset) from the spec."""
    objective = getattr(spec, "objective", None)
    constraints = _get(objective, "constraints")
    if constraints is not None and not isinstance(constraints, Mapping):
        constraints = dataclasses.asdict(constraints) if dataclasses.is_dataclass(constraints) else vars(constraints)
    return {
        "min_metric": _get(objective, "min_metric"),
        "min_retained": _get(objective, "min_retained"),
        "constraints": {k: (constraints or {}).get(k) for k in CONSTRAINT_KEYS},
    }


def reference_options(spec) -> dict | None:
    """``reference: {model, steps, learning_rate}`` from the spec (the deprecated ``teacher:``
    section where the spec has no ``reference``); None for ``reference: none``."""
    reference = getattr(spec, "reference", dataclasses.MISSING)
    if reference is dataclasses.MISSING:
        reference = getattr(spec, "teacher", None) or {}
    if reference is None or (isinstance(reference, str) and reference.lower() == "none"):
        return None
    if _get(reference, "enabled", True) is False:
        return None
    return {k: _get(reference, k) for k in ("model", "steps", "learning_rate")}


def distills(spec) -> bool:
    """Whether any trial of the space can distil from the reference: a method that needs a
    teacher, or a ``distill.alpha`` that can be above 0."""
    from rayprune.config import Distribution
    from rayprune.methods import get_method

    if any(get_method(m).needs_teacher for m in spec.methods()):
        return True
    alpha = spec.space.get("distill.alpha", 0.0)
    values = list(alpha.args) if isinstance(alpha, Distribution) else [alpha]
    return any(float(v or 0.0) > 0 for v in values)


def establish_criteria(prepared, settings, *, train_reference: bool = True, log=print):
    """The search's :class:`Criteria`, its :class:`~rayprune.training.reference.Reference` (None
    when opted out or not trained, e.g. a replay) and the trials' settings with the reference's
    directory, metric and the constraints.

    Raises:
        SpecError: ``reference: none`` with a distilling space, or ``min_retained`` (as an
            objective bound or a constraint) without a reference.
    """
    spec, data = prepared.spec, prepared.data
    objective = objective_options(spec)
    options = reference_options(spec)
    if options is None and distills(spec):
        raise SpecError(f"{spec.path}: reference: none, but the space distils (a method that needs a "
                        f"teacher or distill.alpha > 0), and the reference is the teacher; remove `reference: none`")
    if options is None and (objective["min_retained"] is not None
                            or objective["constraints"]["min_retained"] is not None):
        raise SpecError(f"{spec.path}: objective.min_retained / objective.constraints.min_retained need the dense "
                        f"reference, but the space says reference: none")
    reference = None
    if options is not None and train_reference:
        from rayprune.training.reference import ensure_reference

        reference = ensure_reference(prepared.search_dir, settings, data, model=options["model"],
                                     steps=options["steps"], learning_rate=options["learning_rate"], log=log)
    reference_metric = float(reference.metrics[settings.metric]) if reference is not None else None
    floor = data.task.floor(settings.metric, data)
    log(f"floor: {settings.metric}={floor:.4f} ({data.task.floor_description()})")
    criteria = Criteria(
        metric=settings.metric, floor=float(floor), eval_examples=data.task.eval_size(data.eval),
        floor_rule=data.task.floor_description(),
        reference_metric=reference_metric, min_metric=objective["min_metric"],
        min_retained=objective["min_retained"], constraints=objective["constraints"],
    )
    settings = dataclasses.replace(
        settings, teacher_dir=reference.path if reference is not None else settings.teacher_dir,
        reference_metric=reference_metric or None, constraints=dict(objective["constraints"]),
    )
    return settings, criteria, reference
