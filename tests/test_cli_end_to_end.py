"""The whole CLI path on a clean clone, without ``../shared``: ``rayprune search`` -> ``pareto`` ->
``export`` -> ``train``, each as a user runs it (a subprocess of the installed console script), on a
tiny config-built BERT and a generated keyword task it learns in a few dozen steps (so the
trials end clearly above the chance floor and are exported).  Ray starts in-process (the CLI's
default), MLflow is the search directory's SQLite store.

What a user relies on: the search exits 0 and prints its front; ``pareto --json`` agrees with
the search's own ``pareto.json``; every exported model loads with ``from_pretrained`` and its zero
fraction is the reported sparsity; ``rayprune train`` on an exported ``config.yaml`` reproduces the
trial's metric and sparsity.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import save_tiny_bert
from search.keyword_task import keyword_data

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rayprune"), *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    """One small real search (2 trials, FIFO) on the keyword task; returns (workdir, search_dir, stdout)."""
    work = tmp_path_factory.mktemp("cli")
    model = save_tiny_bert(work / "tiny")
    space = {
        "name": "cli_e2e",
        "model": str(model),
        "data": keyword_data(work / "data"),
        "reference": "none",
        "objective": {"metric": "accuracy"},
        "training": {"steps": 60, "batch_size": 16, "eval_interval": 30, "learning_rate": 3e-3},
        "budget": {"num_samples": 2, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"algorithm": "random", "seed": 0},
        "space": {"method": "magnitude", "target_sparsity": {"choice": [0.5, 0.8]},
                  "schedule.start": 0.0, "schedule.end": 0.5},
        "points_to_evaluate": [{"target_sparsity": 0.5}, {"target_sparsity": 0.8}],
    }
    (work / "space.yaml").write_text(yaml.safe_dump(space))
    dry = run_cli("search", "--space", "space.yaml", "--output", "runs", "--dry-run", cwd=work)
    assert dry.returncode == 0, dry.stderr
    assert not (work / "runs" / "cli_e2e" / "search.json").exists()  # a dry run starts nothing
    proc = run_cli("search", "--space", "space.yaml", "--output", "runs", "-v", "0", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, work / "runs" / "cli_e2e", proc.stdout


def test_search_prints_its_front_and_writes_the_search_directory(finished_search):
    work, search_dir, stdout = finished_search
    assert "Pareto front" in stdout
    for name in ("search.json", "results.csv", "pareto.csv", "pareto.json", "mlflow.db"):
        assert (search_dir / name).exists(), name
    pareto = json.loads((search_dir / "pareto.json").read_text())
    assert pareto["front"], "two full-budget trials give a non-empty front"


def test_pareto_command_agrees_with_the_search(finished_search):
    work, search_dir, _ = finished_search
    proc = run_cli("pareto", str(search_dir), "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    saved = json.loads((search_dir / "pareto.json").read_text())
    assert [r["trial_id"] for r in shown["front"]] == [r["trial_id"] for r in saved["front"]]
    assert shown["hypervolume"] == pytest.approx(saved["hypervolume"])


def test_export_then_train_reproduces_the_trial(finished_search):
    import torch
    from transformers import AutoModelForSequenceClassification

    work, search_dir, _ = finished_search
    out = work / "exported"
    proc = run_cli("export", str(search_dir), "--out", str(out), "--top", "1", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (exported,) = sorted(p for p in out.iterdir() if p.is_dir())
    info = json.loads((exported / "rayprune.json").read_text())

    model = AutoModelForSequenceClassification.from_pretrained(exported)
    encoder_linear = [m.weight for name, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}."]
    zeros = sum(int((w == 0).sum()) for w in encoder_linear)
    total = sum(w.numel() for w in encoder_linear)
    assert zeros / total == pytest.approx(info["sparsity"], abs=1e-9)

    proc = run_cli("train", "--config", str(exported / "config.yaml"), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert metrics["sparsity"] == pytest.approx(info["sparsity"], abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(info["metric_value"], abs=1e-9)
