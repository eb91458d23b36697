"""Replayed searches through the real driver (a local Ray, the real Tuner, OptunaSearch,
schedulers and MLflow tracking), on a small synthetic curve table written by the test with
:func:`rayprune.search.replay.write_curve_table`, and on the recorded table when it is present."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from rayprune.config import load_spec
from rayprune.errors import SpecError
from rayprune.search.replay import (
    check_grid, config_key, prepare_replay, read_curve_table, read_trial_reports, replay_trainable,
    write_curve_table,
)

RECORDED = Path(__file__).resolve().parents[2] / "benchmarks" / "curves" / "sst2_minilm.parquet"
METHODS = ("magnitude", "movement")
SPARSITIES = (0.5, 0.9)
LEARNING_RATES = (1e-4, 2e-4)
STEPS, INTERVAL, FLOOR, REFERENCE = 40, 10, 0.5, 0.86


def _curve(method: str, target: float, lr: float) -> list[float]:
    """Accuracy after each of the 4 evaluations: magnitude learns (less at 0.9), movement at 0.9
    collapses to the floor, and a higher learning rate helps a little."""
    if method == "movement" and target >= 0.9:
        return [0.55, 0.52, 0.5, 0.5]
    top = (0.84 if method == "magnitude" else 0.70) - (0.04 if target >= 0.9 else 0.0) + (0.01 if lr > 1e-4 else 0.0)
    return [top - 0.06, top - 0.03, top - 0.01, top]


def _synthetic_rows() -> list[dict]:
    rows, config_id = [], 0
    for method in METHODS:
        for target in SPARSITIES:
            for lr in LEARNING_RATES:
                config = {"method": method, "target_sparsity": target, "learning_rate": lr}
                for report, accuracy in enumerate(_curve(method, target, lr), start=1):
                    sparsity = target * min(1.0, report / 3)  # the ramp ends at the 3rd evaluation
                    rows.append({
                        "config_id": config_id, "config": json.dumps(config, sort_keys=True), "method": method,
                        "target_sparsity": target, "learning_rate": lr, "report": report,
                        "step": report * INTERVAL, "budget_fraction": report * INTERVAL / STEPS,
                        "sparsity": sparsity, "sparsity_encoder": sparsity * 0.98,
                        "retained": accuracy / REFERENCE, "train_loss": 0.7 - 0.05 * report,
                        "seconds": 2.0 * report + config_id * 0.1, "error": None, "accuracy": accuracy,
                    })
                config_id += 1
    return rows


def _meta() -> dict:
    return {
        "metric": "accuracy", "metrics": ["accuracy"], "floor": FLOOR, "reference": REFERENCE,
        "settings": {"model": "bundled:minilm-l6", "steps": STEPS, "eval_interval": INTERVAL, "batch_size": 16,
                     "learning_rate": 1e-4, "seed": 0},
        "data_info": {"task": "sst2", "num_labels": 2, "is_regression": False, "metrics": ["accuracy"],
                      "train_examples": 900, "selection_examples": 100, "eval_examples": 300,
                      "max_seq_length": 32},
    }


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_curve_table(_synthetic_rows(), tmp_path_factory.mktemp("curves") / "synthetic.parquet", _meta())


@pytest.fixture(scope="module")
def ray_local():
    import ray

    # "local": a fresh runtime for this module, never a cluster someone else started on the machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


#: The config whose recorded run failed by its own fault (its last report carries the error).
FAILING = {"method": "movement", "target_sparsity": 0.9, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def failing_table(tmp_path_factory) -> Path:
    rows = _synthetic_rows()
    for row in rows:
        if config_key(json.loads(row["config"])) == config_key(FAILING) and row["report"] == 4:
            row["error"] = "TrialFailed: non-finite loss at step 40"
    return write_curve_table(rows, tmp_path_factory.mktemp("curves") / "failing.parquet", _meta())


def _space(tmp_path: Path, name: str, *, scheduler: str = "fifo", algorithm: str = "random", num_samples: int = 8,
           max_concurrent: int = 2, grace: int = 1, points: list[dict] | None = None, search: dict | None = None,
           **space) -> Path:
    document = {
        "name": name, "model": "bundled:minilm-l6", "data": {"task": "sst2", "max_seq_length": 32},
        "training": {"steps": STEPS, "eval_interval": INTERVAL, "batch_size": 16},
        "budget": {"num_samples": num_samples, "max_concurrent": max_concurrent},
        "scheduler": {"kind": scheduler, "grace_period": grace, "reduction_factor": 2},
        "search": {"algorithm": algorithm, "seed": 0, **(search or {})},
        "space": space or {"method": {"choice": list(METHODS)}, "target_sparsity": {"choice": list(SPARSITIES)},
                           "learning_rate": {"choice": list(LEARNING_RATES)}},
    }
    if points:
        document["points_to_evaluate"] = points
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _replay(space_file: Path, table: Path, output: Path, *, time_scale: float = 0.001) -> tuple[dict, object]:
    from rayprune.search.driver import run_search

    prepared = prepare_replay(load_spec(space_file), table, output=output, time_scale=time_scale)
    summary = run_search(prepared, trainable=replay_trainable, verbose=0, log=lambda *a: None)
    return summary, prepared


def _grid() -> list[dict]:
    return [{"method": m, "target_sparsity": s, "learning_rate": lr}
            for m in METHODS for s in SPARSITIES for lr in LEARNING_RATES]


def test_table_round_trip(table):
    curves = read_curve_table(table)
    assert len(curves.curves) == 8 and curves.num_reports == 4
    assert curves.meta["floor"] == FLOOR and curves.total_trial_steps() == 8 * STEPS
    key = config_key({"method": "movement", "target_sparsity": 0.9, "learning_rate": 0.0001})
    assert [r["accuracy"] for r in curves.curves[key]] == _curve("movement", 0.9, 1e-4)


def test_replay_reproduces_the_table_report_for_report(table, tmp_path, ray_local):
    space = _space(tmp_path, "exact", points=_grid(), num_samples=8)
    summary, prepared = _replay(space, table, tmp_path / "out")
    reports = read_trial_reports(prepared.search_dir / "ray" / "tune")
    assert len(reports) == 8 * 4
    recorded = read_curve_table(table).curves
    replayed: dict[str, list[dict]] = {}
    for r in sorted(reports, key=lambda r: r["training_iteration"]):
        replayed.setdefault(config_key(r["config"]), []).append(r)
    assert set(replayed) == set(recorded)
    for key, rows in recorded.items():
        got = replayed[key]
        assert [g["training_iteration"] for g in got] == [1, 2, 3, 4]
        for g, want in zip(got, rows):
            for column in ("accuracy", "sparsity", "sparsity_encoder", "retained", "train_loss", "seconds", "step",
                           "budget_fraction"):
                assert g[column] == want[column], (key, column)
    assert summary["errors"] == 0 and all(r["status"] == "complete" for r in summary["rows"])


def _front_from_table(table: Path) -> set[str]:
    """The front computed directly from the table's final reports, with the driver's own rule
    (verdict ok, then non-dominated on metric and sparsity)."""
    from rayprune.pareto import pareto_front
    from rayprune.search.results import Criteria

    curves = read_curve_table(table)
    criteria = Criteria(metric="accuracy", floor=FLOOR, eval_examples=300, reference_metric=REFERENCE)
    finals = {k: {**c[-1], "status": "complete"} for k, c in curves.curves.items()}
    ok = [k for k, row in finals.items() if criteria.verdict(row)[0] == "ok"]
    points = np.array([[finals[k]["accuracy"], finals[k]["sparsity"]] for k in ok])
    return {ok[i] for i in pareto_front(points, ["max", "max"])}


def test_replayed_fifo_search_tries_each_grid_config_once_and_finds_the_table_front(table, tmp_path, ray_local):
    """num_samples 16 on a grid of 8: every configuration runs once, then the searcher has none
    left and the search ends, finished (not interrupted), with the table's front."""
    space = _space(tmp_path, "fifo", num_samples=16)
    summary, _ = _replay(space, table, tmp_path / "out")
    configs = [json.loads(r["config"]) for r in summary["rows"]]
    assert sorted(config_key(c) for c in configs) == sorted(config_key(p) for p in _grid())
    assert summary["space_exhausted"] and not summary["interrupted"]
    assert summary["repeats_skipped"] >= 1, "16 random draws from 8 points repeat some"
    front = {config_key(json.loads(r["config"])) for r in summary["front"]}
    assert front == _front_from_table(table)
    collapsed = {config_key(json.loads(r["config"])) for r in summary["rows"] if r["verdict"] == "collapsed"}
    assert collapsed == {config_key({"method": "movement", "target_sparsity": 0.9, "learning_rate": lr})
                         for lr in LEARNING_RATES}


