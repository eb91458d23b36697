"""The trial checkpoint format (weights as safetensors, optimizer/LR/method/RNG state, the config)
and :func:`load_trained`, which rebuilds a trial's model and method from it (export)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rayprune.methods import PruningMethod, TrainingContext
from rayprune.models import load_model_and_tokenizer, prunable_targets
from rayprune.training.config import TrialConfig, TrialSettings, build_method

__all__ = ["CHECKPOINT_MODEL", "CHECKPOINT_STATE", "CHECKPOINT_META", "save_checkpoint", "load_checkpoint",
           "load_trained"]


CHECKPOINT_MODEL = "model.safetensors"


CHECKPOINT_STATE = "trainer_state.pt"


CHECKPOINT_META = "trial.json"


def save_checkpoint(directory: Path, model, optimizer, lr_scheduler, method, step: int, config: TrialConfig) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(state), str(directory / CHECKPOINT_MODEL))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
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
    if optimizer is not None:  # resuming training (export passes no optimizer)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    if method is not None and state.get("method") is not None:
        method.load_state_dict(state["method"])
    if optimizer is not None and state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"].cpu())  # dropout continues as if never interrupted
    return int(state["step"])


def load_trained(checkpoint_dir: Path, config: TrialConfig, settings: TrialSettings, data_info) -> tuple[nn.Module, PruningMethod | None]:
    """Rebuild a trial's model and method from its checkpoint (for export)."""
    model, _ = load_model_and_tokenizer(
        settings.model, num_labels=data_info["num_labels"], is_regression=data_info["is_regression"],
        trust_remote_code=settings.trust_remote_code,
    )
    method, schedule = build_method(config)
    if method is not None:
        # resuming: the weights come from the checkpoint, so prepare must not train (RPP's mlm
        # stage) or depend on the training data.
        ctx = TrainingContext(total_steps=settings.steps, schedule=schedule, resuming=True,
                              num_labels=data_info["num_labels"], is_regression=data_info["is_regression"])
        method.prepare(model, prunable_targets(model, method.default_scope), ctx)
    load_checkpoint(Path(checkpoint_dir), model, None, None, method)
    return model, method
