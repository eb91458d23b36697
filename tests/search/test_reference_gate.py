"""A search whose dense reference is not clearly above the floor cannot be judged: it stops
before any trial with one message saying what was measured and what to change, unless the space
opts in (``reference.require_above_floor: false``), in which case the run says so (log, CLI and
a tag on the MLflow parent).  The same check runs in ``--dry-run`` on a cached reference.

The budget that cannot be learned: the tiny config-built BERT on the demo task, 2 optimizer steps
at learning rate 1e-9 (its predictions do not move from the random initialisation's).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayprune.errors import SpecError
from rayprune.search.criteria import establish_criteria, reference_below_floor
from rayprune.search.results import Criteria

BIN = Path(sys.executable).parent


def write_space(directory: Path, model: str, *, name: str = "gate", reference: dict | None = None,
                steps: int = 2, num_samples: int = 1) -> Path:
    space = {
        "name": name,
        "model": model,
        "data": {"task": "demo", "max_train_samples": 64, "max_eval_samples": 200, "max_seq_length": 32},
        "objective": {"metric": "accuracy"},
        "training": {"steps": steps, "batch_size": 8, "eval_interval": steps, "learning_rate": 1e-9},
        "reference": reference or {},
        "budget": {"num_samples": num_samples, "max_concurrent": 1},
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"algorithm": "random", "seed": 0},
        "space": {"method": "magnitude", "target_sparsity": 0.5, "schedule.start": 0.0, "schedule.end": 0.5},
    }
    path = directory / f"{name}.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space))
    return path


def prepare(path: Path, output: Path):
    from rayprune.config import load_spec
    from rayprune.search.preflight import prepare_search

    return prepare_search(load_spec(path), output=output, log=lambda m: None)


def test_the_mrpc_case_is_below_the_floor_by_the_trials_rule():
    """Issue 26's numbers: MRPC's eval split (408 pairs), f1 of the always-positive predictor
    0.8122, a 120-step reference at 0.8117."""
    criteria = Criteria(metric="f1", floor=0.8122, eval_examples=408, reference_metric=0.8117)
    problem = reference_below_floor(criteria)
    assert problem is not None and "f1 0.8117" in problem and "floor f1 0.8122" in problem
    assert "408 examples" in problem
    # the same rule as a trial's verdict: a trial at the reference's value is collapsed
    assert criteria.verdict({"status": "complete", "f1": 0.8117, "sparsity": 0.5})[0] == "collapsed"
    # one standard error above (sqrt(.9 * .1 / 408) = 0.0149) is clear of it
    assert reference_below_floor(Criteria(metric="f1", floor=0.8122, eval_examples=408,
                                          reference_metric=0.87)) is None
    assert reference_below_floor(Criteria(metric="f1", floor=0.8122, eval_examples=408)) is None  # none


def test_a_reference_that_did_not_learn_stops_the_search_before_any_trial(tiny_dir, tmp_path):
    prepared = prepare(write_space(tmp_path, tiny_dir), tmp_path / "runs")
    messages = []
    with pytest.raises(SpecError) as caught:
        establish_criteria(prepared, prepared.settings, log=messages.append)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{prepared.spec.path}: reference: the dense reference (trained 2 steps) scored accuracy ")
    assert "not clearly above the floor accuracy" in message and "200 examples" in message
    for change in ("training.steps (now 2)", "training.learning_rate (now 1e-09)",
                   "more training data (57 examples now, data.max_train_samples 64)", "reference.steps (now 2)",
                   "reference.require_above_floor: false"):
        assert change in message, change
    assert any("reference ready" in m for m in messages)  # measured, then refused


def test_opting_in_runs_anyway_and_says_so(tiny_dir, tmp_path):
    prepared = prepare(write_space(tmp_path, tiny_dir, reference={"require_above_floor": False}), tmp_path / "runs")
    messages = []
    settings, criteria, reference = establish_criteria(prepared, prepared.settings, log=messages.append)
    assert reference is not None and reference.steps == 2
    assert reference_below_floor(criteria) is not None
    warning = [m for m in messages if m.startswith("warning:")]
    assert len(warning) == 1 and "reference.require_above_floor is false" in warning[0]


def test_a_longer_budget_trains_a_new_reference(tiny_dir, tmp_path):
    """The advice works: a search stopped for its reference, started again with more steps,
    does not reuse the cached reference of the shorter budget."""
    from rayprune.training.reference import cached_reference, ensure_reference

    short = prepare(write_space(tmp_path, tiny_dir, steps=2), tmp_path / "runs")
    first = ensure_reference(short.search_dir, short.settings, short.data, log=lambda m: None)
    assert cached_reference(short.search_dir, short.settings, short.data) == first
    longer = prepare(write_space(tmp_path, tiny_dir, steps=3), tmp_path / "runs")
    assert longer.search_dir == short.search_dir
    assert cached_reference(longer.search_dir, longer.settings, longer.data) is None
    second = ensure_reference(longer.search_dir, longer.settings, longer.data, log=lambda m: None)
    assert second.steps == 3
    # reference.steps is part of the budget too
    assert cached_reference(longer.search_dir, longer.settings, longer.data, steps=5) is None


def test_dry_run_checks_a_cached_reference(tiny_dir, tmp_path, capsys):
    from rayprune.cli import main

    space = write_space(tmp_path, tiny_dir)
    prepared = prepare(space, tmp_path / "runs")
    assert main(["search", "--space", str(space), "--output", str(tmp_path / "runs"), "--dry-run"]) == 0
    capsys.readouterr()  # nothing cached yet: nothing to judge
    with pytest.raises(SpecError):
        establish_criteria(prepared, prepared.settings, log=lambda m: None)  # trains and caches it
    assert main(["search", "--space", str(space), "--output", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not clearly above the floor" in err
    opted = write_space(tmp_path, tiny_dir, reference={"require_above_floor": False})
    assert main(["search", "--space", str(opted), "--output", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "warning: the dense reference (trained 2 steps) scored accuracy" in out
    assert "cached: accuracy=" in out


def test_running_anyway_tags_the_mlflow_parent(tiny_dir, tmp_path):
    """The parent run of a search that ran with a reference below the floor says so (the tags
    the driver gives its tracker, on a real SQLite store)."""
    from mlflow.tracking import MlflowClient

    from rayprune.config import load_spec
    from rayprune.search.driver import parent_tags
    from rayprune.tracking.mlflow_tracker import SearchTracker, default_tracking_uri

    spec = load_spec(write_space(tmp_path, tiny_dir, reference={"require_above_floor": False}))
    below = Criteria(metric="accuracy", floor=0.5, eval_examples=200, reference_metric=0.5)
    above = Criteria(metric="accuracy", floor=0.5, eval_examples=200, reference_metric=0.9)
    assert "rayprune.reference_below_floor" not in parent_tags(spec, above)
    search_dir = tmp_path / "runs" / "gate"
    search_dir.mkdir(parents=True)
    tracker = SearchTracker(default_tracking_uri(search_dir), "gate", search_dir, tags=parent_tags(spec, below))
    tracker.finish("FINISHED")
    client = MlflowClient(default_tracking_uri(search_dir))
    tag = client.get_run(tracker.parent_run_id).data.tags["rayprune.reference_below_floor"]
    assert tag.startswith("the dense reference scored accuracy 0.5000 on the eval split, not clearly above the "
                          "floor accuracy 0.5000") and tag.endswith("the search ran anyway")


@pytest.mark.integration
def test_cli_stops_before_any_trial(tiny_dir, tmp_path):
    """As a user sees it: `rayprune search` (Ray started, the reference trained) refuses with
    one error line, and no trial starts."""
    space = write_space(tmp_path, tiny_dir)
    run = subprocess.run([str(BIN / "rayprune"), "search", "--space", str(space), "--output", "runs", "-v", "0"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not clearly above the floor" in errors[0], run.stderr
    assert "reference.require_above_floor: false" in errors[0]
    assert "Traceback" not in run.stderr
    assert "reference ready: accuracy=" in run.stdout
    search_dir = tmp_path / "runs" / "gate"
    assert not (search_dir / "search.json").exists() and not (search_dir / "results.csv").exists()
    assert not list(search_dir.rglob("params.json"))  # no trial started
