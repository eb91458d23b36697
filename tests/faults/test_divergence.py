"""A trial diverges (learning rate 1e30: the loss turns non-finite within a few steps) on a
two-node cluster while its neighbour is mid-flight: the diverged trial fails once and is not
retried (its own fault), and the neighbour finishes and keeps its results in Ray's storage and
in MLflow."""

from __future__ import annotations

from datetime import datetime
import json
import re
from pathlib import Path

import pytest

from faultlib import keyword_space, mlflow_children, trial_results

pytestmark = pytest.mark.integration

STEPS, EVAL = 900, 90  # the neighbour runs well past the diverged trial's failure (a few s in)


def test_a_diverging_trial_beside_one_mid_flight(cluster, tiny_dir, tmp_path):
    import ray
    from ray.tune import ExperimentAnalysis

    from rayprune.config import Distribution, load_spec
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search

    cluster.ensure_workers(1)
    space = keyword_space(tmp_path / "space.yaml", tiny_dir, name="diverge", targets=[0.5, 0.6],
                          learning_rates=[3e-3, 1e-3], steps=STEPS, eval_interval=EVAL)
    spec = load_spec(space)
    # The spec refuses learning rates above 1; one that gets past it (or any diverging run) must
    # still fail by itself, so the second trial's is set here behind the validation.
    spec.space["learning_rate"] = Distribution("choice", (3e-3, 1e30))
    spec.points_to_evaluate[1]["learning_rate"] = 1e30
    prepared = prepare_search(spec, output=tmp_path / "runs", log=lambda m: None)
    messages: list[str] = []
    try:
        summary = run_search(prepared, address=cluster.address, verbose=0, log=messages.append)
    finally:
        ray.shutdown()
    search_dir = Path(summary["search_dir"])
    tune_dir = search_dir / "ray" / "tune"
    rows = {float(json.loads(r["config"])["learning_rate"]): r for r in summary["rows"]}
    good, bad = rows[3e-3], rows[1e30]
    assert bad["status"] in {"error", "failed"} and bad.get("verdict", "failed") == "failed"
    assert bad["trial_id"] not in {r["trial_id"] for r in summary["front"]}
    assert good["status"] == "complete" and abs(float(good["sparsity"]) - 0.5) < 1e-3
    assert [r["trial_id"] for r in summary["front"]] == [good["trial_id"]]

    analysis = ExperimentAnalysis(str(tune_dir))
    trials = {t.trial_id: t for t in analysis.trials}
    assert trials[bad["trial_id"]].status == "ERROR" and trials[bad["trial_id"]].num_failures == 1
    assert not any("lost its worker" in m for m in messages), messages  # not retried
    assert trials[good["trial_id"]].status == "TERMINATED"

    # The neighbour was running on the other node when the diverged trial failed, and went on.
    results = trial_results(tune_dir)[good["trial_id"]]
    error_files = list(tune_dir.glob("*/error.txt"))
    assert len(error_files) == 1
    # When the failure happened is the header Ray writes ("Failure # 1 (occurred at
    # 2026-12-02_00-13-43)", local time, whole seconds); the file's mtime is not: Ray rewrites
    # the trial directories when the experiment ends.
    header = re.search(r"occurred at (\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)", error_files[0].read_text())
    failed_at = datetime.strptime(header.group(1), "%Y-%m-%d_%H-%M-%S").timestamp()
    started = results[0]["timestamp"] - results[0]["time_total_s"]
    # Ray's result timestamps are whole seconds too: the neighbour started before the failure's
    # second ended and reported evaluations in a later second.
    assert started < failed_at + 1 and results[-1]["timestamp"] > failed_at, (started, failed_at, results[-1])
    assert [r["step"] for r in results] == list(range(EVAL, STEPS + 1, EVAL))

    children = {r.data.tags["rayprune.trial_id"]: r for r in mlflow_children(search_dir, "diverge")}
    assert len(children) == 2
    assert children[good["trial_id"]].info.status == "FINISHED"
    assert children[good["trial_id"]].data.metrics["accuracy"] == pytest.approx(float(good["accuracy"]))
    assert children[bad["trial_id"]].info.status == "FAILED"
