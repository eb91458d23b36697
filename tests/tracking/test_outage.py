"""Tracking through a real ``mlflow server`` on loopback that goes away and comes back (issue 11),
and a search directory that is moved and still serves its artifacts (issue 9).

The tracker calls are those the Ray callback makes during a search (start, results, end, the
live front), without Ray: what is under test is what reaches MLflow.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from mlflow_server import MlflowServer
from rayprune import tracking
from rayprune.tracking.callback import MLflowTrackingCallback
from rayprune.tracking.mlflow_tracker import SearchTracker, default_tracking_uri, sync_search_dir
from rayprune.tracking.uris import TRACKING_TIMEOUTS
from rayprune.tracking.ui import ui_server_command

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    """The timeouts the driver sets for itself (configure_tracking_timeouts), for this test only."""
    for key, value in TRACKING_TIMEOUTS.items():
        monkeypatch.setenv(key, value)
    tracking._ACTIVE_TRACKERS.clear()


def _trial(trial_id: str, target: float, budget: float = 1.0):
    return SimpleNamespace(trial_id=trial_id, status="RUNNING", checkpoint=None, path=f"/nowhere/{trial_id}",
                           config={"method": "magnitude", "target_sparsity": target},
                           last_result={"trial_id": trial_id, "budget_fraction": budget})


def _report(callback, trials, trial, step: int) -> float:
    """One evaluation as the callback gets it; returns how long the tracker took."""
    start = time.monotonic()
    callback.on_trial_result(0, trials, trial, {"accuracy": 0.5 + step / 100, "sparsity": 0.5, "step": step})
    return time.monotonic() - start


def _trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("rayprune.role") == "trial"]


def test_a_server_that_goes_away_twice_ends_with_every_trial_exactly_once(tmp_path, capfd):
    server = MlflowServer(tmp_path / "server").start()
    uri = f"http://alice:s3cret@127.0.0.1:{server.port}"  # no auth on this server: the header is ignored
    search_dir = tmp_path / "search"
    search_dir.mkdir()
    tracker = SearchTracker(uri, "outage", search_dir, metric_names={"accuracy"})
    tracker.retry_interval_s = 2.0
    front_calls = []

    def refresh(results):  # the driver's live front: the ended trials' rows
        rows = [{"trial_id": r.metrics["trial_id"], "method": "magnitude", "target_sparsity": 0.5,
                 "accuracy": 0.6, "sparsity": 0.5, "status": "complete", "verdict": "ok"} for r in results]
        front_calls.append(len(rows))
        tracker.log_pareto(rows[:1], rows, metric="accuracy", hypervolume=0.1 * len(rows))

    callback = MLflowTrackingCallback(tracker, on_trial_end=refresh)
    trials = [_trial("t1", 0.5), _trial("t2", 0.6), _trial("t3", 0.7)]
    t1, t2, t3 = trials
    try:
        callback.on_trial_start(0, trials, t1)
        for step in (4, 8):
            _report(callback, trials, t1, step)
        callback.on_trial_complete(0, trials, t1)
        callback.on_trial_start(0, trials, t2)
        _report(callback, trials, t2, 4)
        assert tracker.online and tracker.pending_records == 0

        server.kill()  # first outage: t2 goes on, t3 starts
        first = _report(callback, trials, t2, 8)
        assert first < 10, f"the first call to a dead server took {first:.1f} s"
        assert not tracker.online
        quick = [_report(callback, trials, t2, step) for step in (12, 16)]
        assert max(quick) < 0.5, quick  # journaled without waiting on MLflow
        callback.on_trial_complete(0, trials, t2)
        callback.on_trial_start(0, trials, t3)
        _report(callback, trials, t3, 4)
        assert tracker.pending_records > 0 and "t3" not in tracker.child_runs

        server.start()  # back: the next call after the retry interval replays the journal
        time.sleep(tracker.retry_interval_s)
        _report(callback, trials, t3, 8)
        assert tracker.online and tracker.pending_records == 0 and "t3" in tracker.child_runs

        server.kill()  # second outage, until after the search ended
        _report(callback, trials, t3, 12)
        callback.on_trial_complete(0, trials, t3)
        callback.on_experiment_end(trials)
        start = time.monotonic()
        pending = tracker.finish("FINISHED")
        assert pending > 0 and time.monotonic() - start < 10
        assert front_calls == [1, 2, 3]
        journal = (search_dir / "tracking_pending.jsonl").read_text()
        state = (search_dir / "tracking.json").read_text()
        for text in (journal, state, pickle.dumps(callback).decode("latin-1")):
            assert "s3cret" not in text and "alice" not in text

        server.start()
        sent, left = sync_search_dir(search_dir, uri)  # `rayprune sync DIR --tracking-uri URI`
        assert sent == pending and left == 0
        assert not (search_dir / "tracking_pending.jsonl").exists()
        # A resume replays a backlog first too: the same records again, via a resumed tracker.
        (search_dir / "tracking_pending.jsonl").write_text(journal)
        tracking._ACTIVE_TRACKERS.clear()
        resumed = SearchTracker(uri, "outage", search_dir, metric_names={"accuracy"})
        assert resumed.pending_records == 0 and resumed.child_runs == tracker.child_runs
        assert resumed.finish("FINISHED") == 0

        client = MlflowClient(server.url)
        runs = _trial_runs(client, "outage")
        assert sorted(r.data.tags["rayprune.trial_id"] for r in runs) == ["t1", "t2", "t3"]
        assert {r.info.status for r in runs} == {"FINISHED"}
        by_trial = {r.data.tags["rayprune.trial_id"]: r for r in runs}
        for trial_id, steps in (("t1", [4, 8]), ("t2", [4, 8, 12, 16]), ("t3", [4, 8, 12])):
            history = client.get_metric_history(by_trial[trial_id].info.run_id, "accuracy")
            assert sorted(m.step for m in history) == steps, trial_id
        parent = client.get_run(tracker.parent_run_id)
        assert parent.info.status == "FINISHED"
        hv = client.get_metric_history(parent.info.run_id, "pareto_hypervolume")
        assert sorted(m.step for m in hv) == [1, 2, 3]
        note = parent.data.tags["mlflow.note.content"]
        assert "**Trials**: 3 — 3 completed" in note and "[magnitude-s0.50-t1](#/experiments/" in note
        config = [a.path for a in client.list_artifacts(by_trial["t3"].info.run_id)]
        assert config == ["config.yaml"]

        # A create whose answer was lost (the server made the run, the driver never heard):
        # replaying the same records again finds the run instead of making a second one.
        records = journal.splitlines()
        trials_file = search_dir / "tracking_trials.jsonl"
        changes = [json.loads(line) for line in trials_file.read_text().splitlines()]
        kept = [c for c in changes if c.get("child") != "t3"]
        assert len(kept) == len(changes) - 1
        trials_file.write_text("".join(json.dumps(c) + "\n" for c in kept))
        (search_dir / "tracking_pending.jsonl").write_text("\n".join(records) + "\n")
        assert sync_search_dir(search_dir, uri)[1] == 0
        runs = _trial_runs(client, "outage")
        assert len(runs) == 3
        t3_run = next(r for r in runs if r.data.tags["rayprune.trial_id"] == "t3")
        assert t3_run.info.run_id == by_trial["t3"].info.run_id
        assert sorted(m.step for m in client.get_metric_history(t3_run.info.run_id, "accuracy")) == [4, 8, 12]
        printed = capfd.readouterr()
        assert "s3cret" not in printed.out + printed.err and "is not answering" in printed.err
    finally:
        server.kill()


def test_a_moved_search_directory_serves_its_artifacts(tmp_path):
    """The default store records artifact locations as ``mlflow-artifacts:/...``; the server
    `rayprune ui` starts resolves them under the directory it is given, wherever that now is."""
    original = tmp_path / "here" / "search"
    original.mkdir(parents=True)
    tracker = SearchTracker(default_tracking_uri(original), "moved", original, metric_names={"accuracy"})
    callback = MLflowTrackingCallback(tracker)
    trial = _trial("t1", 0.5)
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_complete(0, [trial], trial)
    (original / "pareto.csv").write_text("trial_id,accuracy\nt1,0.6\n")
    row = {"trial_id": "t1", "method": "magnitude", "target_sparsity": 0.5, "accuracy": 0.6, "sparsity": 0.5,
           "status": "complete", "verdict": "ok"}
    tracker.log_pareto([row], [row], metric="accuracy", hypervolume=0.1, table_csv=original / "pareto.csv")
    tracker.finish()
    parent_id, child_id = tracker.parent_run_id, tracker.child_runs["t1"]

    moved = tmp_path / "elsewhere" / "search"
    shutil.copytree(original, moved)
    shutil.rmtree(tmp_path / "here")
    server = MlflowServer(tmp_path / "ui")
    server.command = ui_server_command(moved, port=server.port)
    server.start()
    try:
        listed = server.get_json("/api/2.0/mlflow/artifacts/list", run_id=parent_id, path="pareto")
        assert {f["path"] for f in listed["files"]} >= {"pareto/pareto.csv", "pareto/front.json"}
        assert server.get("/get-artifact", path="pareto/pareto.csv", run_uuid=parent_id) == b"trial_id,accuracy\nt1,0.6\n"
        table = json.loads(server.get("/get-artifact", path="pareto/front.json", run_uuid=parent_id))
        assert table["data"][0][0] == "magnitude-s0.50-t1"
        assert b"target_sparsity: 0.5" in server.get("/get-artifact", path="config.yaml", run_uuid=child_id)
    finally:
        server.kill()
