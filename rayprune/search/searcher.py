"""The searcher: Ray's ``OptunaSearch`` with fidelity handling, one sampler table, in a
``ConcurrencyLimiter``."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from rayprune.config import SearchSpec, define_by_run
from rayprune.search.results import constraint_violations, reached_full_budget

__all__ = ["FidelityAwareOptunaSearch", "create_searcher", "study_storage", "STUDY_FILE", "SAMPLERS"]


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable again.

    Optuna 5.1's ``NSGAIISampler`` keeps a ``threading.Lock`` (``_thread_lock``), and Ray's
    ``Tuner`` pickles the searcher, and so the sampler, into the experiment directory before the
    first trial: every ``search.algorithm: nsga2`` search failed there with "cannot pickle
    '_thread.lock' object".  The lock guards the sampler's per-process generation cache, so a
    fresh one after unpickling is what it needs.  Written here because neither Optuna nor Ray
    offers a picklable variant."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if "_thread_lock" in state:
            state["_thread_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        import threading

        self.__dict__.update(state)
        if "_thread_lock" in state:
            self._thread_lock = threading.Lock()


#: ``search.algorithm`` -> Optuna sampler class (each takes ``seed=``).
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "nsga2": PicklableNSGAIISampler,
    "random": optuna.samplers.RandomSampler,
}


class FidelityAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna PRUNED for trials stopped before their full budget.

    Ray's OptunaSearch reports scheduler-stopped trials COMPLETE with their partial-budget values
    (ECOSYSTEM.md pain 2), which would mix rung-1 accuracies at low sparsity into TPE's model and
    into ``study.best_trials``.  A trial's last result carries ``budget_fraction``; below 1 it was
    stopped early.

    With ``constraints`` (``objective.constraints``), a full-budget trial's constraint values
    (:func:`rayprune.search.results.constraint_violations`, feasible iff all <= 0) are set on its
    Optuna trial before it is told COMPLETE (``Trial.set_constraint``, Optuna 5): the trainable
    never sees the Optuna trial, so it happens here, on the driver.  TPE and NSGA-II then rank
    infeasible trials after feasible ones, and ``study.best_trials`` holds feasible ones only.
    """

    def __init__(self, *args, constraints: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._constraints = {k: v for k, v in (constraints or {}).items() if v is not None}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pending = not error and result and trial_id in self._ot_trials and trial_id not in self._completed_trials
        if pending and not reached_full_budget(result.get("budget_fraction", 1.0)):
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        if pending and self._constraints:
            trial = self._ot_trials[trial_id]
            violations = constraint_violations(result, self._constraints)
            for name in self._constraints:  # unmeasured: violated, so it never counts as feasible
                trial.set_constraint(name, violations.get(name, 1.0))
        super().on_trial_complete(trial_id, result=result, error=error)


#: The Optuna study's file in the search directory (``optuna-dashboard sqlite:///<dir>/optuna.db``).
STUDY_FILE = "optuna.db"


def study_storage(search_dir) -> optuna.storages.RDBStorage:
    """The search's Optuna study storage: SQLite in the search directory, outside Ray's pickles,
    so ``optuna-dashboard`` shows the study while the search runs.  The searcher pickled in Ray's
    experiment state holds this storage (its URL, not its rows), so a resumed search continues
    the same study."""
    from pathlib import Path

    return optuna.storages.RDBStorage(f"sqlite:///{(Path(search_dir) / STUDY_FILE).resolve()}")


def create_searcher(spec: SearchSpec, *, constraints: dict | None = None, search_dir=None):
    """The search's searcher: Optuna on both objectives, seeded, papers' points first, told the
    trials' ``constraints`` (``objective.constraints``).  With ``search_dir``, the study is
    :func:`study_storage` there, named after the search."""
    from ray.tune.search import ConcurrencyLimiter

    names = [m for m, _ in spec.objectives]
    modes = [d for _, d in spec.objectives]
    storage = study_storage(search_dir) if search_dir is not None else None
    searcher = FidelityAwareOptunaSearch(
        space=define_by_run(spec), metric=names, mode=modes,
        sampler=SAMPLERS[spec.algorithm](seed=spec.seed, **spec.search.sampler_options()),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None, constraints=constraints,
        storage=storage, study_name=spec.name if storage is not None else None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
