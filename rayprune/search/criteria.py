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

__all__ = ["establish_criteria", "objective_options", "reference_options", "distills", "reference_below_floor",
           "check_cached_reference"]


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
    """``reference: {model, steps, learning_rate, require_above_floor}`` from the spec (the
    deprecated ``teacher:`` section where the spec has no ``reference``); None for ``reference: none``."""
    reference = getattr(spec, "reference", dataclasses.MISSING)
    if reference is dataclasses.MISSING:
        reference = getattr(spec, "teacher", None) or {}
    if reference is None or (isinstance(reference, str) and reference.lower() == "none"):
        return None
    if _get(reference, "enabled", True) is False:
        return None
    options = {k: _get(reference, k) for k in ("model", "steps", "learning_rate")}
    options["require_above_floor"] = _get(reference, "require_above_floor", True) is not False
    return options


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
        SpecError: ``reference: none`` with a distilling space; ``min_retained`` (as an
            objective bound or a constraint) without a reference; a reference not clearly above
            the floor (:func:`reference_below_floor`) unless ``reference.require_above_floor: false``.
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
    if reference is not None:
        _check_reference(spec, settings, criteria, reference, options, prepared.data_info, log=log)
    settings = dataclasses.replace(
        settings, teacher_dir=reference.path if reference is not None else settings.teacher_dir,
        reference_metric=reference_metric or None, constraints=dict(objective["constraints"]),
    )
    return settings, criteria, reference


def reference_below_floor(criteria, *, who: str = "the dense reference") -> str | None:
    """What was measured when the dense reference is not clearly above the floor (the rule of a
    trial's ``collapsed`` verdict: :meth:`Criteria.clearly_above_floor`), else None.

    Such a reference means the budget does not teach the model this task: every trial, pruned
    on top of the same budget, would be judged ``collapsed`` and the front would be empty.
    """
    if criteria.reference_metric is None:
        return None
    above, margin = criteria.clearly_above_floor(criteria.reference_metric)
    if above:
        return None
    return (f"{who} scored {criteria.metric} {criteria.reference_metric:.4f} on the eval split, "
            f"not clearly above the floor {criteria.metric} {criteria.floor:.4f} of the best constant predictor "
            f"(standard error {margin:.4f} on {criteria.eval_examples} examples)")


def _check_reference(spec, settings, criteria, reference, options: dict, data_info: dict, *, log=print) -> None:
    """Stop the search (:class:`SpecError`) when its reference is not clearly above the floor,
    saying what was measured and what to change; with ``reference.require_above_floor: false``
    say it once (``log``) and go on."""
    who = (f"the dense reference (trained {reference.steps} steps)" if reference.trained
           else f"the dense reference (given: {reference.path})")
    problem = reference_below_floor(criteria, who=who)
    if problem is None:
        return
    if not options.get("require_above_floor", True):
        log(f"warning: {problem}; every trial is likely to be judged collapsed (running anyway: "
            f"reference.require_above_floor is false)")
        return
    if reference.trained:
        training = spec.training
        budget = (f"training.steps (now {settings.steps})" if getattr(training, "steps", None) is not None
                  else f"training.epochs (now {training.epochs:g}, {settings.steps} steps)")
        data = getattr(spec, "data", None)
        examples = f"{data_info.get('train_examples', '?')} examples now"
        if getattr(data, "max_train_samples", None):
            examples += f", data.max_train_samples {data.max_train_samples}"
        rate_key = "reference.learning_rate" if options.get("learning_rate") else "training.learning_rate"
        rate = options.get("learning_rate") or settings.learning_rate
        fix = (f"give the model a budget it can learn this task in: more {budget}, another "
               f"{rate_key} (now {rate:g}), more training data ({examples}), or a longer reference.steps "
               f"(now {reference.steps})")
    else:
        fix = ("give a reference.model fine-tuned on this task with the data's labels (in the same order), "
               "or remove reference.model to train one")
    raise SpecError(f"{spec.path}: reference: {problem}, "
                    f"so no trial could be judged and none was started; {fix}; or set "
                    f"reference.require_above_floor: false to run the search anyway")


def check_cached_reference(prepared, *, log=print) -> str | None:
    """The dry run's reference check: when ``<search_dir>/reference`` already holds this
    budget's reference, judge it against the floor as :func:`establish_criteria` will (a
    :class:`SpecError` when it is not clearly above, unless opted out).  Trains nothing.

    Returns:
        a line describing the cached reference and the floor, or None when nothing is cached
        (or ``reference: none``).
    """
    from rayprune.metrics import constant_floor
    from rayprune.training.reference import cached_reference

    spec, settings, data = prepared.spec, prepared.settings, prepared.data
    options = reference_options(spec)
    if options is None:
        return None
    reference = cached_reference(prepared.search_dir, settings, data, model=options["model"],
                                 steps=options["steps"], learning_rate=options["learning_rate"])
    if reference is None or settings.metric not in reference.metrics:
        return None
    floor = constant_floor(settings.metric, np.asarray(data.eval.labels), is_regression=data.is_regression)
    criteria = Criteria(metric=settings.metric, floor=float(floor), eval_examples=len(data.eval),
                        reference_metric=float(reference.metrics[settings.metric]))
    _check_reference(spec, settings, criteria, reference, options, prepared.data_info, log=log)
    return (f"cached: {settings.metric}={criteria.reference_metric:.4f}, floor {settings.metric}={floor:.4f} "
            f"({reference.path})")
