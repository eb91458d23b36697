"""End to end on real parts: a local Ray cluster (head + a second node via `ray start`), a real
SQLite MLflow store, a real `mlflow server` on loopback, a tiny BERT on a keyword task it learns in 60 steps (so its
trials end clearly above the floor and make a front).

Asserts what a user relies on: parent/child runs, every finished trial's final metrics in
MLflow, Pareto artifacts that agree with `rayprune pareto`, exported models that load with
`from_pretrained` and whose zero fraction is the reported sparsity, and `rayprune train` on an
exported config reproducing the trial.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from keyword_task import keyword_data


pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node and a second worker node, one CPU each, started with `ray start`.  Ray >= 2.59
    turns token authentication on for local clusters; the nodes inherit the session's token
    (``tests/conftest.py`` sets it up before anything imports Ray), so the head, the second node
    and the in-process driver all agree."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = str(BIN / "ray")
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, env=env,
                   capture_output=True)
    address = f"127.0.0.1:{port}"
    subprocess.run([ray_bin, "start", f"--address={address}", "--num-cpus=1"], check=True, env=env,
                   capture_output=True)
    yield address
    import ray

    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


def write_space(path: Path, model: str, *, name: str, num_samples: int = 4, scheduler: str = "asha") -> Path:
    space = {
        "name": name,
        "model": model,
        "data": keyword_data(path.parent / "data"),
        "objective": {"metric": "accuracy"},
        "training": {"steps": 60, "batch_size": 16, "eval_interval": 30, "learning_rate": 3e-3},
        "budget": {"num_samples": num_samples, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": {"kind": scheduler, "grace_period": 1, "reduction_factor": 2},
        "search": {"algorithm": "tpe", "seed": 0},
        "space": {
            "method": {"choice": ["magnitude", "movement"]},
            "target_sparsity": {"uniform": [0.5, 0.9]},
            "magnitude.selection": {"choice": ["global", "layer"]},
            "schedule.start": 0.0,
            "schedule.end": 0.5,
        },
        "points_to_evaluate": [{"method": "magnitude", "target_sparsity": 0.8, "magnitude.selection": "global"}],
    }
    path.write_text(yaml.safe_dump(space))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rayprune"), *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished_search(ray_cluster, tiny_dir, tmp_path_factory):
    """One real search on the two-node cluster with the default SQLite MLflow store."""
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.config import load_spec

    root = tmp_path_factory.mktemp("search")
    spec = load_spec(write_space(root / "space.yaml", tiny_dir, name="it"))
    prepared = prepare_search(spec, output=root / "runs")
    summary = run_search(prepared, address=ray_cluster, verbose=0)
    return summary, Path(summary["search_dir"])


def test_trials_ran_on_both_nodes_and_results_are_in_ray_storage(finished_search):
    summary, search_dir = finished_search
    rows = summary["rows"]
    assert len(rows) == 4 and summary["errors"] == 0
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(search_dir / "ray" / "tune"))
    nodes = {t.last_result.get("node_id") for t in analysis.trials}
    assert len(nodes) == 2, f"trials did not spread over the two nodes: {nodes}"
    assert all(t.last_result.get("sparsity") is not None for t in analysis.trials)
    # CPU-only search: later trials run in the worker processes of finished ones (reuse_actors),
    # so 4 trials on 2 one-CPU nodes need fewer than 4 processes that import torch.
    pids = {(t.last_result.get("node_id"), t.last_result.get("pid")) for t in analysis.trials}
    assert len(pids) < 4, f"every trial started its own worker process: {pids}"


def test_the_searchs_workers_run_with_one_malloc_arena(finished_search):
    """rayprune.search.trial_workers: the job's runtime environment gives every worker Ray starts
    for the search (its trials and any task) ``MALLOC_ARENA_MAX=1``, read in a real worker."""
    import ray

    assert ray.is_initialized()

    @ray.remote(num_cpus=0)
    def arena_setting():
        return os.environ.get("MALLOC_ARENA_MAX")

    assert ray.get(arena_setting.remote(), timeout=120) == os.environ.get("MALLOC_ARENA_MAX", "1")


def test_mlflow_holds_parent_and_child_runs_with_final_metrics(finished_search):
    from mlflow.tracking import MlflowClient

    from rayprune.tracking.mlflow_tracker import default_tracking_uri

    summary, search_dir = finished_search
    client = MlflowClient(default_tracking_uri(search_dir))
    exp = client.get_experiment_by_name("it")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("rayprune.role") == "search"]
    children = [r for r in runs if r.data.tags.get("rayprune.role") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.info.status == "FINISHED"
    by_trial = {c.data.tags["rayprune.trial_id"]: c for c in children}
    for row in summary["rows"]:
        child = by_trial[row["trial_id"]]
        assert child.data.params["method"] == row["method"]
        # params are rounded for display (4 significant digits)
        assert float(child.data.params["target_sparsity"]) == pytest.approx(row["target_sparsity"], rel=1e-3)
        assert child.data.metrics["accuracy"] == pytest.approx(row["accuracy"])
        assert child.data.metrics["sparsity"] == pytest.approx(row["sparsity"])
        assert child.info.status == ("FINISHED" if row["status"] == "complete" else "KILLED")
        # per-evaluation history, not only the last value
        history = client.get_metric_history(child.info.run_id, "sparsity")
        assert len(history) == int(round(row["budget_fraction"] * 60 / 30))
    front_ids = {r["trial_id"] for r in summary["front"]}
    assert front_ids
    assert {t for t, c in by_trial.items() if c.data.tags.get("pareto") == "true"} == front_ids
    # The store records relocatable `mlflow-artifacts:` locations, which only a server resolves
    # (test_search_logs_to_a_real_mlflow_server reads them through one); read the files here.
    from rayprune.tracking.mlflow_tracker import local_artifact_dir

    pareto_dir = local_artifact_dir(search_dir, exp.artifact_location, parent.info.run_id) / "pareto"
    artifacts = {f"pareto/{p.name}" for p in pareto_dir.iterdir()}
    assert {"pareto/pareto.csv", "pareto/pareto.png", "pareto/pareto.html"} <= artifacts
    assert parent.data.metrics["pareto_hypervolume"] == pytest.approx(summary["hypervolume"])
    # Each front member's run shows what it predicts on a few eval examples (a table artifact).
    for trial_id in front_ids:
        run = by_trial[trial_id]
        sample_file = local_artifact_dir(search_dir, exp.artifact_location, run.info.run_id) / "predictions_sample.json"
        table = json.loads(sample_file.read_text())
        assert table["columns"] == ["text", "gold", "predicted"]
        assert 0 < len(table["data"]) <= 20
        assert {row[1] for row in table["data"]} <= {"0", "1"}  # the keyword task's labels are ids
        assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "predictions_sample.json",
                                                                        "type": "table"}]


def test_pareto_cli_agrees_with_the_logged_front(finished_search):
    from rayprune.pareto import pareto_front

    summary, search_dir = finished_search
    result = run_cli("pareto", str(search_dir), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert {r["trial_id"] for r in printed["front"]} == {r["trial_id"] for r in summary["front"]}
    complete = [r for r in summary["rows"] if r["status"] == "complete"]
    import numpy as np

    idx = pareto_front(np.array([[r["accuracy"], r["sparsity"]] for r in complete]), ["max", "max"])
    assert {complete[i]["trial_id"] for i in idx} == {r["trial_id"] for r in printed["front"]}
    text = run_cli("pareto", str(search_dir))
    assert "Pareto front" in text.stdout and summary["front"][0]["trial_id"] in text.stdout


def test_export_loads_with_from_pretrained_and_train_reproduces(finished_search, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rayprune.models import prunable_targets

    summary, search_dir = finished_search
    result = run_cli("export", str(search_dir), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    exported = sorted((tmp_path / "out").iterdir())
    assert len(exported) == len(summary["front"])
    first = exported[0]
    assert (first / "model.safetensors").exists() and (first / "README.md").exists()
    info = json.loads((first / "rayprune.json").read_text())
    row = next(r for r in summary["rows"] if r["trial_id"] == info["trial_id"])
    model = AutoModelForSequenceClassification.from_pretrained(first)
    named = dict(model.named_parameters())
    targets = prunable_targets(model)
    zeros = sum(int((named[t] == 0).sum()) for t in targets)
    total = sum(named[t].numel() for t in targets)
    assert zeros / total == pytest.approx(row["sparsity"], abs=1e-9)
    assert "sparsity" in (first / "README.md").read_text()

    rerun = run_cli("train", "--config", str(first / "config.yaml"))
    assert rerun.returncode == 0, rerun.stderr
    metrics = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert metrics["accuracy"] == pytest.approx(row["accuracy"], abs=1e-9)
    assert metrics["sparsity"] == pytest.approx(row["sparsity"], abs=1e-9)


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start on loopback within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_search_logs_to_a_real_mlflow_server(ray_cluster, tiny_dir, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.config import load_spec

    spec = load_spec(write_space(tmp_path / "space.yaml", tiny_dir, name="served", num_samples=2, scheduler="fifo"))
    prepared = prepare_search(spec, output=tmp_path / "runs")
    summary = run_search(prepared, address=ray_cluster, tracking_uri=mlflow_server, verbose=0)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("served")
    runs = client.search_runs([exp.experiment_id])
    assert len([r for r in runs if r.data.tags.get("rayprune.role") == "trial"]) == 2
    parent = next(r for r in runs if r.data.tags.get("rayprune.role") == "search")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")} >= {"pareto/pareto.png"}
    assert all(r["status"] == "complete" for r in summary["rows"])  # fifo: nobody stopped
    assert not (Path(summary["search_dir"]) / "mlflow.db").exists()  # nothing written locally


def test_a_crashing_trial_loses_nothing_of_the_others(ray_cluster, tiny_dir, tmp_path):
    """PINS needs a selection split for its self-teacher; with selection_fraction 0 its trial
    raises at its first evaluation.  The magnitude trial beside it must keep its results in
    Ray's storage, in MLflow and in the Pareto front."""
    from mlflow.tracking import MlflowClient

    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.config import load_spec
    from rayprune.tracking.mlflow_tracker import default_tracking_uri

    path = write_space(tmp_path / "space.yaml", tiny_dir, name="crash", num_samples=2, scheduler="fifo")
    raw = yaml.safe_load(path.read_text())
    raw["data"]["selection_fraction"] = 0.0
    raw["space"] = {"method": {"choice": ["magnitude", "pins"]}, "target_sparsity": 0.6,
                    "pins.eval_interval": 2, "schedule.start": 0.0, "schedule.end": 0.5}
    raw["points_to_evaluate"] = [{"method": "pins"}, {"method": "magnitude"}]
    path.write_text(yaml.safe_dump(raw))
    prepared = prepare_search(load_spec(path), output=tmp_path / "runs")
    summary = run_search(prepared, address=ray_cluster, verbose=0)
    assert summary["errors"] == 1
    by_method = {r["method"]: r for r in summary["rows"]}
    assert by_method["pins"]["status"] == "error"
    good = by_method["magnitude"]
    assert good["status"] == "complete" and abs(good["sparsity"] - 0.6) < 1e-3
    assert Path(good["checkpoint"]).exists()
    assert [r["trial_id"] for r in summary["front"]] == [good["trial_id"]]
    client = MlflowClient(default_tracking_uri(Path(summary["search_dir"])))
    runs = client.search_runs([client.get_experiment_by_name("crash").experiment_id])
    status = {r.data.params.get("method"): r.info.status for r in runs if r.data.tags.get("rayprune.role") == "trial"}
    assert status == {"magnitude": "FINISHED", "pins": "FAILED"}
    finished = next(r for r in runs if r.data.params.get("method") == "magnitude")
    assert finished.data.metrics["accuracy"] == pytest.approx(good["accuracy"])