def test_with_skip_duplicates_off_repeated_proposals_run_again(table, tmp_path, ray_local):
    space = _space(tmp_path, "repeats", num_samples=16, search={"skip_duplicates": False})
    summary, _ = _replay(space, table, tmp_path / "out")
    configs = [config_key(json.loads(r["config"])) for r in summary["rows"]]
    grid = {config_key(p) for p in _grid()}
    assert len(configs) == 16 and set(configs) <= grid and len(set(configs)) < 16
    assert not summary["space_exhausted"] and not summary["repeats_skipped"]


def test_mo_asha_stops_a_dominated_trial_and_keeps_high_sparsity(table, tmp_path, ray_local):
    """One at a time, in order: magnitude 0.5 (best accuracy), magnitude 0.9 (less accurate,
    sparser: non-dominated), movement 0.5 (dominated by magnitude 0.5 at the first rung)."""
    order = [{"method": "magnitude", "target_sparsity": 0.5, "learning_rate": 1e-4},
             {"method": "magnitude", "target_sparsity": 0.9, "learning_rate": 1e-4},
             {"method": "movement", "target_sparsity": 0.5, "learning_rate": 1e-4}]
    results = {}
    for kind in ("mo_asha", "asha"):
        space = _space(tmp_path, kind, scheduler=kind, num_samples=3, max_concurrent=1, points=order)
        summary, _ = _replay(space, table, tmp_path / "out")
        results[kind] = {config_key(json.loads(r["config"])): r for r in summary["rows"]}
    mo = results["mo_asha"]
    dominated, sparse = config_key(order[2]), config_key(order[1])
    assert mo[dominated]["status"] == "stopped" and mo[dominated]["budget_fraction"] == 0.25
    assert mo[sparse]["status"] == "complete" and mo[sparse]["pareto"]
    # Scalar ASHA on accuracy stops the sparse trial at the first rung: what MO-ASHA is for.
    assert results["asha"][sparse]["status"] == "stopped"


