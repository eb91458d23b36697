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


def _row(trial_id, target, accuracy, sparsity, status="complete", verdict="ok", reason=""):
    return {"trial_id": trial_id, "method": "magnitude", "target_sparsity": target, "accuracy": accuracy,
            "sparsity": sparsity, "status": status, "verdict": verdict, "verdict_reason": reason,
            "retained": accuracy / 0.9}


def _artifact(tracker, run_id: str, path: str) -> str:
    """An artifact's text, read where the default store keeps it (what `rayprune ui` serves)."""
    from rayprune.tracking.mlflow_tracker import local_artifact_dir

    return (local_artifact_dir(tracker.search_dir, tracker.artifact_location, run_id) / path).read_text()


def test_the_mlflow_view_explains_the_search(tmp_path):
    """What the UI shows: the runs-table experiment kind, readable run names and params, tags on
    every trial (stopped and collapsed ones included), the parent's note with the front linked
    to its runs, the front as a table artifact, each trial's config.yaml, and one hypervolume
    point per ended trial while the search runs."""
    import json

    import yaml

    tracker = make_tracker(tmp_path)
    tracker.log_reference({"accuracy": 0.9}, metric="accuracy", floor=0.5,
                          info={"reference": "bundled:minilm-l6", "reference_trained": True, "reference_steps": 8})
    rows = {"good": _row("good", 0.5, 0.85, 0.5), "sparse": _row("sparse", 0.8, 0.7, 0.8),
            "flat": _row("flat", 0.9, 0.5, 0.9, verdict="collapsed", reason="accuracy 0.50 not above the floor 0.50"),
            "cut": _row("cut", 0.7, 0.6, 0.35, status="stopped")}
    ended = []

    def refresh(results):  # what the driver's hook does: the front over the trials ended so far
        ended_rows = [rows[r.metrics["trial_id"]] for r in results]
        front = [r for r in ended_rows if r["status"] == "complete" and r["verdict"] == "ok"]
        ended.append(len(results))
        tracker.log_pareto(front, ended_rows, metric="accuracy", hypervolume=0.1 * len(front))

    callback = MLflowTrackingCallback(tracker, on_trial_end=refresh)
    trials = []
    for trial_id, row in rows.items():
        trial = SimpleNamespace(
            trial_id=trial_id, status="RUNNING", checkpoint=None, path=str(tmp_path / trial_id),
            config={"method": "magnitude", "target_sparsity": row["target_sparsity"] + 0.0123456,
                    "learning_rate": 3.14159265e-5},
            last_result={"trial_id": trial_id, "budget_fraction": 1.0 if row["status"] == "complete" else 0.5})
        trials.append(trial)
        callback.on_trial_start(0, trials, trial)
        callback.on_trial_result(0, trials, trial, {"accuracy": row["accuracy"], "sparsity": row["sparsity"],
                                                    "target_sparsity": 0.5, "step": 4, "train_loss": 0.3})
    for trial in trials:
        callback.on_trial_complete(0, trials, trial)
    callback.on_experiment_end(trials)
    final_front = [rows["good"], rows["sparse"]]
    tracker.log_pareto(final_front, list(rows.values()), metric="accuracy", hypervolume=0.2)  # the end's write
    assert tracker.finish() == 0
    assert ended == [1, 2, 3, 4]

    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("exp")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == "mlflow-artifacts:/exp"  # proxied: no absolute path in the store
    runs = client.search_runs([exp.experiment_id])
    children = {r.data.tags["rayprune.trial_id"]: r for r in runs if r.data.tags.get("rayprune.role") == "trial"}
    assert set(children) == set(rows)
    good = children["good"]
    assert good.info.run_name == "magnitude-s0.51-good"
    assert good.data.params == {"method": "magnitude", "target_sparsity": "0.5123", "learning_rate": "3.142e-05"}
    assert not set(good.data.metrics) & {"target_sparsity", "step"}
    assert set(good.data.metrics) >= {"accuracy", "sparsity", "train_loss"}
    config = yaml.safe_load(_artifact(tracker, good.info.run_id, "config.yaml"))
    assert config == {"method": "magnitude", "target_sparsity": 0.5123456, "learning_rate": 3.14159265e-5}
    expected = {"good": ("true", "false", "false"), "sparse": ("true", "false", "false"),
                "flat": ("false", "true", "false"), "cut": ("false", "false", "true")}
    for trial_id, (pareto, collapsed, stopped) in expected.items():
        tags = children[trial_id].data.tags
        assert (tags["pareto"], tags["collapsed"], tags["stopped_early"]) == (pareto, collapsed, stopped), trial_id
        assert tags["verdict"] == rows[trial_id]["verdict"]
    assert children["flat"].data.tags["verdict_reason"].startswith("accuracy 0.50 not above")
    assert children["cut"].info.status == "KILLED"

    parent = client.get_run(tracker.parent_run_id)
    reference = next(r for r in runs if r.data.tags.get("role") == "reference")
    assert reference.data.metrics["accuracy"] == 0.9 and reference.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.metrics["reference_accuracy"] == 0.9 and parent.data.metrics["floor_accuracy"] == 0.5
    history = client.get_metric_history(parent.info.run_id, "pareto_hypervolume")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.2), (4, 0.2)]
    note = parent.data.tags["mlflow.note.content"]
    link = f"(#/experiments/{exp.experiment_id}/runs/{good.info.run_id}?workflowType=machine_learning)"
    assert f"[magnitude-s0.51-good]{link}" in note
    assert "bundled:minilm-l6" in note and "0.9000" in note and "Floor" in note and "0.5000" in note
    assert "4 — 2 completed, 1 stopped early, 1 collapsed, 0 failed" in note, note
    assert "stopped_early=true" in note and "(running)" not in note
    table = json.loads(_artifact(tracker, parent.info.run_id, "pareto/front.json"))
    assert table["columns"][:5] == ["run", "method", "target_sparsity", "sparsity", "accuracy"]
    assert [r[0] for r in table["data"]] == ["magnitude-s0.51-good", "magnitude-s0.81-sparse"]  # replaced, not appended
    assert json.loads(parent.data.tags["mlflow.loggedArtifacts"]) == [{"path": "pareto/front.json", "type": "table"}]


