"""A worker node dies mid-search (its raylet is killed by PID): the search finishes, the trial
that was on it resumes from its last checkpoint on the surviving node, and every trial that had
finished before the kill keeps its results in Ray's storage and exactly one MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from faultlib import BIN, keyword_space, mlflow_children, search_args, trial_results

pytestmark = pytest.mark.integration

STEPS, EVAL = 480, 40


def test_a_worker_node_dies_mid_search(cluster, tiny_dir, tmp_path):
    cluster.ensure_workers(1)
    head_id = next(n["NodeID"] for n in cluster.alive_nodes() if "node:__internal_head__" in n["Resources"])
    worker = cluster.workers[0]
    space = keyword_space(tmp_path / "space.yaml", tiny_dir, name="nodeloss", targets=[0.5, 0.6, 0.7, 0.8],
                          steps=STEPS, eval_interval=EVAL)
    out = tmp_path / "runs"
    tune_dir = out / "nodeloss" / "ray" / "tune"
    proc = subprocess.Popen([str(BIN / "rayprune"), *search_args(space, out, cluster.address, data_dir=None)], env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def done(results):
        return results[-1].get("budget_fraction") == 1.0

    raylet = worker.raylet_pid()  # looked up now: the kill below must not wait for a /proc scan

    # Kill when a trial has finished and the trial running on the worker has a checkpoint but is
    # at most half-way.  The first two trials run side by side at the same speed, so when one
    # ends the other is nearly done too (killed then, it may finish before its node is gone);
    # the moment comes with the second pair.
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no moment with a finished trial and a checkpointed worker trial"
        results = trial_results(tune_dir)
        finished = {t for t, r in results.items() if done(r)}
        on_worker = [t for t, r in results.items()
                     if r[-1]["node_id"] != head_id and not done(r) and r[-1]["step"] <= STEPS // 2]
        if finished and on_worker:
            break
        time.sleep(0.1)
    before = {t: results[t] for t in finished}
    victim = on_worker[0]
    os.kill(raylet, signal.SIGKILL)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert f"trial {victim} lost its worker" in output and "retry 1/3" in output, output

    after = trial_results(tune_dir)
    assert len(after) == 4 and all(done(r) for r in after.values()), output
    for trial_id, results in before.items():  # finished before the kill: kept as they were
        assert after[trial_id][: len(results)] == results
    steps = [r["step"] for r in after[victim]]
    # Resumed from its last checkpoint, not from scratch: the first evaluation is not repeated,
    # and only evaluations after the last checkpoint the driver had registered may repeat.
    assert steps.count(EVAL) == 1 and steps[-1] == STEPS, steps
    assert sorted(set(steps)) == list(range(EVAL, STEPS + 1, EVAL)), steps
    assert after[victim][-1]["node_id"] == head_id  # finished on the surviving node

    children = mlflow_children(out / "nodeloss", "nodeloss")
    by_trial = {}
    for run in children:
        by_trial.setdefault(run.data.tags["rayprune.trial_id"], []).append(run)
    assert sorted(by_trial) == sorted(after) and all(len(runs) == 1 for runs in by_trial.values())
    assert {run.info.status for run in children} == {"FINISHED"}
