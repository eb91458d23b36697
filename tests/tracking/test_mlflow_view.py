"""What rayprune writes for the MLflow UI (issue 26 §5): the runs-table views the printed links
open, a child's full config.yaml, verdict_reason on every judged trial, the order of a child's
metrics, the reference run's real duration, and the lean server's environment.  A real SQLite
store, no Ray."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import yaml
from mlflow.tracking import MlflowClient

from rayprune.tracking.callback import MLflowTrackingCallback
from rayprune.tracking.mlflow_tracker import SearchTracker, default_tracking_uri, local_artifact_dir
from rayprune.tracking.summary import row_tags
from rayprune.tracking.ui import ui_links, ui_server_command, ui_server_env


def make_tracker(search_dir) -> SearchTracker:
    return SearchTracker(default_tracking_uri(search_dir), "exp", search_dir, metric_names={"accuracy", "f1"})


def trial(trial_id: str, **config):
    return SimpleNamespace(trial_id=trial_id, config={"method": "magnitude", "target_sparsity": 0.5, **config},
                           last_result={"budget_fraction": 1.0})


def test_the_printed_links_open_views_with_the_trials_and_their_numbers(tmp_path):
    """The runs link opens a shared view (an experiment tag MLflow's UI reads) that lists the
    trials, not one collapsed parent, with method, target, sparsity, the metric and retained as
    columns, best metric first; the front link the same over ``tags.pareto = 'true'``."""
    tracker = make_tracker(tmp_path)
    tracker.log_reference({"accuracy": 0.9}, metric="accuracy", floor=0.5, info={"reference": "none"})
    client = MlflowClient(default_tracking_uri(tmp_path))
    tags = client.get_experiment(tracker.experiment_id).tags
    trials_view = json.loads(tags["mlflow.sharedViewState.rayprune-trials"])
    front_view = json.loads(tags["mlflow.sharedViewState.rayprune-front"])
    expected = ["params.`method`", "params.`target_sparsity`", "metrics.`sparsity`", "metrics.`accuracy`",
                "metrics.`retained`", "tags.`verdict`", "tags.`pareto`"]
    for view in (trials_view, front_view):
        assert view["selectedColumns"] == expected
        assert view["columnOrder"] == ["attributes.`Run Name`", *expected]
        assert view["columnWidths"]["attributes.`Run Name`"] >= 250  # the trial id is not cut
    assert trials_view["searchFilter"] == "tags.`rayprune.role` != 'search'"  # trials as top-level rows
    assert (trials_view["orderByKey"], trials_view["orderByAsc"]) == ("metrics.`accuracy`", False)
    assert front_view["searchFilter"] == "tags.`pareto` = 'true'"
    # MLflow's search takes the filters: every run but the parent (here the reference), no front yet.
    shown = client.search_runs([tracker.experiment_id], filter_string=trials_view["searchFilter"])
    assert [r.info.run_id for r in shown] == [tracker.reference_run_id]
    assert client.search_runs([tracker.experiment_id], filter_string=front_view["searchFilter"]) == []

    links = ui_links(tmp_path, "http://127.0.0.1:5000")
    runs = f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs"
    assert links["runs"] == f"{runs}?workflowType=machine_learning&viewStateShareKey=rayprune-trials"
    assert links["front"] == f"{runs}?workflowType=machine_learning&viewStateShareKey=rayprune-front"

    sent = []
    tracker._submit = lambda record: sent.append(record)
    tracker.log_reference({"accuracy": 0.9}, metric="accuracy", floor=0.5, info={"reference": "none"})
    assert not [r for r in sent if r["op"] == "experiment_tag"]  # once per search, also on resume


def _search_json(search_dir: Path) -> dict:
    meta = {"spec": {"data": {"task": "demo", "max_train_samples": 64}, "name": "s"},
            "settings": {"model": "bundled:minilm-l6", "metric": "accuracy", "steps": 8, "batch_size": 4},
            "data": {"data_dir": None, "num_labels": 2}}
    (search_dir / "search.json").write_text(json.dumps(meta))
    return meta


def test_a_child_config_yaml_is_the_config_rayprune_train_reruns(tmp_path):
    """config.yaml of a trial's run is what `rayprune export` writes for it (model, data, training,
    the trial): not only the sampled keys."""
    from rayprune.config.trial_file import train_config_for

    meta = _search_json(tmp_path)
    tracker = make_tracker(tmp_path)
    config = {"method": "magnitude", "target_sparsity": 0.5123456, "learning_rate": 3.14159265e-5}
    tracker.start_trial("t1", config)
    text = (local_artifact_dir(tmp_path, tracker.artifact_location, tracker.child_runs["t1"]) / "config.yaml").read_text()
    assert yaml.safe_load(text) == train_config_for(meta, config)
    assert list(yaml.safe_load(text)) == ["model", "data", "data_dir", "metric", "training", "trial"]


def test_every_judged_trial_has_a_verdict_reason_ok_ones_included(tmp_path):
    ok = {"trial_id": "a", "status": "complete", "verdict": "ok", "verdict_reason": "", "accuracy": 0.85,
          "budget_fraction": 1.0}
    stopped = {**ok, "trial_id": "b", "status": "stopped", "budget_fraction": 0.25}
    assert row_tags(ok, {"a"}, metric="accuracy", floor=0.5)["verdict_reason"] == (
        "accuracy 0.8500 is clearly above the floor 0.5000 and meets the objective's criteria")
    assert "stopped early, budget fraction 0.25" in row_tags(stopped, set(), metric="accuracy", floor=0.5)["verdict_reason"]
    assert row_tags({**ok, "verdict": "collapsed", "verdict_reason": "below"}, set())["verdict_reason"] == "below"
    assert "verdict_reason" not in row_tags({"trial_id": "c", "status": "running"}, set())  # not judged yet

    tracker = make_tracker(tmp_path)
    tracker.start_trial("a", {"method": "magnitude", "target_sparsity": 0.5})
    tracker.log_pareto([ok], [ok], metric="accuracy", hypervolume=0.1, floor=0.5)
    tags = MlflowClient(default_tracking_uri(tmp_path)).get_run(tracker.child_runs["a"]).data.tags
    assert tags["verdict"] == "ok" and tags["verdict_reason"].startswith("accuracy 0.8500 is clearly above")


def test_a_child_lists_the_metric_sparsity_and_retained_before_the_method_diagnostics(tmp_path):
    """MLflow lists a run's metrics in the order they were first logged; the loop's report puts
    the method's diagnostics first."""
    tracker = make_tracker(tmp_path)
    tracker.log_reference(None, metric="accuracy", floor=0.5, info={"reference": "none"})
    callback = MLflowTrackingCallback(tracker)
    callback.on_trial_start(0, [], trial("t1"))
    callback.on_trial_result(0, [], trial("t1"), {
        "method/mask_changed_last": 0.01, "method/returned": 0.0, "train_loss": 0.3, "seconds": 4.0,
        "scheduled_sparsity": 0.5, "budget_fraction": 0.5, "sparsity_encoder": 0.5, "f1": 0.8,
        "retained": 0.9, "sparsity": 0.5, "accuracy": 0.85, "step": 10})
    metrics = list(MlflowClient(default_tracking_uri(tmp_path)).get_run(tracker.child_runs["t1"]).data.metrics)
    assert metrics[:4] == ["accuracy", "sparsity", "retained", "f1"], metrics
    assert metrics[-2:] == ["method/mask_changed_last", "method/returned"], metrics


