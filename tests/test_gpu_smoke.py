"""A small search on a real GPU: two trials of ``resources.gpu: 0.5`` on a one-GPU Ray both
finish, and each reports the precision ``auto`` chose there (bf16 on Ampere and later, fp16
before).

Marked ``gpu``; skipped without CUDA (``pytest -m gpu`` on a GPU machine runs it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import save_tiny_bert

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


def test_two_trials_share_one_gpu_in_mixed_precision(tmp_path):
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray.tune import ExperimentAnalysis

    from rayprune.config import parse_spec
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search

    model_dir = save_tiny_bert(tmp_path / "model")
    raw = {
        "name": "gpu-smoke",
        "model": str(model_dir),
        "data": {"task": "demo", "max_train_samples": 200, "max_eval_samples": 50, "max_seq_length": 32},
        "objective": {"metric": "accuracy"},
        "reference": "none",
        "training": {"steps": 20, "batch_size": 16, "eval_interval": 10},
        "budget": {"num_samples": 2, "max_concurrent": 2},
        "resources": {"cpu": 1, "gpu": 0.5},
        "scheduler": {"kind": "fifo"},
        "search": {"skip_duplicates": False},  # two trials of one configuration share the GPU
        "space": {"method": "magnitude", "target_sparsity": 0.5},
    }
    spec = parse_spec(raw, path=str(tmp_path / "space.yaml"))
    prepared = prepare_search(spec, output=tmp_path / "out")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_search(prepared, verbose=0)
    finally:
        ray.shutdown()
    assert summary["errors"] == 0
    analysis = ExperimentAnalysis(str(Path(summary["search_dir"]) / "ray" / "tune"))
    results = [t.last_result for t in analysis.trials]
    assert len(results) == 2
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    for result in results:
        assert result["budget_fraction"] == 1.0
        assert result["numeric_precision"] == expected
        assert abs(result["sparsity"] - 0.5) < 1e-3
