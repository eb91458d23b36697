"""The Ray Tune function trainable around :func:`rayprune.training.loop.run_training`: the only
module of ``rayprune.training`` that imports Ray.  It reports through ``tune.report`` and
checkpoints through ``tune.Checkpoint`` (only ``ray.tune`` APIs, ECOSYSTEM.md pain 17)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from rayprune.training.config import TrialConfig, TrialSettings
from rayprune.training.loop import run_training
from rayprune.training.precision import release_device_memory

__all__ = ["tune_trainable"]


def tune_trainable(config: dict, *, settings: TrialSettings, data) -> None:
    """Ray Tune function trainable: ``tune.with_parameters(tune_trainable, settings=..., data=...)``.

    ``data`` arrives through Ray's object store (tokenised once on the driver).
    """
    from ray import tune

    settings = dataclasses.replace(settings)
    if settings.threads is None:
        settings.threads = max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    trial_config = TrialConfig.from_flat(config, settings)
    checkpoint = tune.get_checkpoint()

    import ray

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, writer) -> None:
        metrics["node_id"] = node_id
        if writer is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            writer(Path(tmp))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    # The model, optimizer and method are dropped with run_training's return value; the finally
    # frees them and the CUDA cache now, not when the worker exits, for the trials that share
    # this GPU (fractional `resources.gpu`) or reuse this worker.
    try:
        if checkpoint is None:
            run_training(trial_config, settings, data, report=report)
            return
        # A private copy of the checkpoint (``as_directory`` may hand out the storage copy itself,
        # which Ray deletes once newer checkpoints exist); removed when the trial ends.
        with tempfile.TemporaryDirectory(prefix="rayprune-resume-") as resume:
            with checkpoint.as_directory() as ckpt_dir:
                shutil.copytree(ckpt_dir, resume, dirs_exist_ok=True)
            run_training(trial_config, settings, data, report=report, resume_from=Path(resume))
    finally:
        release_device_memory()
