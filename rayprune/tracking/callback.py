"""The Ray Tune callback that mirrors every trial into a tracker (the only Ray import of
``rayprune.tracking``)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from ray.tune import Callback

from rayprune.fidelity import reached_full_budget
from rayprune.tracking.base import active_tracker

__all__ = ["MLflowTrackingCallback", "TrackingCallback"]

_logger = logging.getLogger(__name__)


class MLflowTrackingCallback(Callback):
    """Ray Tune callback (runs on the driver) mirroring every trial into a child MLflow run.

    ``Tuner.restore`` does not take new callbacks: it unpickles the ones the search started with
    (Ray supports only stateless callbacks across a restore, ECOSYSTEM pain 7).  So the pickle
    holds no state, only how to find the tracker: the live one of this search directory when the
    driver has made it (``run_search`` does before restoring), else one rebuilt from
    ``tracking.json``.  Either way the trial -> run map is the current one, and a resumed trial
    logs into its existing run.

    ``on_trial_end``: called after every trial that finishes, is stopped or fails, with one
    result per ended trial so far (the attributes of a ``ray.tune.Result`` that
    :func:`rayprune.search.results.collect_rows` reads: ``metrics``, ``config``, ``error``,
    ``checkpoint``, ``path``); the driver refreshes the front with it, so MLflow shows the
    hypervolume and the front while the search runs.  The hook is kept on the tracker, not in
    the pickle, so a restored callback finds the one the resumed driver set.
    """

    def __init__(self, tracker, on_trial_end: Callable[[list], None] | None = None) -> None:
        self.tracker = tracker
        if on_trial_end is not None:
            tracker.on_trial_end = on_trial_end
        self._errored: set[str] = set()
        self._ended_results: dict[str, SimpleNamespace] = {}

    def __getstate__(self) -> dict:
        return {"init_args": self.tracker.init_args}

    def __setstate__(self, state: dict) -> None:
        args = dict(state["init_args"])
        self._errored = set()
        self._ended_results = {}
        live = active_tracker(args["search_dir"])
        if live is None:
            from rayprune.tracking.mlflow_tracker import SearchTracker

            args["search_dir"] = Path(args["search_dir"])
            args["metric_names"] = set(args["metric_names"])
            live = SearchTracker(**args)
        self.tracker = live

    def on_trial_start(self, iteration, trials, trial, **info):
        self._ended_results.pop(trial.trial_id, None)  # runs again (a resume): its result will change
        self.tracker.start_trial(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_result(trial.trial_id, result, step=int(result.get("step", result.get("training_iteration", 0))))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        full = reached_full_budget(last.get("budget_fraction", 0.0))
        self.tracker.end_trial(
            trial.trial_id,
            "FINISHED" if full else "KILLED",
            tags={"stopped_early": str(not full).lower()},
        )
        self._trial_ended(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._errored.add(trial.trial_id)
        self.tracker.end_trial(trial.trial_id, "FAILED", tags={"error": "true", "stopped_early": "false"})
        self._trial_ended(trials)

    def _trial_ended(self, trials) -> None:
        """Run the driver's ``on_trial_end`` hook over the trials that ended so far.  A failing
        refresh is logged and the search goes on: the front written when it ends is the one
        that counts (and raises if the failure is real)."""
        hook = getattr(self.tracker, "on_trial_end", None)
        if hook is None:
            return
        # An ended trial's result is made once and kept: remaking every ended trial's after
        # each trial end (``trial.path`` alone is a few pathlib joins) made the search's
        # driver time grow with the square of its trials (benchmarks/bench_driver_scale.py).
        ended = []
        for t in trials:
            if t.trial_id in self.tracker.ended_trials:
                result = self._ended_results.get(t.trial_id)
                if result is None:
                    result = self._ended_results[t.trial_id] = self._as_result(t)
                ended.append(result)
        try:
            hook(ended)
        except Exception:
            _logger.warning("refreshing the front after a trial ended failed", exc_info=True)

    def _as_result(self, trial) -> SimpleNamespace:
        errored = trial.trial_id in self._errored or trial.status == "ERROR"
        error = None
        if errored:
            error = RuntimeError(self._error_text(trial))
        return SimpleNamespace(metrics=dict(trial.last_result or {}), config=dict(trial.config), error=error,
                               checkpoint=trial.checkpoint, path=trial.path)

    @staticmethod
    def _error_text(trial) -> str:
        """The trial's error as Ray wrote it (its error file), else a generic line."""
        path = getattr(trial, "error_file", None) or ""
        try:
            return Path(path).read_text() if path and Path(path).is_file() else "trial errored"
        except OSError:
            return "trial errored"

    def on_experiment_end(self, trials, **info):
        """Called once when ``Tuner.fit`` ends, also after an interruption (Ctrl-C).  Trials that
        never completed nor failed were cut off (``trial.status`` is no guide here: Ray's cleanup
        may already have set it); their runs are marked KILLED with ``interrupted=true``, and a
        resumed search sets them RUNNING again."""
        tracker = self.tracker
        tracker.trials_seen = len(trials)
        tracker.unfinished_trials = [t.trial_id for t in trials if t.trial_id not in tracker.ended_trials]
        for trial_id in tracker.unfinished_trials:
            tracker.end_trial(trial_id, "KILLED", tags={"interrupted": "true"})


#: The callback works over any :class:`~rayprune.tracking.base.Tracker`.
TrackingCallback = MLflowTrackingCallback
