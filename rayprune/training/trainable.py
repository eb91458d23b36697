"""The Ray Tune function trainable around :func:`rayprune.training.loop.run_training`: the only
module of ``rayprune.training`` that imports Ray.  It reports through ``tune.report`` and
checkpoints through ``tune.Checkpoint`` (only ``ray.tune`` APIs, ECOSYSTEM.md pain 17)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from rayprune.training.config import TrialConfig, TrialSettings
from rayprune.training.loop import run_training
from rayprune.training.precision import release_device_memory

__all__ = ["tune_trainable", "checkpoint_staging_dir"]

#: A RAM-backed directory to stage checkpoints in (Linux).
RAM_DISK = Path("/dev/shm")

#: Staging directories are named ``rayprune-ckpt-<pid>-<random>``.
STAGING_PREFIX = "rayprune-ckpt-"

#: A staging directory this old whose process is gone was left by a killed trial: removed.
STALE_STAGING_S = 600

#: Free space the RAM disk must keep beside a staged checkpoint (Ray's object store lives there too).
RAM_DISK_RESERVE = 1 << 30


def checkpoint_staging_dir(last_bytes: int) -> str | None:
    """Where to write a checkpoint before ``tune.report`` copies it into the trial's storage:
    the RAM disk when it, and the machine's available memory, have room for twice the last
    checkpoint plus :data:`RAM_DISK_RESERVE`, else None (the default temporary directory).  ``last_bytes`` -1: staging in RAM failed, do
    not try again."""
    if last_bytes < 0:
        return None
    needed = 2 * last_bytes + RAM_DISK_RESERVE
    try:
        free = shutil.disk_usage(RAM_DISK).free
    except OSError:
        return None
    if free < needed or _available_memory() < needed or not os.access(RAM_DISK, os.W_OK):
        return None
    remove_stale_staging(RAM_DISK)
    return str(RAM_DISK)


def remove_stale_staging(root: Path, *, now: float | None = None) -> list[Path]:
    """Remove the staging directories under ``root`` that a killed trial left behind (RAM on
    the RAM disk is held until reboot otherwise): older than :data:`STALE_STAGING_S` and
    named after a process that no longer exists.  Returns what was removed."""
    import time

    now = time.time() if now is None else now
    removed = []
    for path in root.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        try:
            old = now - path.stat().st_mtime > STALE_STAGING_S
        except OSError:
            continue
        if old and pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _available_memory() -> int:
    """The kernel's estimate of memory available without swapping (``MemAvailable``); 0 where
    there is no ``/proc/meminfo`` (then nothing is staged in RAM)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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

    staged_bytes = 0  # the size of the last checkpoint, to check the RAM disk has room for the next

    def report(metrics: dict, writer) -> None:
        nonlocal staged_bytes
        metrics["node_id"] = node_id
        if writer is None:
            tune.report(metrics)
            return
        # Ray copies the directory into the trial's storage; staged in RAM, the checkpoint is
        # written to disk once instead of twice (bench_overhead.py).
        staging = checkpoint_staging_dir(staged_bytes)
        tmp = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=staging)
        try:
            try:
                writer(Path(tmp))
            except (OSError, RuntimeError):  # torch.save reports a full disk as a RuntimeError
                if staging is None:
                    raise
                # The RAM disk filled up (its space is shared with Ray's object store): this
                # checkpoint and the next ones go to the regular temporary directory.
                shutil.rmtree(tmp, ignore_errors=True)
                staged_bytes = -1
                tmp = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-")
                writer(Path(tmp))
            if staged_bytes >= 0:
                staged_bytes = sum(f.stat().st_size for f in Path(tmp).iterdir() if f.is_file())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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