def test_fifty_replayed_trials_run_well_under_a_minute(table, tmp_path, ray_local):
    # The driver's throughput: 50 trials on the 8-point grid, so repeats must run.
    space = _space(tmp_path, "fifty", scheduler="mo_asha", algorithm="tpe", num_samples=50, max_concurrent=4,
                   search={"skip_duplicates": False})
    t0 = time.perf_counter()
    summary, _ = _replay(space, table, tmp_path / "out", time_scale=0.0)
    wall = time.perf_counter() - t0
    assert len(summary["rows"]) == 50 and summary["errors"] == 0
    assert wall < 45, f"50 replayed trials took {wall:.1f} s"


def test_off_grid_space_is_one_clean_error(table, tmp_path, capsys):
    from rayprune.cli import main

    space = _space(tmp_path, "offgrid", method={"choice": ["magnitude"]}, target_sparsity={"choice": [0.5, 0.8]},
                   learning_rate={"choice": list(LEARNING_RATES)})
    assert main(["search", "--space", str(space), "--replay", str(table), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "target_sparsity=0.8" in err[0] and "method='magnitude'" in err[0] and "not in the replay table" in err[0]
    assert not (tmp_path / "o" / "offgrid").exists(), "nothing started"


def test_range_and_mismatched_budget_are_refused(table, tmp_path):
    spec = load_spec(_space(tmp_path, "range", method="magnitude", target_sparsity={"uniform": [0.5, 0.9]}))
    with pytest.raises(SpecError, match=r"space.target_sparsity: a replayed search needs \{choice"):
        prepare_replay(spec, table, output=tmp_path)
    document = yaml.safe_load(_space(tmp_path, "steps").read_text())
    document["training"]["steps"] = 80
    (tmp_path / "steps.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError, match="training.steps: 80, but the replay table"):
        prepare_replay(load_spec(tmp_path / "steps.yaml"), table, output=tmp_path)
    with pytest.raises(SpecError, match="replay table not found"):
        prepare_replay(load_spec(tmp_path / "steps.yaml"), tmp_path / "missing.parquet", output=tmp_path)


RECORDED_TABLES = sorted(RECORDED.parent.glob("*.parquet"))
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.skipif(not RECORDED.exists(), reason=f"the recorded table {RECORDED} is absent")
@pytest.mark.parametrize("recorded", RECORDED_TABLES, ids=[p.stem for p in RECORDED_TABLES])
def test_recorded_table_covers_its_grid_and_its_space_file(recorded):
    """Every table in benchmarks/curves holds its whole grid (at least the issue's 6 methods x 5
    targets x 3 learning rates), and search_spaces/replay_<table>.yaml is a grid of it."""
    import math

    curves = read_curve_table(recorded)
    grid = curves.meta["grid"]
    assert len(curves.curves) == math.prod(len(values) for values in grid.values())
    assert len(grid["method"]) >= 6 and len(grid["target_sparsity"]) >= 5 and len(grid["learning_rate"]) >= 3
    assert curves.meta["floor"] < curves.meta["reference"]
    space = SPACES_DIR / f"replay_{recorded.stem}.yaml"
    assert space.is_file(), f"no replay space for {recorded.name}: expected {space}"
    check_grid(load_spec(space), curves, recorded)


def test_study_storage_survives_a_resume(table, tmp_path):
    """Ctrl-C a replayed search (the CLI in a subprocess) once two trials are in the study, resume
    it: the study in ``optuna.db``, named after the search, keeps its first trials and ends with
    every trial of the search."""
    import optuna

    from rayprune.search.searcher import STUDY_FILE

    space = _space(tmp_path, "study", algorithm="tpe", num_samples=5, max_concurrent=1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rayprune.cli", "search", "--space", str(space), "--replay", str(table),
               "--output", str(out), "--replay-time-scale", "0.1", "-v", "0"]
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a fresh Ray runtime, not one already on the machine
    url = f"sqlite:///{out / 'study' / STUDY_FILE}"

    def finished() -> list:
        try:
            study = optuna.load_study(study_name="study", storage=url)
        except Exception:  # not created yet
            return []
        return [t for t in study.get_trials(deepcopy=False)
                if t.state.is_finished() and "duplicate_of" not in t.user_attrs]

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while len(finished()) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    before = {t.number: (t.params, t.values) for t in finished()}
    assert 2 <= len(before) < 5, output

    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = optuna.load_study(study_name="study", storage=url)
    trials = study.get_trials(deepcopy=False)
    ran = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert {n: (t.params, t.values) for n, t in ((t.number, t) for t in trials) if n in before} == before
    assert len(ran) == 5, [(t.number, t.state, t.user_attrs) for t in trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in ran}) == 5, "the resumed searcher ran a repeat"
    assert optuna.get_all_study_names(url) == ["study"]


def test_resume_does_not_rerun_a_trial_that_failed_by_its_own_fault(failing_table, tmp_path, ray_local):
    """`--resume` after a search with an errored trial: the error was the trial's own (it would
    fail the same way again), so the restored search neither resumes nor restarts it."""
    fine = {"method": "magnitude", "target_sparsity": 0.9, "learning_rate": 1e-4}
    space = _space(tmp_path, "errored", num_samples=2, max_concurrent=1, points=[FAILING, fine],
                   method={"choice": ["magnitude", "movement"]}, target_sparsity=0.9, learning_rate=1e-4)
    out = tmp_path / "out"
    summary, prepared = _replay(space, failing_table, out)
    assert summary["errors"] == 1
    tune_dir = prepared.search_dir / "ray" / "tune"

    def reports_of(config: dict) -> list[int]:
        return [r["training_iteration"] for r in read_trial_reports(tune_dir) if config_key(r["config"]) == config_key(config)]

    assert reports_of(FAILING) == [1, 2, 3, 4] and reports_of(fine) == [1, 2, 3, 4]
    from rayprune.search.driver import run_search

    again = prepare_replay(load_spec(space), failing_table, output=out, time_scale=0.001)
    resumed = run_search(again, trainable=replay_trainable, verbose=0, log=lambda *a: None, resume=True)
    assert reports_of(FAILING) == [1, 2, 3, 4], "the errored trial ran again"
    assert reports_of(fine) == [1, 2, 3, 4]
    assert resumed["errors"] == 1 and not resumed["interrupted"]
    assert sorted(r["status"] for r in resumed["rows"]) == sorted(r["status"] for r in summary["rows"])
