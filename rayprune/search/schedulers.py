"""Early stopping for multi-objective searches: MO-ASHA as a Ray Tune scheduler.

Ray Tune's ASHA takes one metric; pruning trades accuracy against sparsity (and latency), and a
weighted sum hides the trade-off.  :class:`MultiObjectiveASHA` keeps ASHA's asynchronous rungs
and replaces "is this trial in the top 1/rf of its rung" by "is its objective *vector* in the top
1/rf by non-domination rank, then crowding distance" (MO-ASHA, Schmucker et al. 2021, with
NSGA-II's ordering).  It has the shape of Ray's ``AsyncHyperBandScheduler`` (same rung
milestones, same bracket assignment, same time-attribute rules) so that with one objective it
decides exactly as Ray's ASHA; the rung bookkeeping lives in :class:`_Rung`, which has no Ray
imports.

Use :func:`create_scheduler` from the search driver, with the objectives declared once in the
search spec, and leave ``TuneConfig(metric=..., mode=...)`` unset::

    scheduler = create_scheduler(
        "mo_asha",
        objectives=[("accuracy", "max"), ("sparsity_actual", "max")],
        time_attr="training_iteration", max_t=16, grace_period=2, reduction_factor=2,
    )
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(scheduler=scheduler, ...))
"""

from __future__ import annotations

import json
import math
import numbers
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from rayprune import pareto

if TYPE_CHECKING:  # only for annotations; the scheduler never calls into the controller
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

__all__ = ["MultiObjectiveASHA", "create_scheduler", "SCHEDULER_KINDS"]

SCHEDULER_KINDS = ("asha", "mo_asha", "fifo")
_STATE_VERSION = 1


# ---------------------------------------------------------------------------- validation
def _validate_objectives(objectives: Any) -> tuple[tuple[str, str], ...]:
    """Return ``objectives`` as a tuple of ``(name, mode)`` pairs or raise naming the problem."""
    if isinstance(objectives, (str, bytes)) or not isinstance(objectives, Sequence):
        raise TypeError(
            "objectives must be a list of (name, 'min'|'max') pairs, "
            f"got objectives={objectives!r}"
        )
    if not objectives:
        raise ValueError("objectives must name at least one (name, 'min'|'max') pair, got []")
    pairs = []
    for item in objectives:
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise TypeError(
                f"each objective must be a (name, 'min'|'max') pair, got {item!r} "
                f"in objectives={list(objectives)!r}"
            )
        name, mode = item
        if not isinstance(name, str) or not name:
            raise ValueError(f"objective names must be non-empty strings, got name={name!r}")
        if mode not in pareto.MODES:
            raise ValueError(
                f"objective {name!r} needs a mode in {pareto.MODES}, got mode={mode!r}"
            )
        pairs.append((name, mode))
    names = [n for n, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"objective names must be unique, got {duplicated} more than once")
    return tuple(pairs)


