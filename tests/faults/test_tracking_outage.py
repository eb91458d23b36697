"""The MLflow server goes away mid-search (killed by PID) and comes back after it: the search
finishes on time with its results and front, keeps what it could not log in the search
directory, and `rayprune sync` leaves MLflow with every trial exactly once and the parent
FINISHED.  A dead tracking URI is refused before Ray starts, within seconds."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from faultlib import BIN, needs_glue, rayprune, search_args, trial_results, write_space
from tracking.mlflow_server import MlflowServer, free_port

pytestmark = [pytest.mark.integration, needs_glue]

STEPS, EVAL = 240, 40


def test_a_dead_tracking_uri_is_refused_before_any_trial(cluster, tiny_dir, tmp_path):
    space = write_space(tmp_path / "space.yaml", tiny_dir, name="deaduri", targets=[0.5])
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = rayprune(*search_args(space, tmp_path / "runs", cluster.address), "--tracking-uri", dead,
                      env=cluster.env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - start < 60  # the CLI's own imports included; the check itself is ~ms
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --tracking-uri") and "connection refused" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "deaduri" / "ray").exists()


def test_the_mlflow_server_goes_away_mid_search(cluster, tiny_dir, tmp_path):
    cluster.ensure_workers(1)
    server = MlflowServer(tmp_path / "server").start()
    try:
        space = write_space(tmp_path / "space.yaml", tiny_dir, name="outage", targets=[0.5, 0.7],
                            steps=STEPS, eval_interval=EVAL)
        out = tmp_path / "runs"
        search_dir = out / "outage"
        tune_dir = search_dir / "ray" / "tune"
        proc = subprocess.Popen([str(BIN / "rayprune"), *search_args(space, out, cluster.address),
                                 "--tracking-uri", server.url], env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while True:  # kill at the first evaluation: the search is under way, no trial has finished
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no trial reported within 5 minutes"
            results = trial_results(tune_dir)
            if results:
                assert not any(r[-1]["budget_fraction"] == 1.0 for r in results.values())
                break
            time.sleep(0.05)
        server.kill()
        killed_at = time.monotonic()
        output, _ = proc.communicate(timeout=600)
        after_kill = time.monotonic() - killed_at
        assert proc.returncode == 0, output
        assert "is not answering" in output and "rayprune sync" in output, output

        results = trial_results(tune_dir)
        assert len(results) == 2 and all(r[-1]["budget_fraction"] == 1.0 for r in results.values())
        assert (search_dir / "results.csv").exists() and (search_dir / "pareto.json").exists()
        journal = search_dir / "tracking_pending.jsonl"
        assert journal.exists() and journal.read_text().strip()

        server.start()
        synced = rayprune("sync", str(search_dir), "--tracking-uri", server.url, env=cluster.env, timeout=300)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert not journal.exists()

        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id])
        trials = [r for r in runs if r.data.tags.get("rayprune.role") == "trial"]
        parents = [r for r in runs if r.data.tags.get("rayprune.role") == "search"]
        assert sorted(r.data.tags["rayprune.trial_id"] for r in trials) == sorted(results)  # exactly once each
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        for run in trials:
            assert run.info.status == "FINISHED"
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "sparsity"))
            assert steps == list(range(EVAL, STEPS + 1, EVAL)), steps  # nothing lost in the outage
            assert run.data.tags["pareto"] in ("true", "false")
        hv = client.get_metric_history(parents[0].info.run_id, "pareto_hypervolume")
        assert sorted(m.step for m in hv) == [1, 2]
        print(f"server killed; search finished {after_kill:.1f} s later; {len(trials)} trials, "
              f"0 duplicate runs after sync")
    finally:
        server.kill()