def test_the_reference_run_shows_how_long_the_reference_trained(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "reference.json").write_text("{}")
    ended = time.time() - 600
    os.utime(reference / "reference.json", (ended, ended))
    tracker = make_tracker(tmp_path)
    tracker.log_reference({"accuracy": 0.9, "seconds": 37.5}, metric="accuracy", floor=0.5,
                          info={"reference": str(reference), "reference_trained": True, "reference_steps": 8})
    info = MlflowClient(default_tracking_uri(tmp_path)).get_run(tracker.reference_run_id).info
    assert info.end_time == int(ended * 1000) and info.end_time - info.start_time == 37500


def test_rayprune_ui_starts_mlflow_without_its_genai_job_workers():
    command = ui_server_command("/tmp/some-search")
    assert command[command.index("--workers") + 1] == "1"
    env = ui_server_env({"PATH": "/bin"})
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and env["PATH"] == "/bin"
    assert ui_server_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_the_parent_note_links_the_front_to_the_compare_view_in_model_training(tmp_path):
    tracker = make_tracker(tmp_path)
    rows = [{"trial_id": t, "method": "magnitude", "target_sparsity": s, "accuracy": a, "sparsity": s,
             "status": "complete", "verdict": "ok", "verdict_reason": ""} for t, s, a in (("a", 0.5, 0.9), ("b", 0.8, 0.7))]
    for row in rows:
        tracker.start_trial(row["trial_id"], {"method": "magnitude", "target_sparsity": row["sparsity"]})
    tracker.log_pareto(rows, rows, metric="accuracy", hypervolume=0.3, floor=0.5)
    note = MlflowClient(default_tracking_uri(tmp_path)).get_run(tracker.parent_run_id).data.tags["mlflow.note.content"]
    ids = "%2C%20".join(f"%22{tracker.child_runs[t]}%22" for t in ("a", "b"))
    assert (f"[Compare the front](#/compare-runs?runs=%5B{ids}%5D&experiments=%5B%22{tracker.experiment_id}%22%5D"
            f"&workflowType=machine_learning)") in note
