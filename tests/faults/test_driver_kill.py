"""The driver is SIGKILLed (no chance to save anything): `rayprune search --resume` takes over
its stale lock and continues without redoing finished trials and without duplicate MLflow runs;
a resume with a changed space file is refused with a message that says what changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from faultlib import BIN, keyword_space, mlflow_children, rayprune, search_args, trial_results

pytestmark = pytest.mark.integration

STEPS, EVAL = 600, 100


def saved_trial_states(tune_dir: Path) -> dict[str, tuple[str, int]]:
    """What Ray's last saved experiment state says of each trial: (status, step of its last
    result, 0 if none; every evaluation reports a checkpoint)."""
    states = {}
    for state_file in sorted(Path(tune_dir).glob("experiment_state-*.json"))[-1:]:
        try:
            saved = json.loads(state_file.read_text())
        except (OSError, ValueError):  # being written
            return {}
        for trial_json, metadata_json in saved["trial_data"]:
            trial, metadata = json.loads(trial_json), json.loads(metadata_json)
            states[trial["trial_id"]] = (trial["status"], int((metadata.get("last_result") or {}).get("step", 0)))
    return states


def test_driver_killed_then_resumed(cluster, tiny_dir, tmp_path):
    cluster.ensure_workers(1)
    space = keyword_space(tmp_path / "space.yaml", tiny_dir, name="killed", targets=[0.5, 0.7, 0.9],
                          steps=STEPS, eval_interval=EVAL, max_concurrent=1)
    out = tmp_path / "runs"
    search_dir = out / "killed"
    tune_dir = search_dir / "ray" / "tune"
    args = search_args(space, out, cluster.address, data_dir=None)
    driver = subprocess.Popen([str(BIN / "rayprune"), *args], env=cluster.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    # Kill once Ray's saved state has a finished trial and a running one with a checkpoint.
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, driver.stdout.read()
        assert time.monotonic() < deadline, f"no such moment: {saved_trial_states(tune_dir)}"
        states = saved_trial_states(tune_dir)
        finished = [t for t, (status, _) in states.items() if status == "TERMINATED"]
        running = [t for t, (status, step) in states.items() if status == "RUNNING" and step >= EVAL]
        if finished and running:
            break
        time.sleep(0.5)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = trial_results(tune_dir)
    finished_before = {t: before[t] for t in finished}
    runs_before = {r.data.tags["rayprune.trial_id"]: r.info.run_id for r in mlflow_children(search_dir, "killed")}

    changed = tmp_path / "changed.yaml"
    raw = yaml.safe_load(space.read_text())
    raw["space"]["target_sparsity"] = {"choice": [0.5, 0.7, 0.9, 0.95]}  # the points stay valid
    changed.write_text(yaml.safe_dump(raw))
    refused = rayprune(*search_args(changed, out, cluster.address, data_dir=None), "--resume", env=cluster.env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    assert "the space changed" in error and "space.target_sparsity" in error and "0.95" in error, error
    assert "taking over" in refused.stdout and f"PID {driver.pid}" in refused.stdout  # the killed driver's lock

    resumed = rayprune(*args, "--resume", env=cluster.env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = trial_results(tune_dir)
    assert len(after) == 3 and all(r[-1]["step"] == STEPS for r in after.values())
    for trial_id, results in finished_before.items():  # not redone: not one more report
        assert after[trial_id] == results
    for trial_id in running:  # continued from its checkpoint, not from scratch
        steps = [r["step"] for r in after[trial_id]]
        assert steps.count(EVAL) == 1 and sorted(set(steps)) == list(range(EVAL, STEPS + 1, EVAL)), steps
    children = mlflow_children(search_dir, "killed")
    by_trial = {}
    for run in children:
        by_trial.setdefault(run.data.tags["rayprune.trial_id"], []).append(run.info.run_id)
    assert sorted(by_trial) == sorted(after) and all(len(ids) == 1 for ids in by_trial.values())
    assert all(by_trial[t] == [run_id] for t, run_id in runs_before.items())  # the same runs went on
    assert {run.info.status for run in children} == {"FINISHED"}
