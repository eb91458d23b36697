"""MLflow tracking: the only module that imports mlflow (lazily).

Trials never open the MLflow store (ECOSYSTEM.md pains 5 and 6): the driver logs everything
through :class:`~rayprune.tracking.callback.MLflowTrackingCallback`, a Ray Tune callback of ours.  Ray's own
``MLflowLoggerCallback`` has no parent-run option and issues one request per metric (pain 16),
so this callback creates one *parent* run per search and one *child* run per trial (the
``mlflow.parentRunId`` tag, accepted by ``MlflowClient.create_run`` without an ACTIVE check) and
writes with ``log_batch``.

Default store: a SQLite file at an absolute path inside the search directory, artifacts next to
it; ``--tracking-uri`` points at a server instead.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

from rayprune.tracking.base import register_active_tracker

__all__ = ["default_tracking_uri", "SearchTracker", "flat_params"]

# Metrics worth a per-evaluation curve in the UI (few per child, ECOSYSTEM pain 13).
_LOGGED_METRIC_PREFIXES = (
    "sparsity", "target_sparsity", "scheduled_sparsity", "train_loss", "budget_fraction", "step",
    "seconds", "method/",
)


def default_tracking_uri(search_dir: Path) -> str:
    """``sqlite:////abs/path/mlflow.db`` inside the search directory (never relative)."""
    return f"sqlite:///{(Path(search_dir).resolve() / 'mlflow.db').as_posix()}"


def flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Flat, comparable param names: ``method``, ``target_sparsity``, ``magnitude.selection``..."""
    return {str(k): str(v)[:6000] for k, v in sorted(config.items())}


class SearchTracker:
    """Owns the experiment, the parent run and the trial -> child run map.

    The map is saved to ``tracking.json`` in the search directory so a resumed search reattaches
    to its runs (ECOSYSTEM pain 7).
    """

    def __init__(self, tracking_uri: str, experiment: str, search_dir: Path, *,
                 tags: Mapping[str, str] | None = None, metric_names: set[str] = frozenset()):
        import mlflow
        from mlflow.tracking import MlflowClient

        # What a restored callback needs to rebuild this tracker (see MLflowTrackingCallback).
        self.init_args = {"tracking_uri": tracking_uri, "experiment": experiment,
                          "search_dir": str(search_dir), "tags": dict(tags or {}),
                          "metric_names": sorted(metric_names)}

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.tracking_uri = tracking_uri
        self.metric_names = set(metric_names)  # per-evaluation curves logged besides the prefixes
        self.search_dir = Path(search_dir)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._mlflow = mlflow
        state_file = self.search_dir / "tracking.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if tracking_uri.startswith("sqlite:"):
                artifact_location = (self.search_dir / "mlartifacts").resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # created concurrently by another search: use it
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.parent_run_id = state.get("parent_run_id")
        if self.parent_run_id is not None:  # a resumed search: the parent runs again
            self.client.update_run(self.parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"search-{self.search_dir.name}",
                tags={"rayprune.role": "search", **(tags or {})},
            )
            self.parent_run_id = run.info.run_id
        self.child_runs: dict[str, str] = dict(state.get("child_runs", {}))
        # Trials that finished, stopped early or failed, in this search or before a resume.
        self.ended_trials: set[str] = set(state.get("ended_trials", []))
        # Set when the experiment ends: trials cut off by an interruption, and how many there were.
        self.unfinished_trials: list[str] = []
        self.trials_seen = 0
        self._state_file = state_file
        self._save()
        register_active_tracker(search_dir, self)

    def _save(self) -> None:
        self._state_file.write_text(json.dumps({
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
            "child_runs": self.child_runs,
            "ended_trials": sorted(self.ended_trials),
        }, indent=1))

    # -------------------------------------------------------------------- children
    def start_trial(self, trial_id: str, config: Mapping[str, Any]) -> str:
        from mlflow.entities import Param

        if trial_id in self.child_runs:  # resumed trial: same run, params already logged
            run_id = self.child_runs[trial_id]
            self.client.update_run(run_id, status="RUNNING")
            if self.client.get_run(run_id).data.tags.get("interrupted"):
                self.client.delete_tag(run_id, "interrupted")
                self.client.set_tag(run_id, "resumed", "true")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_id,
            tags={"mlflow.parentRunId": self.parent_run_id, "rayprune.role": "trial",
                  "rayprune.trial_id": trial_id, "method": str(config.get("method"))},
        )
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flat_params(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.child_runs[trial_id] = run_id
        self._save()
        return run_id

    def log_result(self, trial_id: str, result: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        run_id = self.child_runs.get(trial_id)
        if run_id is None:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
            and (k in self.metric_names or k.startswith(_LOGGED_METRIC_PREFIXES))
        ]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def end_trial(self, trial_id: str, status: str, tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import RunTag

        run_id = self.child_runs.get(trial_id)
        if run_id is None:
            return
        if status != "KILLED" or not (tags or {}).get("interrupted"):
            self.ended_trials.add(trial_id)
            self._save()
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    # -------------------------------------------------------------------- parent
    def log_search_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flat_params(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_run_id, params=items[i : i + 100])

    def log_pareto(self, front_rows: list[dict], all_rows: list[dict], *, metric: str, hypervolume: float,
                   figure_png: Path | None, figure_html: Path | None, table_csv: Path | None) -> None:
        """Pareto artifacts on the parent run and ``pareto=true`` tags on the members."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[
            Metric("pareto_hypervolume", float(hypervolume), now, 0),
            Metric("pareto_size", float(len(front_rows)), now, 0),
            Metric("trials_completed", float(len(all_rows)), now, 0),
        ])
        for path, folder in ((table_csv, "pareto"), (figure_png, "pareto"), (figure_html, "pareto")):
            if path is not None and Path(path).exists():
                self.client.log_artifact(self.parent_run_id, str(path), artifact_path=folder)
        front_ids = {r["trial_id"] for r in front_rows}
        for row in all_rows:
            run_id = self.child_runs.get(row["trial_id"])
            if run_id:
                self.client.log_batch(run_id, tags=[RunTag("pareto", "true" if row["trial_id"] in front_ids else "false")])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)
