"""Driver pieces that need no cluster: the searcher's fidelity handling, Pareto tables, teacher cache."""

from __future__ import annotations

import json

import pytest
import yaml
from optuna.trial import TrialState

from rayprune.search.results import write_pareto
from rayprune.search.searcher import create_searcher
from rayprune.config import parse_spec

SPACE = {
    "model": "bundled:minilm-l6",
    "data": {"task": "demo"},
    "training": {"steps": 10},
    "objective": {"metric": "accuracy"},
    "budget": {"num_samples": 3, "max_concurrent": 3},
    "space": {"method": {"choice": ["magnitude", "movement"]}, "target_sparsity": {"uniform": [0.5, 0.9]}},
    "points_to_evaluate": [{"method": "magnitude", "target_sparsity": 0.8}],
}


def test_scheduler_stopped_trials_are_told_pruned_and_full_ones_complete():
    spec = parse_spec(SPACE, path="s.yaml")
    limiter = create_searcher(spec)
    searcher = limiter.searcher
    first = limiter.suggest("t1")
    assert first["method"] == "magnitude" and first["target_sparsity"] == 0.8  # paper default first
    limiter.suggest("t2")
    limiter.suggest("t3")
    limiter.on_trial_complete("t1", {"accuracy": 0.9, "sparsity": 0.8, "budget_fraction": 1.0})
    limiter.on_trial_complete("t2", {"accuracy": 0.6, "sparsity": 0.3, "budget_fraction": 0.5})
    limiter.on_trial_complete("t3", None, error=True)
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    # only full-budget trials inform the study's Pareto set
    assert [t.values for t in searcher._ot_study.best_trials] == [[0.9, 0.8]]


def test_pareto_uses_only_full_budget_trials(tmp_path):
    rows = [
        {"trial_id": "a", "method": "magnitude", "target_sparsity": 0.5, "accuracy": 0.90, "sparsity": 0.5,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        {"trial_id": "b", "method": "magnitude", "target_sparsity": 0.9, "accuracy": 0.80, "sparsity": 0.9,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        {"trial_id": "c", "method": "movement", "target_sparsity": 0.7, "accuracy": 0.70, "sparsity": 0.6,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        # stopped early at a low sparsity with a high accuracy: must not enter the front
        {"trial_id": "d", "method": "movement", "target_sparsity": 0.9, "accuracy": 0.95, "sparsity": 0.95,
         "budget_fraction": 0.5, "status": "stopped", "config": "{}"},
    ]
    summary = write_pareto(tmp_path, rows, metric="accuracy")
    assert [r["trial_id"] for r in summary["front"]] == ["a", "b"]
    # hypervolume against (accuracy 0, sparsity 0): 0.9*0.5 + 0.8*(0.9-0.5)
    assert summary["hypervolume"] == pytest.approx(0.9 * 0.5 + 0.8 * 0.4)
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert [r["trial_id"] for r in saved["front"]] == ["a", "b"]
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "pareto.html").exists()
    assert (tmp_path / "results.csv").read_text().count("\n") == 5