def _validate_budget(
    time_attr: Any, max_t: Any, grace_period: Any, reduction_factor: Any
) -> None:
    """ASHA's budget options (Ray asserts on them; we raise ValueError/TypeError instead)."""
    if not isinstance(time_attr, str) or not time_attr:
        raise TypeError(f"time_attr must be a non-empty string, got time_attr={time_attr!r}")
    for name, value in (
        ("max_t", max_t),
        ("grace_period", grace_period),
        ("reduction_factor", reduction_factor),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {name}={value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {name}={value!r}")
    if max_t <= 0:
        raise ValueError(f"max_t must be > 0, got max_t={max_t}")
    if not 0 < grace_period <= max_t:
        raise ValueError(
            f"grace_period must be in (0, max_t={max_t}], got grace_period={grace_period}"
        )
    if reduction_factor <= 1:
        raise ValueError(f"reduction_factor must be > 1, got reduction_factor={reduction_factor}")


def _rung_milestones(
    grace_period: float, max_t: float, reduction_factor: float, bracket: int
) -> list[float]:
    """Rung milestones of one bracket, highest first (Ray's ``_Bracket`` formula, verbatim
    arithmetic so that milestones compare equal to Ray's)."""
    num_rungs = int(np.log(max_t / grace_period) / np.log(reduction_factor) - bracket + 1)
    return [grace_period * reduction_factor ** (k + bracket) for k in reversed(range(num_rungs))]


# ---------------------------------------------------------------------------- rung bookkeeping
class _Rung:
    """One rung of one bracket: its milestone and the objective vector each trial had on
    reaching it.  Decides whether a trial arriving at the rung continues.

    Vectors are stored *minimised* (``max`` objectives negated, :func:`rayprune.pareto.normalize`)
    and NaN marks a missing or NaN objective.

    The decision for an arriving trial, among the n vectors recorded here including its own:

    * one objective, finite value: continue iff the value is no worse than the
      ``(1 - 1/rf)`` percentile (linear interpolation, NaNs ignored) of the *other* recorded
      values.  This is Ray's ASHA rule verbatim, so ``mo_asha`` with one objective makes the same
      decisions as Ray's ``ASHAScheduler``; with untied values it keeps about the top ``n / rf``.
    * otherwise: order all n by (non-domination rank, crowding distance), NaN rows last
      (:func:`rayprune.pareto.sort_by_rank_and_crowding`), and continue iff the arriving trial
      is among the first ``ceil(n / rf)``.  Ties favour the arriving trial, as Ray's ``>=``
      cutoff does.

    * when any recorded trial violates a constraint (``violation > 0``, the sum of its relative
      violations): feasible trials first, ordered as above, then infeasible ones by increasing
      violation; the arriving trial continues iff it is among the first ``ceil(n / rf)``.

    Only the arriving trial is decided: trials already past the rung are never revisited (ASHA
    is asynchronous and only ever stops the trial that just reported).
    """

    def __init__(self, milestone: float, reduction_factor: float, modes: Sequence[str]):
        self.milestone = milestone
        self.reduction_factor = reduction_factor
        self.modes = tuple(modes)
        self.recorded: dict[str, np.ndarray] = {}  # trial id -> (k,) minimised vector
        self.violations: dict[str, float] = {}  # trial id -> constraint violation (> 0: infeasible)

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self.recorded

    def decide(self, trial_id: str, minimised: np.ndarray, violation: float = 0.0) -> bool:
        """Record ``trial_id``'s minimised (k,) vector and constraint violation; return True if it
        continues."""
        other_ids = list(self.recorded)
        others = list(self.recorded.values())
        self.recorded[trial_id] = minimised
        self.violations[trial_id] = float(violation)
        ids = [trial_id] + other_ids
        if any(self.violations.get(i, 0.0) > 0 for i in ids):
            return self._decide_with_constraints(trial_id, ids)
        if len(self.modes) == 1 and not np.isnan(minimised[0]):
            finite = [-v[0] for v in others if not np.isnan(v[0])]
            if not finite:
                return True
            # Ray compares rewards (higher = better): reward = -minimised, exactly.
            cutoff = np.percentile(finite, (1 - 1 / self.reduction_factor) * 100)
            return not (-minimised[0] < cutoff)
        # Arriving trial first, so stable ordering breaks its ties in its favour.
        points = np.stack([minimised] + others)  # (n, k)
        order = pareto.sort_by_rank_and_crowding(points, ["min"] * points.shape[1])
        keep = math.ceil(points.shape[0] / self.reduction_factor)
        return bool(np.flatnonzero(order == 0)[0] < keep)

    def _decide_with_constraints(self, trial_id: str, ids: list[str]) -> bool:
        """Feasible trials first (by rank and crowding), then infeasible ones by violation; the
        arriving trial (first in ``ids``) wins ties."""
        feasible = [i for i in ids if self.violations.get(i, 0.0) <= 0]
        infeasible = sorted((i for i in ids if self.violations.get(i, 0.0) > 0), key=lambda i: self.violations[i])
        ranking = []
        if feasible:
            points = np.stack([self.recorded[i] for i in feasible])
            order = pareto.sort_by_rank_and_crowding(points, ["min"] * points.shape[1])
            ranking = [feasible[j] for j in order]
        ranking += infeasible
        keep = math.ceil(len(ids) / self.reduction_factor)
        return ranking.index(trial_id) < keep

    def summary(self) -> str:
        return f"t={self.milestone:g}: {len(self.recorded)} recorded"

    def state(self) -> dict[str, Any]:
        return {
            "milestone": self.milestone,
            "recorded": {tid: [float(x) for x in v] for tid, v in self.recorded.items()},
            "violations": dict(self.violations),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if not math.isclose(state["milestone"], self.milestone):
            raise ValueError(
                f"checkpoint rung milestone {state['milestone']} does not match this "
                f"scheduler's {self.milestone}; restore with the options it was saved with"
            )
        self.recorded = {
            tid: np.asarray(v, dtype=float) for tid, v in state["recorded"].items()
        }
        self.violations = {tid: float(v) for tid, v in state.get("violations", {}).items()}


def _decide_in_bracket(
    rungs: Sequence[_Rung], trial_id: str, time: float, minimised: np.ndarray, violation: float = 0.0
) -> bool:
    """Ray's ``_Bracket.on_result`` walk: from the highest rung down, decide at the first rung
    the trial has reached but not yet been recorded at (a trial that skipped a rung is judged
    there on a later report); True = continue."""
    for rung in rungs:
        if time < rung.milestone or trial_id in rung:
            continue
        return rung.decide(trial_id, minimised, violation)
    return True


# ---------------------------------------------------------------------------- the scheduler
class MultiObjectiveASHA(FIFOScheduler):
    """Asynchronous successive halving on several objectives (MO-ASHA) for Ray Tune.

    Pass it as ``TuneConfig(scheduler=...)`` with ``TuneConfig.metric``/``mode`` unset.  Tune
    calls :meth:`on_trial_add` when a trial is created, :meth:`on_trial_result` on every
    ``tune.report`` (the return value decides CONTINUE/STOP), :meth:`on_trial_complete` when a
    trial ends (its last result is recorded at any rung it reached but was not judged at), and
    :meth:`on_trial_remove`/:meth:`on_trial_error` when it disappears.  Every report must carry
    ``time_attr`` and each objective; a missing or NaN objective ranks the trial worst.

    Args:
        objectives: ``[(name, "min"|"max"), ...]``; the first is the primary objective, the one
            Tune's strict metric check looks for (:attr:`metric`).
        time_attr: monotonically increasing budget key of the results (e.g. ``training_iteration``).
        max_t: budget at which every trial is stopped.
        grace_period: budget of the first rung; no trial is stopped before it.
        reduction_factor: rf: about ``1/rf`` of the trials reaching a rung continue past it.
        brackets: number of brackets; trials are spread over them as in Ray's ASHA.
        constraints: ``objective.constraints``; a report that violates one
            (:func:`rayprune.search.results.constraint_violations`, measured values only) ranks
            after every feasible one at its rung.

    Raises:
        ValueError, TypeError: an option is out of range or of the wrong type (message names it).
    """

    def __init__(
        self,
        *,
        objectives: Sequence[tuple[str, str]],
        time_attr: str = "training_iteration",
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        constraints: Mapping[str, float | None] | None = None,
    ):
        self._objectives = _validate_objectives(objectives)
        self._constraints = {k: v for k, v in (constraints or {}).items() if v is not None}
        _validate_budget(time_attr, max_t, grace_period, reduction_factor)
        if isinstance(brackets, bool) or not isinstance(brackets, int):
            raise TypeError(f"brackets must be an int, got brackets={brackets!r}")
        milestones = [
            _rung_milestones(grace_period, max_t, reduction_factor, s)
            for s in range(max(brackets, 1))
        ]
        usable = sum(1 for m in milestones if m)
        if brackets < 1 or usable < brackets:
            raise ValueError(
                f"brackets must be in [1, {max(usable, 1)}] for grace_period={grace_period}, "
                f"max_t={max_t}, reduction_factor={reduction_factor}, got brackets={brackets}"
            )
        super().__init__()
        self._time_attr = time_attr
        self._max_t = max_t
        self._grace_period = grace_period
        self._reduction_factor = reduction_factor
        modes = [mode for _, mode in self._objectives]
        self._brackets: list[list[_Rung]] = [
            [_Rung(m, reduction_factor, modes) for m in bracket] for bracket in milestones
        ]
        self._trial_bracket: dict[str, int] = {}
        self._num_stopped = 0

    # ------------------------------------------------------------------ properties
    @property
    def metric(self) -> str:
        """The primary objective's name: the one key Tune checks every result for."""
        return self._objectives[0][0]

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        """The ``(name, mode)`` pairs, primary first."""
        return self._objectives

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Called by Tune with ``TuneConfig.metric``/``mode``.  The objectives are fixed at
        construction, so a metric or mode from elsewhere is refused (False makes Tune raise its
        "scheduler already has its own metric" error)."""
        return metric is None and mode is None

    # ------------------------------------------------------------------ Tune callbacks
    def on_trial_add(self, tune_controller: "TuneController", trial: "Trial") -> None:
        """Assign the new trial to a bracket; with several brackets, at random with softmax
        weights on the rung counts, drawn from ``np.random`` exactly as Ray's ASHA draws."""
        if len(self._brackets) == 1:
            self._trial_bracket[trial.trial_id] = 0
            return
        sizes = np.array([len(b) for b in self._brackets])
        probs = np.e ** (sizes - sizes.max())
        self._trial_bracket[trial.trial_id] = int(
            np.random.choice(len(self._brackets), p=probs / probs.sum())
        )

    def on_trial_result(
        self, tune_controller: "TuneController", trial: "Trial", result: Mapping[str, Any]
    ) -> str:
        """Decide CONTINUE or STOP for a trial that just reported ``result``."""
        if self._time_attr not in result or trial.trial_id not in self._trial_bracket:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            action = TrialScheduler.STOP
        else:
            keep = _decide_in_bracket(
                self._brackets[self._trial_bracket[trial.trial_id]],
                trial.trial_id,
                result[self._time_attr],
                self._minimised(result),
                self._violation(result),
            )
            action = TrialScheduler.CONTINUE if keep else TrialScheduler.STOP
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(
        self, tune_controller: "TuneController", trial: "Trial", result: Mapping[str, Any]
    ) -> None:
        """Record the trial's last result at any rung it reached without being judged there
        (as Ray's ASHA does) and forget the trial."""
        bracket = self._trial_bracket.pop(trial.trial_id, None)
        if bracket is None or not result or self._time_attr not in result:
            return
        _decide_in_bracket(
            self._brackets[bracket],
            trial.trial_id,
            result[self._time_attr],
            self._minimised(result),
            self._violation(result),
        )

    def on_trial_remove(self, tune_controller: "TuneController", trial: "Trial") -> None:
        """Forget a trial removed while pending or paused."""
        self._trial_bracket.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: "TuneController", trial: "Trial") -> None:
        """Forget an errored trial; its recorded rung vectors stay (they were real results)."""
        self._trial_bracket.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        names = ", ".join(f"{n} ({m})" for n, m in self._objectives)
        lines = [f"Using MultiObjectiveASHA on [{names}]: num_stopped={self._num_stopped}"]
        for i, rungs in enumerate(self._brackets):
            lines.append(f"Bracket {i}: " + " | ".join(r.summary() for r in rungs))
        return "\n".join(lines)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: options (checked on restore), the trial -> bracket
        map, the stop counter and every rung's recorded vectors.  Plain JSON types only."""
        return {
            "version": _STATE_VERSION,
            "options": self._options(),
            "num_stopped": self._num_stopped,
            "trial_bracket": dict(self._trial_bracket),
            "brackets": [[rung.state() for rung in rungs] for rungs in self._brackets],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output into a scheduler built with the same options.

        Raises:
            ValueError: the state is from another version or was saved with other options.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"unsupported MultiObjectiveASHA state version {state.get('version')!r}, "
                f"expected {_STATE_VERSION}"
            )
        saved = state["options"]
        ours = self._options()
        changed = sorted(k for k in ours if saved.get(k) != ours[k])
        if changed:
            raise ValueError(
                "cannot restore a MultiObjectiveASHA saved with different options: "
                + ", ".join(f"{k}: saved {saved.get(k)!r}, now {ours[k]!r}" for k in changed)
            )
        for rungs, saved_rungs in zip(self._brackets, state["brackets"]):
            for rung, saved_rung in zip(rungs, saved_rungs):
                rung.load_state(saved_rung)
        self._trial_bracket = {tid: int(b) for tid, b in state["trial_bracket"].items()}
        self._num_stopped = int(state["num_stopped"])

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`state_dict` as JSON (NaN allowed) to ``checkpoint_path``."""
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(self.state_dict(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Read a file written by :meth:`save` and :meth:`load_state_dict` it."""
        with open(checkpoint_path, encoding="utf-8") as f:
            self.load_state_dict(json.load(f))

    # ------------------------------------------------------------------ helpers
    def _options(self) -> dict[str, Any]:
        options = {
            "objectives": [list(p) for p in self._objectives],
            "time_attr": self._time_attr,
            "max_t": self._max_t,
            "grace_period": self._grace_period,
            "reduction_factor": self._reduction_factor,
            "brackets": len(self._brackets),
        }
        if self._constraints:  # absent otherwise, so states saved before constraints still load
            options["constraints"] = dict(self._constraints)
        return options

    def _violation(self, result: Mapping[str, Any]) -> float:
        """Sum of ``result``'s positive relative constraint violations (0: feasible so far)."""
        from rayprune.search.results import constraint_violations

        return float(sum(v for v in constraint_violations(result, self._constraints).values() if v > 0))

    def _minimised(self, result: Mapping[str, Any]) -> np.ndarray:
        """(k,) objective vector of ``result`` with max objectives negated; a missing, None or
        non-numeric objective becomes NaN (ranked worst)."""
        values = []
        for name, mode in self._objectives:
            value = result.get(name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = float("nan")
            values.append(-value if mode == "max" else value)
        return np.array(values, dtype=float)


def create_scheduler(
    kind: str,
    *,
    objectives: Sequence[tuple[str, str]],
    time_attr: str = "training_iteration",
    max_t: float = 100,
    grace_period: float = 1,
    reduction_factor: float = 4,
    constraints: Mapping[str, float | None] | None = None,
) -> TrialScheduler:
    """Build the trial scheduler named by ``kind`` for the search's declared objectives.

    Args:
        kind: ``"mo_asha"`` (:class:`MultiObjectiveASHA` on all objectives), ``"asha"`` (Ray's
            ``ASHAScheduler`` on the primary objective only, the scalar fallback) or ``"fifo"``
            (no early stopping).
        objectives: ``[(name, "min"|"max"), ...]``, primary first; validated for every kind.
        time_attr, max_t, grace_period, reduction_factor: ASHA's budget options (ignored by
            ``fifo`` but still validated, so a bad spec fails the same way for every kind).
        constraints: ``objective.constraints``, honoured by ``mo_asha`` (infeasible reports rank
            after feasible ones); Ray's ``asha`` and ``fifo`` do not look at them.

    Returns:
        a scheduler with its own metric and mode: leave ``TuneConfig.metric``/``mode`` unset.

    Raises:
        ValueError, TypeError: unknown ``kind`` (the message lists the valid ones) or bad options.
    """
    if kind not in SCHEDULER_KINDS:
        raise ValueError(f"unknown scheduler kind={kind!r}; allowed: {list(SCHEDULER_KINDS)}")
    pairs = _validate_objectives(objectives)
    _validate_budget(time_attr, max_t, grace_period, reduction_factor)
    if kind == "fifo":
        return FIFOScheduler()
    if kind == "asha":
        name, mode = pairs[0]
        return ASHAScheduler(
            time_attr=time_attr,
            metric=name,
            mode=mode,
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
    return MultiObjectiveASHA(
        objectives=pairs,
        time_attr=time_attr,
        max_t=max_t,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        constraints=constraints,
    )
