"""A new search's SQLite MLflow store: created by MLflow's migrations once, copied afterwards."""

from __future__ import annotations

import sqlite3

from mlflow.tracking import MlflowClient

from rayprune.tracking.mlflow_tracker import create_store_in_background, schema_template


def _revision(db) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("select version_num from alembic_version").fetchone()[0]


def test_the_first_store_becomes_the_template_and_later_ones_copy_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    template = schema_template()
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    first.parent.mkdir(), second.parent.mkdir()

    thread = create_store_in_background(f"sqlite:///{first}")
    assert thread is not None  # no template yet: MLflow's migrations, in the background
    thread.join()
    assert template.is_file() and _revision(template) == _revision(first)

    assert create_store_in_background(f"sqlite:///{second}") is None  # copied, nothing to wait for
    client = MlflowClient(tracking_uri=f"sqlite:///{second}")
    experiment = client.create_experiment("copied", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.9}
    assert _revision(second) == _revision(first)
    assert [e.name for e in MlflowClient(tracking_uri=f"sqlite:///{first}").search_experiments()] == ["Default"]


def test_an_existing_store_is_left_alone_and_the_template_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPRUNE_CACHE_DIR", "")
    assert schema_template() is None
    db = tmp_path / "mlflow.db"
    thread = create_store_in_background(f"sqlite:///{db}")
    thread.join()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    client.create_experiment("kept")
    monkeypatch.setenv("RAYPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    create_store_in_background(f"sqlite:///{db}").join()  # opened, not replaced
    assert "kept" in [e.name for e in client.search_experiments()]
    assert not schema_template().exists()  # only a store created from scratch becomes the template
