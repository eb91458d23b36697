"""The trial checkpoint format (weights as safetensors, optimizer/LR/method/RNG state, the config;
a trial's final checkpoint without the optimizer and LR state), when a trial writes one
(:class:`CheckpointBudget`), and :func:`load_trained`, which rebuilds a trial's model and
method from a checkpoint (export)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rayprune.methods import PruningMethod, TrainingContext
from rayprune.models import load_model_and_tokenizer, prunable_targets
from rayprune.training.config import TrialConfig, TrialSettings, build_method

__all__ = ["CHECKPOINT_MODEL", "CHECKPOINT_STATE", "CHECKPOINT_META", "CheckpointBudget", "save_checkpoint",
           "load_checkpoint", "load_trained", "state_bytes"]


CHECKPOINT_MODEL = "model.safetensors"


CHECKPOINT_STATE = "trainer_state.pt"


CHECKPOINT_META = "trial.json"


#: What an intermediate checkpoint is assumed to cost per byte before this process has timed one
#: (written, copied into Ray's storage, reported): a local disk's ~200 MB/s.  Replaced by the
#: measured rate after the first checkpoint (the trial's last one at the latest).
ASSUMED_CHECKPOINT_RATE = 200e6

#: The rate (bytes/s) the last timed checkpoint achieved in this process.  Kept across trials:
#: a Ray worker reused for the next trial (``reuse_actors``) starts with what it measured.
_measured_rate: float | None = None


@dataclass
class CheckpointBudget:
    """Whether an intermediate evaluation writes a checkpoint: only while checkpoints stay within
    ``share`` of the trial's time (``training.checkpoint_budget``, default 5 %).

    A checkpoint is written for fault tolerance alone: the final one (always written) is what
    export reads, and the schedulers only stop trials, so they need none.  Each one costs a
    full write of the weights and optimizer state plus Ray's copy into the storage (bench:
    2-3 s for MiniLM's 273 MB on a 2-CPU machine, a tenth of a 30 s evaluation interval).
    Skipping those that would exceed the budget bounds the overhead; the price is that a node
    lost mid-trial redoes more steps, about ``cost / share`` seconds at most per checkpoint
    interval (the Young/Daly trade-off, with the interval set by a cost share instead of a
    failure rate).  Hand-written: Ray Tune's ``CheckpointConfig.checkpoint_frequency`` counts
    iterations of class trainables and knows no cost, and transformers' ``save_steps`` is a
    fixed interval.

    ``share`` 0 writes only the final checkpoint; 1 writes one at every evaluation (tests that
    kill a trial mid-run and need a checkpoint to resume from).
    """

    share: float
    spent_s: float = 0.0

    def due(self, *, elapsed_s: float, size_bytes: int, final: bool) -> bool:
        """Whether to checkpoint now, ``elapsed_s`` into the trial (or its resumed run), for a
        checkpoint of about ``size_bytes``."""
        if final or self.share >= 1.0:
            return True
        if self.share <= 0.0:
            return False
        estimate = size_bytes / (_measured_rate or ASSUMED_CHECKPOINT_RATE)
        return self.spent_s + estimate <= self.share * elapsed_s

    def record(self, seconds: float, size_bytes: int) -> None:
        """A checkpoint of ``size_bytes`` took ``seconds`` (write, copy, report)."""
        global _measured_rate
        self.spent_s += seconds
        if seconds > 0 and size_bytes > 0:
            _measured_rate = size_bytes / seconds


def state_bytes(model: nn.Module, optimizer=None) -> int:
    """Bytes of the tensors a checkpoint holds: the model's state and the optimizer's."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def save_checkpoint(directory: Path, model, optimizer, lr_scheduler, method, step: int, config: TrialConfig) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(state), str(directory / CHECKPOINT_MODEL))
    torch.save(
        {
            # None in a trial's final checkpoint: no step is left to take (export and a resume
            # at the last step need the weights and the method only), and AdamW's two moments
            # are two thirds of the bytes.
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
            "method": method.state_dict() if method is not None else None,
            "step": step,
            "torch_rng": torch.get_rng_state(),
        },
        directory / CHECKPOINT_STATE,
    )
    (directory / CHECKPOINT_META).write_text(json.dumps({"step": step, "config": config.flat}, default=str))


def _untie(state: dict) -> dict:
    """safetensors refuses shared storage; clone tensors that alias another."""
    seen, out = set(), {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def load_checkpoint(directory: Path, model, optimizer, lr_scheduler, method) -> int:
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(directory / CHECKPOINT_MODEL), device=str(device)), strict=False)
    state = torch.load(directory / CHECKPOINT_STATE, weights_only=True, map_location=device)
    if optimizer is not None and state.get("optimizer") is not None:  # resuming (export passes none)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    if method is not None and state.get("method") is not None:
        method.load_state_dict(state["method"])
    if optimizer is not None and state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"].cpu())  # dropout continues as if never interrupted
    return int(state["step"])


def load_trained(checkpoint_dir: Path, config: TrialConfig, settings: TrialSettings, data_info) -> tuple[nn.Module, PruningMethod | None]:
    """Rebuild a trial's model and method from its checkpoint (for export); ``data_info`` is the
    ``data`` section of ``search.json`` (the task it ran)."""
    from rayprune.tasks import task_from_info

    task = task_from_info(data_info)
    model, _ = load_model_and_tokenizer(settings.model, task=task, trust_remote_code=settings.trust_remote_code)
    method, schedule = build_method(config)
    if method is not None:
        # resuming: the weights come from the checkpoint, so prepare must not train (RPP's mlm
        # stage) or depend on the training data.
        ctx = TrainingContext(total_steps=settings.steps, schedule=schedule, resuming=True,
                              num_labels=task.num_labels, is_regression=task.is_regression, task=task)
        method.prepare(model, prunable_targets(model, method.default_scope), ctx)
    load_checkpoint(Path(checkpoint_dir), model, None, None, method)
    return model, method