def test_ui_links_point_at_the_runs_table_the_front_and_the_parent(tmp_path):
    from rayprune.tracking.ui import ui_links, ui_server_command

    tracker = make_tracker(tmp_path)
    links = ui_links(tmp_path, "http://127.0.0.1:5000/")
    runs = f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs"
    layout = "workflowType=machine_learning"  # the UI's "Model training" layout, not GenAI's
    assert links == {"runs": f"{runs}?{layout}",
                     "front": f"{runs}?{layout}&searchFilter=tags.pareto%20%3D%20%27true%27",
                     "parent": f"{runs}/{tracker.parent_run_id}?{layout}"}
    command = ui_server_command(tmp_path, port=5001)
    assert command[command.index("--artifacts-destination") + 1] == str((tmp_path / "mlartifacts").resolve())
    assert "--serve-artifacts" in command


def test_precision_is_one_tag_of_each_trial_run_never_a_metric(tmp_path):
    """The loop reports ``numeric_precision`` (a string) with every evaluation: each child run gets it as
    the tag ``numeric_precision``, sent once, and no ``numeric_precision`` metric or param."""
    tracker = make_tracker(tmp_path)
    callback = MLflowTrackingCallback(tracker)
    sent = []
    submit = tracker._submit
    tracker._submit = lambda record: (sent.append(record), submit(record))
    for trial_id, precision in (("t1", "bf16"), ("t2", "fp32")):
        trial = fake_trial(trial_id)
        callback.on_trial_start(0, [], trial)
        for step in (10, 20, 30):
            callback.on_trial_result(0, [], trial, {"step": step, "accuracy": 0.5 + step / 100, "sparsity": 0.5,
                                                    "numeric_precision": precision, "training_iteration": step // 10})
        callback.on_trial_complete(0, [], trial)
    tracker.log_reference({"accuracy": 0.9, "numeric_precision": "fp32"}, metric="accuracy", floor=0.5,
                          info={"reference": "m", "reference_trained": True, "reference_steps": 3})

    client = MlflowClient(default_tracking_uri(tmp_path))
    for trial_id, precision in (("t1", "bf16"), ("t2", "fp32")):
        run = client.get_run(tracker.child_runs[trial_id])
        assert run.data.tags["numeric_precision"] == precision
        assert "numeric_precision" not in run.data.metrics and "numeric_precision" not in run.data.params
        assert client.get_metric_history(run.info.run_id, "numeric_precision") == []
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [10, 20, 30]
        tagged = [r for r in sent if r.get("run") == trial_id and "numeric_precision" in r.get("tags", {})]
        assert len(tagged) == 1, tagged  # once, not with every report
        assert not any(m[0] == "numeric_precision" for r in sent if r.get("run") == trial_id for m in r.get("metrics", []))
    reference = client.get_run(tracker.reference_run_id)
    assert reference.data.tags["numeric_precision"] == "fp32" and "numeric_precision" not in reference.data.metrics


def test_saved_state_grows_by_appending_and_old_directories_still_resume(tmp_path):
    """Per-trial state is appended (one line per change) while ``tracking.json`` keeps only the
    search-level part, so a save costs the same at trial 1,000 as at trial 1; a search directory
    written before the split (the whole map in ``tracking.json``) resumes with its map intact."""
    import json

    tracker = make_tracker(tmp_path)
    callback = MLflowTrackingCallback(tracker)
    header_size = None
    for i in range(12):
        trial = fake_trial(f"t{i}")
        callback.on_trial_start(0, [], trial)
        callback.on_trial_complete(0, [], trial)
        size = (tmp_path / "tracking.json").stat().st_size
        assert header_size in (None, size)  # the header does not grow with the trials
        header_size = size
    lines = (tmp_path / "tracking_trials.jsonl").read_text().splitlines()
    assert len(lines) == 12 * 3  # a name, a run and an end per trial
    tracking._ACTIVE_TRACKERS.clear()
    resumed = make_tracker(tmp_path)
    assert resumed.child_runs == tracker.child_runs and resumed.ended_trials == tracker.ended_trials
    assert resumed.run_names == tracker.run_names

    # An older directory: the map lived in tracking.json; resuming twice must not lose it.
    state = json.loads((tmp_path / "tracking.json").read_text())
    state.update(child_runs=tracker.child_runs, run_names=tracker.run_names,
                 ended_trials=sorted(tracker.ended_trials), hypervolume={})
    (tmp_path / "tracking.json").write_text(json.dumps(state))
    (tmp_path / "tracking_trials.jsonl").unlink()
    for _ in range(2):
        tracking._ACTIVE_TRACKERS.clear()
        again = make_tracker(tmp_path)
        assert again.child_runs == tracker.child_runs and again.ended_trials == tracker.ended_trials
    assert "child_runs" not in json.loads((tmp_path / "tracking.json").read_text())
