"""SearchTracker and its Tune callback on a real SQLite MLflow store (no Ray cluster needed)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from rayprune import tracking
from rayprune.tracking.callback import MLflowTrackingCallback
from rayprune.tracking.mlflow_tracker import SearchTracker, default_tracking_uri


def make_tracker(search_dir) -> SearchTracker:
    return SearchTracker(default_tracking_uri(search_dir), "exp", search_dir, metric_names={"accuracy"})


def fake_trial(trial_id: str, budget: float = 1.0):
    return SimpleNamespace(trial_id=trial_id, config={"method": "magnitude", "target_sparsity": 0.5},
                           last_result={"budget_fraction": budget})


def test_restored_callback_uses_the_live_tracker_or_the_saved_map(tmp_path):
    """Tuner.restore unpickles the callbacks the search started with; they must log into the
    current runs, not into a stale copy (which would open a second run per resumed trial)."""
    tracker = make_tracker(tmp_path)
    callback = MLflowTrackingCallback(tracker)
    frozen = pickle.dumps(callback)  # what Ray stores at Tuner creation, before any trial
    callback.on_trial_start(0, [], fake_trial("t1"))
    run_id = tracker.child_runs["t1"]

    assert pickle.loads(frozen).tracker is tracker  # the driver's live tracker
    tracking._ACTIVE_TRACKERS.clear()  # a new driver process: rebuilt from tracking.json
    restored = pickle.loads(frozen)
    assert restored.tracker is not tracker and restored.tracker.child_runs == {"t1": run_id}
    restored.on_trial_start(0, [], fake_trial("t1"))
    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("exp")
    children = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("rayprune.role") == "trial"]
    assert [r.info.run_id for r in children] == [run_id]


def test_experiment_end_marks_cut_off_trials_killed_and_resume_reopens_them(tmp_path):
    tracker = make_tracker(tmp_path)
    callback = MLflowTrackingCallback(tracker)
    done, cut = fake_trial("done"), fake_trial("cut", budget=0.5)
    for trial in (done, cut):
        callback.on_trial_start(0, [], trial)
    callback.on_trial_complete(0, [], done)
    callback.on_experiment_end([done, cut])  # Ctrl-C while "cut" was running
    assert tracker.unfinished_trials == ["cut"] and tracker.trials_seen == 2
    client = MlflowClient(default_tracking_uri(tmp_path))
    cut_run = client.get_run(tracker.child_runs["cut"])
    assert cut_run.info.status == "KILLED" and cut_run.data.tags["interrupted"] == "true"
    assert client.get_run(tracker.child_runs["done"]).info.status == "FINISHED"

    tracking._ACTIVE_TRACKERS.clear()
    resumed = make_tracker(tmp_path)  # `--resume`: same directory, same runs
    assert resumed.parent_run_id == tracker.parent_run_id
    assert client.get_run(resumed.parent_run_id).info.status == "RUNNING"
    assert resumed.ended_trials == {"done"}
    again = MLflowTrackingCallback(resumed)
    again.on_trial_start(0, [], cut)
    run = client.get_run(tracker.child_runs["cut"])
    assert run.info.status == "RUNNING" and "interrupted" not in run.data.tags and run.data.tags["resumed"] == "true"
    again.on_trial_complete(0, [], fake_trial("cut"))
    again.on_experiment_end([done, fake_trial("cut")])
    assert resumed.unfinished_trials == []
