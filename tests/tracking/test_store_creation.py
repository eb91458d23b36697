"""The default SQLite store's schema is created in the background, beside ``ray.init``
(``create_store_in_background``): the tracker then opens a ready store, and nothing else is
written to it."""

from __future__ import annotations

from rayprune.tracking.mlflow_tracker import SearchTracker, create_store_in_background, default_tracking_uri


def test_the_background_thread_creates_the_schema_and_the_tracker_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPRUNE_CACHE_DIR", "")  # no template to copy: MLflow's migrations run
    uri = default_tracking_uri(tmp_path)
    thread = create_store_in_background(uri)
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive() and (tmp_path / "mlflow.db").stat().st_size > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments()] == ["Default"]  # tables only, no runs
    tracker = SearchTracker(uri, "bg", tmp_path)
    assert client.get_run(tracker.parent_run_id).info.status == "RUNNING"
    tracker.finish("FINISHED")


def test_a_server_uri_needs_no_background_work():
    assert create_store_in_background("http://127.0.0.1:5000") is None
