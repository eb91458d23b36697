"""When a trial checkpoints (CheckpointBudget) and where it stages the files (the RAM disk)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from rayprune.training import TrialConfig, TrialSettings, run_training
from rayprune.training import checkpoint as checkpoint_module
from rayprune.training import trainable as trainable_module
from rayprune.training.checkpoint import ASSUMED_CHECKPOINT_RATE, CheckpointBudget

MB = 1_000_000


@pytest.fixture(autouse=True)
def no_measured_rate(monkeypatch):
    """Each test starts as a fresh worker: no checkpoint timed yet."""
    monkeypatch.setattr(checkpoint_module, "_measured_rate", None)


def test_the_final_evaluation_always_checkpoints():
    for share in (0.0, 0.05, 1.0):
        assert CheckpointBudget(share).due(elapsed_s=0.0, size_bytes=10**12, final=True)


def test_an_intermediate_checkpoint_waits_until_the_budget_covers_it():
    budget = CheckpointBudget(0.05)
    size = int(ASSUMED_CHECKPOINT_RATE)  # estimated at 1 s before any is timed
    assert not budget.due(elapsed_s=10.0, size_bytes=size, final=False)  # 1 s > 5% of 10 s
    assert budget.due(elapsed_s=20.0, size_bytes=size, final=False)      # 1 s = 5% of 20 s
    budget.record(2.0, size)  # it took 2 s: the next is estimated at the measured rate, 2 s
    assert not budget.due(elapsed_s=60.0, size_bytes=size, final=False)  # 2 + 2 s > 3 s
    assert budget.due(elapsed_s=80.0, size_bytes=size, final=False)      # 4 s = 5% of 80 s


def test_the_measured_rate_carries_over_to_the_next_trial_in_the_worker():
    CheckpointBudget(0.05).record(0.01, 100 * MB)  # 10 GB/s measured by an earlier trial
    assert CheckpointBudget(0.05).due(elapsed_s=1.0, size_bytes=100 * MB, final=False)


def test_share_zero_and_one():
    assert not CheckpointBudget(0.0).due(elapsed_s=1e9, size_bytes=1, final=False)
    assert CheckpointBudget(1.0).due(elapsed_s=0.0, size_bytes=10**12, final=False)


@pytest.mark.parametrize("share, checkpointed_steps", [(0.0, [6]), (1.0, [3, 6])])
def test_the_trial_offers_a_writer_only_where_the_budget_allows(tiny_dir, demo_data_of, share, checkpointed_steps):
    settings = TrialSettings(model=tiny_dir, metric="accuracy", steps=6, batch_size=8, eval_interval=3, threads=1,
                             checkpoint_budget=share)
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5}, settings)
    offered = []
    run_training(config, settings, demo_data_of(60, 20),
                 report=lambda metrics, writer: offered.append((metrics["step"], writer is not None)))
    assert [step for step, has_writer in offered if has_writer] == checkpointed_steps
    assert [step for step, _ in offered] == [3, 6]  # every evaluation is reported either way


def test_checkpoints_stage_on_the_ram_disk_when_it_has_room(tmp_path, monkeypatch):
    monkeypatch.setattr(trainable_module, "RAM_DISK", tmp_path)
    monkeypatch.setattr(trainable_module, "RAM_DISK_RESERVE", 0)
    assert trainable_module.checkpoint_staging_dir(1) == str(tmp_path)
    free = __import__("shutil").disk_usage(tmp_path).free
    assert trainable_module.checkpoint_staging_dir(free) is None  # twice the last one does not fit
    assert trainable_module.checkpoint_staging_dir(-1) is None    # staging in RAM failed before
    monkeypatch.setattr(trainable_module, "RAM_DISK", tmp_path / "absent")
    assert trainable_module.checkpoint_staging_dir(1) is None


def test_staging_left_by_a_killed_trial_is_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    prefix = trainable_module.STAGING_PREFIX
    stale = tmp_path / f"{prefix}{dead_pid}-abc"
    recent = tmp_path / f"{prefix}{dead_pid}-def"
    alive = tmp_path / f"{prefix}{os.getpid()}-ghi"
    for path in (stale, recent, alive):
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x")
    old = time.time() - trainable_module.STALE_STAGING_S - 60
    for path in (stale, alive):
        os.utime(path, (old, old))
    assert trainable_module.remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists() and recent.exists() and alive.exists()
