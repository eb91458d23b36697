"""The searcher: Ray's ``OptunaSearch`` with fidelity handling, one sampler table, in a
``ConcurrencyLimiter``."""

from __future__ import annotations

import logging
import random
import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from rayprune.config import SearchSpec, define_by_run
from rayprune.config.grid import config_key, finite_grid, grid_size
from rayprune.search.results import constraint_violations, reached_full_budget

__all__ = ["FidelityAwareOptunaSearch", "create_searcher", "study_storage", "STUDY_FILE", "SAMPLERS", "MAX_REDRAWS",
           "repeats_skipped", "space_exhausted"]

logger = logging.getLogger(__name__)


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


#: Repeated proposals in a row before an untried configuration is queued (a finite space) or the
#: repeat is run after all (an unbounded one); 50/10/5/2 measured alike (benchmarks/RESULTS.md).
MAX_REDRAWS = 5


def skip_duplicates_defaults() -> dict:
    """The repeat-skipping state of a searcher that does not skip repeats."""
    return {"_skip_duplicates": False, "_grid": None, "_untried_rng": random.Random(0), "_first_trial_of": {},
            "_grid_tried": 0, "_key_of": {}, "_outcome_of": {}, "_repeats_waiting": {}, "repeats_skipped": 0,
            "untried_drawn": 0}


class FidelityAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna PRUNED for trials stopped before their full budget, and
    never trains one configuration twice.

    Ray's OptunaSearch reports scheduler-stopped trials COMPLETE with their partial-budget values
    (ECOSYSTEM.md pain 2), which would mix rung-1 accuracies at low sparsity into TPE's model and
    into ``study.best_trials``.  A trial's last result carries ``budget_fraction``; below 1 it was
    stopped early.

    With ``constraints`` (``objective.constraints``), a full-budget trial's constraint values
    (:func:`rayprune.search.results.constraint_violations`, feasible iff all <= 0) are set on its
    Optuna trial before it is told COMPLETE (``Trial.set_constraint``, Optuna 5): the trainable
    never sees the Optuna trial, so it happens here, on the driver.  TPE and NSGA-II then rank
    infeasible trials after feasible ones, and ``study.best_trials`` holds feasible ones only.

    **Repeated proposals** (``skip_duplicates``, ``search.skip_duplicates``, on by default).  On
    a space of choices TPE keeps proposing the configurations it believes best: in a replayed
    90-point grid search a third of its trials repeated one already run (benchmarks/RESULTS.md).
    A trial is deterministic in its config (the training seed is part of it), so a repeat would
    spend a trial's compute to learn nothing.  When Optuna proposes a configuration
    (:func:`rayprune.config.grid.config_key`) that a trial of this search already ran or is
    running, that Optuna trial is not run: it is told the first trial's outcome (at once if
    known, else when the first trial ends; user attribute ``duplicate_of``) and Optuna is asked
    again, as Ray's ``BayesOptSearch(skip_duplicate=True)`` does.  In a finite space (``grid``,
    :func:`rayprune.config.grid.finite_grid`) every :data:`MAX_REDRAWS` repeats in a row queue an
    untried configuration drawn at random, and once every configuration was tried the searcher
    is finished; in an unbounded one the proposal after :data:`MAX_REDRAWS` repeats runs anyway.
    Written here because neither Optuna nor Ray's OptunaSearch skips repeats.
    """

    def __init__(self, *args, constraints: dict | None = None, skip_duplicates: bool = True,
                 grid: dict[str, dict] | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._constraints = {k: v for k, v in (constraints or {}).items() if v is not None}
        if self._ot_study is not None and isinstance(self._metric, list):
            # optuna-dashboard and Optuna's plots label the objectives "accuracy" and "sparsity"
            # instead of 0 and 1 (an experimental API since Optuna 3.2: its warning is silenced).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names(list(self._metric))
        self.__dict__.update(skip_duplicates_defaults())
        self._skip_duplicates = skip_duplicates
        self._grid = grid
        self._untried_rng = random.Random(seed)
        # _first_trial_of: config key -> the Ray trial that runs it; _grid_tried: configurations
        # of ``grid`` tried so far; _key_of: Ray trial id -> its config key; _outcome_of: config
        # key -> (state, values, constraints) once ended; _repeats_waiting: config key -> the
        # Optuna trials told its outcome when it ends.

    def __setstate__(self, state: dict) -> None:
        """A searcher pickled by a rayprune from before repeats were skipped (``--resume`` of an
        older search directory) goes on as it started: repeats run."""
        self.__dict__.update(skip_duplicates_defaults())
        self.__dict__.update(state)

    # ------------------------------------------------------------------ proposals
    def suggest(self, trial_id):
        if not self._skip_duplicates:
            return super().suggest(trial_id)
        repeats = 0
        while True:
            if self._grid is not None and self._grid_tried >= len(self._grid):
                return Searcher.FINISHED
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            key = config_key(config)
            first = self._first_trial_of.get(key)
            # An unbounded space almost never repeats itself; if its sampler keeps doing so, run it.
            if first is None or (self._grid is None and repeats >= MAX_REDRAWS):
                if first is None:
                    self._first_trial_of[key] = trial_id
                    self._grid_tried += self._grid is not None and key in self._grid
                self._key_of[trial_id] = key
                return config
            self._skip_repeat(trial_id, key, first)
            repeats += 1
            if self._grid is not None and repeats % MAX_REDRAWS == 0:
                # The sampler has settled on configurations already tried: queue an untried one,
                # at random.  Optuna's queue is first in, first out: it is proposed once the
                # points queued before it (points_to_evaluate) have been.
                untried = sorted(set(self._grid) - self._first_trial_of.keys())
                point = self._grid[self._untried_rng.choice(untried)]
                self._ot_study.enqueue_trial(point)  # its constants are not suggested: Optuna ignores them
                self.untried_drawn += 1

    def _skip_repeat(self, trial_id: str, key: str, first: str) -> None:
        """Detach the Optuna trial just asked for ``trial_id`` (a repeat of ``first``'s config)
        and give it ``first``'s outcome, now or when ``first`` ends."""
        repeat = self._ot_trials.pop(trial_id)
        repeat.set_user_attr("duplicate_of", self._ot_trials[first].number)
        self.repeats_skipped += 1
        if key in self._outcome_of:
            self._tell(repeat, *self._outcome_of[key])
        else:
            self._repeats_waiting.setdefault(key, []).append(repeat)

    # ------------------------------------------------------------------ outcomes
    def on_trial_complete(self, trial_id, result=None, error=False):
        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        outcome = self._outcome(result, error)
        self._tell(self._ot_trials[trial_id], *outcome)
        self._completed_trials.add(trial_id)
        key = self._key_of.get(trial_id)
        if key is not None:
            self._outcome_of[key] = outcome
            for repeat in self._repeats_waiting.pop(key, []):
                self._tell(repeat, *outcome)

    def _outcome(self, result, error: bool) -> tuple:
        """(state, values, constraint values) Optuna is told for a trial that ended so."""
        values = [result.get(m) for m in self._metric] if result else None
        if error or not result:
            return TrialState.FAIL if error else TrialState.PRUNED, None, {}
        if not reached_full_budget(result.get("budget_fraction", 1.0)) or any(v is None for v in values):
            return TrialState.PRUNED, None, {}
        violations = constraint_violations(result, self._constraints) if self._constraints else {}
        # unmeasured: violated, so it never counts as feasible
        return TrialState.COMPLETE, values, {name: violations.get(name, 1.0) for name in self._constraints}

    def _tell(self, ot_trial, state, values, constraints) -> None:
        for name, value in constraints.items():
            ot_trial.set_constraint(name, value)
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as err:  # e.g. a NaN metric; Ray's OptunaSearch logs and goes on too
            logger.warning("Optuna refused the outcome of trial %s: %s", ot_trial.number, err)


#: The Optuna study's file in the search directory (``optuna-dashboard sqlite:///<dir>/optuna.db``).
STUDY_FILE = "optuna.db"


class StudyStorage(optuna.storages.RDBStorage):
    """The search directory's ``optuna.db``, found again where the directory is now.

    Ray pickles the searcher, and with it this storage's URL (an absolute path), into the
    experiment state.  Unpickled while a resuming driver restores into a search directory
    (:func:`rayprune.search.storage.restoring_into`), it opens that directory's study file: a
    search directory copied or moved elsewhere resumes with its own study, not the original's
    (gone, or another search's)."""

    def __setstate__(self, state: dict) -> None:
        from rayprune.search.storage import search_dir_being_restored

        search_dir = search_dir_being_restored()
        if search_dir is not None:
            state = {**state, "url": _study_url(search_dir)}
        super().__setstate__(state)


def _study_url(search_dir) -> str:
    from pathlib import Path

    return f"sqlite:///{(Path(search_dir) / STUDY_FILE).resolve()}"


def study_storage(search_dir) -> optuna.storages.RDBStorage:
    """The search's Optuna study storage: SQLite in the search directory, outside Ray's pickles,
    so ``optuna-dashboard`` shows the study while the search runs.  The searcher pickled in Ray's
    experiment state holds this storage (its URL, not its rows), so a resumed search continues
    the same study (:class:`StudyStorage`: in the directory's current place)."""
    return StudyStorage(_study_url(search_dir))


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
        skip_duplicates=spec.search.skip_duplicates,
        grid=finite_grid(spec) if spec.search.skip_duplicates else None, seed=spec.seed,
        storage=storage, study_name=spec.name if storage is not None else None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)


def space_exhausted(spec: SearchSpec, trials_run: int) -> bool:
    """Whether ``trials_run`` trials have tried every configuration of ``spec``'s space (a
    finite space searched with ``search.skip_duplicates``: each trial ran a new one)."""
    if not spec.search.skip_duplicates:
        return False
    size = grid_size(spec)
    return size is not None and trials_run >= size


def repeats_skipped(search_dir, study_name: str) -> int | None:
    """How many of the study's proposals repeated a configuration already tried and were given
    its outcome instead of a trial (user attribute ``duplicate_of``); None without a study."""
    from pathlib import Path

    if not (Path(search_dir) / STUDY_FILE).is_file():
        return None
    try:
        study = optuna.load_study(study_name=study_name, storage=study_storage(search_dir))
    except KeyError:  # no study of that name (a search directory from before the study file)
        return None
    return sum("duplicate_of" in t.user_attrs for t in study.get_trials(deepcopy=False))
