"""The Ray Tune callback that mirrors every trial into a tracker (the only Ray import of
``rayprune.tracking``)."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from rayprune.search.results import reached_full_budget
from rayprune.tracking.base import active_tracker

__all__ = ["MLflowTrackingCallback", "TrackingCallback"]


class MLflowTrackingCallback(Callback):
    """Ray Tune callback (runs on the driver) mirroring every trial into a child MLflow run.

    ``Tuner.restore`` does not take new callbacks: it unpickles the ones the search started with
    (Ray supports only stateless callbacks across a restore, ECOSYSTEM pain 7).  So the pickle
    holds no state, only how to find the tracker: the live one of this search directory when the
    driver has made it (``run_search`` does before restoring), else one rebuilt from
    ``tracking.json``.  Either way the trial -> run map is the current one, and a resumed trial
    logs into its existing run.
    """

    def __init__(self, tracker) -> None:
        self.tracker = tracker

    def __getstate__(self) -> dict:
        return {"init_args": self.tracker.init_args}

    def __setstate__(self, state: dict) -> None:
        args = dict(state["init_args"])
        live = active_tracker(args["search_dir"])
        if live is None:
            from rayprune.tracking.mlflow_tracker import SearchTracker

            args["search_dir"] = Path(args["search_dir"])
            args["metric_names"] = set(args["metric_names"])
            live = SearchTracker(**args)
        self.tracker = live

    def on_trial_start(self, iteration, trials, trial, **info):
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

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.end_trial(trial.trial_id, "FAILED", tags={"error": "true"})

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