def test_grain_search_trains_one_teacher_and_exports_a_smaller_model(ray_cluster, tiny_dir, tmp_path):
    """GRAIN end to end: one dense teacher for the whole search, shared by both trials; the
    export has physically smaller matrices, loads through the Auto classes after
    `import rayprune`, and matches the masked model it came from."""
    import torch
    from transformers import AutoModelForSequenceClassification

    import rayprune  # noqa: F401  (registers the pruned model classes)
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.config import load_spec
    from rayprune.training import TrialConfig, TrialSettings, load_trained

    path = write_space(tmp_path / "space.yaml", tiny_dir, name="grain", num_samples=2, scheduler="fifo")
    raw = yaml.safe_load(path.read_text())
    # GRAIN learns from the reference's logits only: 200 steps take both trials clearly above the floor.
    raw["training"] = {"steps": 200, "batch_size": 16, "eval_interval": 100, "learning_rate": 3e-3}
    raw["space"] = {"method": "grain", "target_sparsity": {"choice": [0.5, 0.8]},
                    "grain.embedding_rank": {"choice": [0, 8]},
                    "schedule.start": 0.0, "schedule.end": 0.5}
    # The second trial also factorises the word embeddings (rank 8 of the tiny model's 32).
    raw["points_to_evaluate"] = [{"target_sparsity": 0.5, "grain.embedding_rank": 0},
                                 {"target_sparsity": 0.8, "grain.embedding_rank": 8}]
    path.write_text(yaml.safe_dump(raw))
    prepared = prepare_search(load_spec(path), output=tmp_path / "runs")
    summary = run_search(prepared, address=ray_cluster, verbose=0, log=lambda m: None)
    search_dir = Path(summary["search_dir"])
    assert (search_dir / "reference" / "model.safetensors").exists()
    meta = json.loads((search_dir / "search.json").read_text())
    assert meta["settings"]["teacher_dir"] == str((search_dir / "reference").resolve())
    assert summary["errors"] == 0 and all(r["status"] == "complete" for r in summary["rows"])
    for row in summary["rows"]:  # encoder-parameter sparsity lands on the target (within a unit)
        assert row["sparsity_encoder"] >= row["target_sparsity"] - 0.05

    out = tmp_path / "out"
    result = run_cli("export", str(search_dir), "--out", str(out), "--top", "2")
    assert result.returncode == 0, result.stderr
    dense = AutoModelForSequenceClassification.from_pretrained(tiny_dir)
    ranks = set()
    for exported in sorted(out.iterdir()):
        info = json.loads((exported / "rayprune.json").read_text())
        assert info["parameters_dense"] == sum(p.numel() for p in dense.parameters())
        assert info["parameters"] < info["parameters_dense"]
        shrunk = AutoModelForSequenceClassification.from_pretrained(exported).eval()
        assert type(shrunk).__name__ == "PrunedBertForSequenceClassification"
        row = next(r for r in summary["rows"] if r["trial_id"] == info["trial_id"])
        rank = json.loads(row["config"]).get("grain.embedding_rank")
        ranks.add(rank)
        assert (shrunk.config.embedding_rank or 0) == rank
        if rank:  # the factorised table is what was trained and what is stored
            words = shrunk.get_input_embeddings()
            assert words.codes.weight.shape == (dense.config.vocab_size, rank)
        settings = TrialSettings(**meta["settings"])
        masked, _ = load_trained(Path(row["checkpoint"]), TrialConfig.from_flat(json.loads(row["config"]), settings),
                                 settings, meta["data"])
        masked.eval()
        ids = torch.randint(1000, 5000, (3, 12))
        mask = torch.ones_like(ids)
        mask[1, 8:] = 0
        with torch.no_grad():
            a = shrunk(input_ids=ids, attention_mask=mask).logits
            b = masked(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(a, b, atol=1e-5)
    assert ranks == {0, 8}


def test_interrupted_search_resumes_from_checkpoints(ray_cluster, tiny_dir, tmp_path):
    """Ctrl-C during a search, then `rayprune search --resume`: the cut-off trial continues from
    its last checkpoint (no step is trained twice), the trials not yet started run, and MLflow
    ends with one FINISHED child per trial under a FINISHED parent."""
    import signal

    from mlflow.tracking import MlflowClient
    from ray.tune import ExperimentAnalysis

    from rayprune.tracking.mlflow_tracker import default_tracking_uri

    path = write_space(tmp_path / "space.yaml", tiny_dir, name="resume", num_samples=3, scheduler="fifo")
    raw = yaml.safe_load(path.read_text())
    raw["training"] = {"steps": 600, "batch_size": 16, "eval_interval": 100, "learning_rate": 1e-3,
                       "checkpoint_budget": 1.0}  # every evaluation checkpoints (waited for below)
    raw["budget"] = {"num_samples": 3, "max_concurrent": 1}
    raw["space"] = {"method": "magnitude", "target_sparsity": {"choice": [0.5, 0.7, 0.9]},
                    "schedule.start": 0.0, "schedule.end": 0.5}
    raw["points_to_evaluate"] = [{"target_sparsity": 0.5}, {"target_sparsity": 0.7}, {"target_sparsity": 0.9}]
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "runs"
    args = ["search", "--space", str(path), "--output", str(out),
            "--address", ray_cluster, "-v", "0"]
    proc = subprocess.Popen([str(BIN / "rayprune"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    tune_dir = out / "resume" / "ray" / "tune"
    search_dir = out / "resume"

    def driver_has_processed_a_checkpoint() -> bool:
        # Every evaluation reports a checkpoint; once the driver has written one to the trial's
        # result.json, Ray has registered that checkpoint, so the state it saves on Ctrl-C
        # includes it.  (Not polled through MLflow: opening the store while the CLI creates its
        # schema races the schema migration.)
        return any(path.read_text().strip() for path in tune_dir.glob("*/result.json"))

    deadline = time.monotonic() + 600
    while not driver_has_processed_a_checkpoint():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpointed evaluation within 10 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, output
    assert "--resume" in output

    client = MlflowClient(default_tracking_uri(search_dir))
    exp = client.get_experiment_by_name("resume")

    def runs_by_role():
        runs = client.search_runs([exp.experiment_id])
        parent = [r for r in runs if r.data.tags.get("rayprune.role") == "search"]
        children = [r for r in runs if r.data.tags.get("rayprune.role") == "trial"]
        return parent, children

    parent, children = runs_by_role()
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    cut_off = [c for c in children if c.data.tags.get("interrupted") == "true"]
    assert len(cut_off) == 1 and cut_off[0].info.status == "KILLED"  # the trial that was running
    assert all(c.info.status == "FINISHED" for c in children if c not in cut_off)

    result = run_cli(*args, "--resume")
    assert result.returncode == 0, result.stdout + result.stderr
    analysis = ExperimentAnalysis(str(tune_dir))
    assert len(analysis.trials) == 3
    for trial in analysis.trials:
        steps = list(analysis.trial_dataframes[trial.trial_id]["step"])
        assert steps[-1] == 600 and trial.last_result["budget_fraction"] == 1.0
        # Continued from its checkpoint, not from scratch: nothing reported before the last
        # processed checkpoint comes again.  Ray saves its state on Ctrl-C before it drains the
        # results still in flight, so the one evaluation in flight at that moment may be
        # reported twice (its checkpoint is on disk but not in the saved state).
        assert sorted(set(steps)) == [100, 200, 300, 400, 500, 600], f"steps skipped: {steps}"
        assert steps == sorted(steps) and steps.count(100) == 1, f"restarted: {steps}"
        assert len(steps) - len(set(steps)) <= 1, f"more than the in-flight evaluation repeated: {steps}"
    parent, children = runs_by_role()
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    # one run per trial: the cut-off trial went on logging into its own run
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    resumed = next(c for c in children if c.info.run_id == cut_off[0].info.run_id)
    assert resumed.data.tags.get("resumed") == "true" and "interrupted" not in resumed.data.tags
    history = [m.step for m in client.get_metric_history(resumed.info.run_id, "sparsity")]
    assert sorted(set(history)) == [100, 200, 300, 400, 500, 600]
