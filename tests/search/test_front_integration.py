"""A real small search that judges its trials (local Ray, real SQLite MLflow store, tiny BERT on a
keyword task it learns in 60 steps): the dense reference is trained once, is the teacher of the
distilling trials and is reused on resume; a trial trained with a vanishing learning rate is
collapsed (at the floor); one over ``max_parameters`` is infeasible and told to Optuna so; a
diverging one fails at once.  None of them is on the front or exported by ``--top``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from keyword_task import keyword_data

from helpers import save_tiny_bert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def judged_search(tmp_path_factory):
    import ray

    from rayprune.config import Distribution, load_spec
    from rayprune.methods import get_method
    from rayprune.models import load_model_and_tokenizer, prunable_targets
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search

    root = tmp_path_factory.mktemp("judged")
    tiny = str(save_tiny_bert(root / "tiny"))
    model, _ = load_model_and_tokenizer(tiny, num_labels=2)
    named = dict(model.named_parameters())
    prunable = sum(named[t].numel() for t in prunable_targets(model, get_method("magnitude").default_scope))
    total = sum(p.numel() for p in model.parameters())
    # Non-zero parameters at 50 % sparsity exceed this bound, at 90 % they do not.
    max_parameters = int(total - 0.7 * prunable)
    space = {
        "name": "judged",
        "model": tiny,
        "data": keyword_data(root / "data"),
        "objective": {"metric": "accuracy", "constraints": {"max_parameters": max_parameters}},
        "reference": {"learning_rate": 3.0e-3},
        "training": {"steps": 60, "batch_size": 16, "eval_interval": 30, "learning_rate": 3.0e-3},
        "budget": {"num_samples": 4, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"algorithm": "tpe", "seed": 0},
        "space": {"method": "magnitude", "target_sparsity": {"choice": [0.5, 0.9]},
                  "learning_rate": {"choice": [3.0e-3, 1.0e-9]}, "distill.alpha": 0.5,
                  "schedule.start": 0.0, "schedule.end": 0.5},
        "points_to_evaluate": [
            {"target_sparsity": 0.5, "learning_rate": 3.0e-3},   # good but over max_parameters
            {"target_sparsity": 0.9, "learning_rate": 3.0e-3},   # good and feasible
            {"target_sparsity": 0.9, "learning_rate": 1.0e-9},   # never leaves the constant predictor
            {"target_sparsity": 0.9, "learning_rate": 1.0e-9},   # replaced below by a diverging one
        ],
    }
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    spec = load_spec(path)
    # The spec refuses learning rates above 1; a user who gets one past it (or any diverging
    # run) must still end as a failed trial, so it is set here behind the validation.
    spec.space["learning_rate"] = Distribution("choice", (3.0e-3, 1.0e-9, 1.0e30))
    spec.points_to_evaluate[3] = {"target_sparsity": 0.9, "learning_rate": 1.0e30}
    prepared = prepare_search(spec, output=root / "runs")
    messages: list[str] = []
    # "local": a fresh instance, never a cluster some other job left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        summary = run_search(prepared, verbose=0, log=messages.append)
        resumed = run_search(prepared, verbose=0, resume=True, log=messages.append)
    finally:
        ray.shutdown()
    return spec, prepared, summary, resumed, messages


def _by_lr(rows):
    return {(json.loads(r["config"])["learning_rate"], json.loads(r["config"])["target_sparsity"]): r for r in rows}


def test_each_trial_gets_its_verdict_and_only_ok_ones_are_on_the_front(judged_search):
    _, _, summary, _, _ = judged_search
    rows = _by_lr(summary["rows"])
    infeasible, good, collapsed, diverged = rows[(3e-3, 0.5)], rows[(3e-3, 0.9)], rows[(1e-9, 0.9)], rows[(1e30, 0.9)]
    assert good["verdict"] == "ok" and good["accuracy"] > 0.9
    assert good["retained"] == pytest.approx(good["accuracy"] / summary["reference"]["reference_metric"])
    assert collapsed["status"] == "complete" and collapsed["verdict"] == "collapsed"
    assert "floor" in collapsed["verdict_reason"]
    assert infeasible["verdict"] == "infeasible" and "max_parameters" in infeasible["verdict_reason"]
    assert infeasible["accuracy"] > 0.9  # a good model, kept off the front by the constraint only
    assert diverged["status"] == "failed" and diverged["verdict"] == "failed"
    assert "non-finite" in diverged["verdict_reason"]
    assert [r["trial_id"] for r in summary["front"]] == [good["trial_id"]]
    search_dir = Path(summary["search_dir"])
    with open(search_dir / "results.csv") as fh:
        saved = {r["trial_id"]: r["verdict"] for r in csv.DictReader(fh)}
    assert saved[collapsed["trial_id"]] == "collapsed" and saved[diverged["trial_id"]] == "failed"
    pareto = json.loads((search_dir / "pareto.json").read_text())
    assert pareto["hypervolume_reference_point"] == {"accuracy": pareto["floor"], "sparsity": 0.0}
    assert pareto["floor"] == pytest.approx(collapsed["accuracy"])  # the constant predictor's score
    assert {r["trial_id"] for r in pareto["excluded"]} == {collapsed["trial_id"], infeasible["trial_id"]}


def test_the_reference_is_trained_once_reused_on_resume_and_is_the_teacher(judged_search):
    _, _, summary, resumed, messages = judged_search
    search_dir = Path(summary["search_dir"])
    assert sum("training the dense reference" in m for m in messages) == 1
    meta = json.loads((search_dir / "search.json").read_text())
    assert meta["settings"]["teacher_dir"] == str((search_dir / "reference").resolve())
    assert meta["settings"]["reference_metric"] == summary["reference"]["reference_metric"] > 0.9
    assert resumed["reference"] == summary["reference"]
    assert [r["trial_id"] for r in resumed["front"]] == [r["trial_id"] for r in summary["front"]]


def test_the_infeasible_trial_is_told_to_optuna_as_infeasible(judged_search):
    from rayprune.search.searcher import create_searcher

    spec, _, summary, _, _ = judged_search
    meta = json.loads((Path(summary["search_dir"]) / "search.json").read_text())
    searcher = create_searcher(spec, constraints=meta["settings"]["constraints"])
    searcher.restore_from_dir(str(Path(summary["search_dir"]) / meta["ray_storage"]))  # relative to it
    study = searcher.searcher._ot_study
    by_point = {(t.params["learning_rate"], t.params["target_sparsity"]): t for t in study.trials}
    assert by_point[(3e-3, 0.5)].constraints["max_parameters"] > 0
    assert by_point[(3e-3, 0.9)].constraints["max_parameters"] <= 0
    assert by_point[(1e30, 0.9)].state.name == "FAIL"
    assert by_point[(1e-9, 0.9)].state.name == "COMPLETE"  # Optuna learns a collapsed trial's real values
    assert [t.params["target_sparsity"] for t in study.best_trials] == [0.9]
    assert all(t.params["learning_rate"] == 3e-3 for t in study.best_trials)


def test_top_k_export_skips_collapsed_infeasible_and_failed_trials(judged_search, tmp_path):
    from rayprune.export import export_search

    _, _, summary, _, _ = judged_search
    written = export_search(summary["search_dir"], tmp_path / "out", top=4, log=lambda m: None)
    good = _by_lr(summary["rows"])[(3e-3, 0.9)]
    assert [json.loads((w / "rayprune.json").read_text())["trial_id"] for w in written] == [good["trial_id"]]
