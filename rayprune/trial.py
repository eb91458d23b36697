"""One trial: config -> model -> method -> fine-tune and prune -> a report per evaluation.

:func:`run_training` is the loop, with no Ray in it; ``rayprune train --config`` calls it
directly.  :func:`tune_trainable` is the Ray Tune function trainable around it: it reports through
``tune.report`` and checkpoints through ``tune.Checkpoint`` (only ``ray.tune`` APIs, see
ECOSYSTEM.md pain 17).

The loop is ours and short (STYLE §3); it drives the method's hooks in the order documented in
``rayprune/methods/base.py`` and never names a method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from rayprune import measure
from rayprune.methods import PruningMethod, SparsitySchedule, TrainingContext, get_method
from rayprune.models import load_model_and_tokenizer, prunable_targets

__all__ = ["TrialSettings", "TrialConfig", "run_training", "tune_trainable", "evaluate", "build_method"]

CHECKPOINT_MODEL = "model.safetensors"
CHECKPOINT_STATE = "trainer_state.pt"
CHECKPOINT_META = "trial.json"


@dataclass
class TrialSettings:
    """What every trial of a search shares (not searched): model, budget, objective metric.

    Attributes:
        model: model id/path/bundled name.
        metric: the objective metric (a key of the task's metrics).
        steps: optimizer steps per trial (from ``training.steps`` or epochs).
        batch_size / eval_batch_size / eval_interval: as in the YAML ``training`` section.
        learning_rate / weight_decay / warmup_ratio / max_grad_norm / seed: defaults that the
            space may override per trial.
        teacher_dir: dense fine-tuned teacher for methods with ``needs_teacher``.
        threads: torch intra-op threads in the trial (default: the trial's CPU count).
        checkpoint_every: checkpoint every N-th evaluation (and always at the end).
    """

    model: str
    metric: str
    steps: int
    batch_size: int = 32
    eval_batch_size: int = 128
    eval_interval: int = 50
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    teacher_dir: str | None = None
    threads: int | None = None
    checkpoint_every: int = 1

    @property
    def num_evals(self) -> int:
        """Reports per full trial: every ``eval_interval`` steps and at the last step."""
        return len(eval_steps(self.steps, self.eval_interval))


def eval_steps(total: int, interval: int) -> list[int]:
    """1-based step counts after which the trial evaluates."""
    steps = list(range(interval, total + 1, interval))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps


@dataclass
class TrialConfig:
    """One trial's searched configuration, parsed from Tune's flat config dict.

    ``method`` None means dense fine-tuning (the teacher, the dense reference)."""

    method: str | None
    target_sparsity: float
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    batch_size: int
    seed: int
    schedule: dict
    method_options: dict
    flat: dict = field(default_factory=dict)

    @classmethod
    def from_flat(cls, config: Mapping[str, Any], settings: TrialSettings) -> "TrialConfig":
        method = config.get("method")
        schedule, options = {}, {}
        for key, value in config.items():
            scope, _, name = key.partition(".")
            if not name:
                continue
            if scope == "schedule":
                schedule[name] = value
            elif scope == method:
                options[name] = value
            else:
                raise ValueError(f"config key {key!r} does not belong to method {method!r}")
        return cls(
            method=method,
            target_sparsity=float(config.get("target_sparsity", 0.0)),
            learning_rate=float(config.get("learning_rate", settings.learning_rate)),
            weight_decay=float(config.get("weight_decay", settings.weight_decay)),
            warmup_ratio=float(config.get("warmup_ratio", settings.warmup_ratio)),
            batch_size=int(config.get("batch_size", settings.batch_size)),
            seed=int(config.get("seed", settings.seed)),
            schedule=schedule,
            method_options=options,
            flat=dict(config),
        )


def build_method(config: TrialConfig) -> tuple[PruningMethod | None, SparsitySchedule | None]:
    """Instantiate the configured method and its schedule (method defaults < config)."""
    if config.method is None:
        return None, None
    cls = get_method(config.method)
    method = cls(**config.method_options)
    schedule = SparsitySchedule(
        final_sparsity=config.target_sparsity,
        **{**dict(cls.schedule_defaults), **config.schedule},
    )
    return method, schedule


@torch.no_grad()
def predict(model: nn.Module, split, batch_size: int) -> np.ndarray:
    """Logits of ``model`` over a tokenized split, in order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in split.batches(batch_size, shuffle=False):
        batch.pop("labels", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(model(**batch).logits.float().cpu().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 1))


def evaluate(model: nn.Module, split, data, batch_size: int) -> dict[str, float]:
    """Task metrics of ``model`` on ``split`` (``data`` is the TokenizedTask)."""
    from rayprune.metrics import compute_metrics

    logits = predict(model, split, batch_size)
    return compute_metrics(data.metrics, logits, np.asarray(split.labels), is_regression=data.is_regression)


def _cycle_batches(split, batch_size: int, seed: int, start_step: int = 0):
    """Endless shuffled batches, epoch ``e`` shuffled with ``seed + e``; starting at
    ``start_step`` yields exactly what an uninterrupted run would yield from there (resume)."""
    drop_last = len(split) > batch_size
    per_epoch = len(split) // batch_size if drop_last else max(1, math.ceil(len(split) / batch_size))
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        for i, batch in enumerate(split.batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=drop_last)):
            if i >= skip:
                yield batch
        skip = 0
        epoch += 1


def load_teacher(teacher_dir: str | None) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    if not teacher_dir:
        raise ValueError("this method needs a dense teacher, but the trial was given none")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def run_training(
    config: TrialConfig,
    settings: TrialSettings,
    data,
    *,
    report: Callable[[dict, Callable[[Path], None] | None], None] | None = None,
    resume_from: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[nn.Module, PruningMethod | None, dict]:
    """Fine-tune and prune one model; return (model, method, last metrics).

    Args:
        config: the trial's searched values.
        settings: what all trials share.
        data: a ``TokenizedTask`` (train/selection/eval splits, metrics).
        report: called after every evaluation with the metrics and a function that writes a
            checkpoint into a directory (or None when no checkpoint is due).
        resume_from: a checkpoint directory written by that function.
        progress: called with (step, total) after every step (progress bars).
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(
        settings.model, num_labels=data.num_labels, is_regression=data.is_regression
    )
    # Ray gives a trial with `gpu` resources its own CUDA_VISIBLE_DEVICES; otherwise the CPU.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    method, schedule = build_method(config)
    teacher = None
    total = settings.steps
    context = TrainingContext(
        total_steps=total,
        num_train_examples=len(data.train),
        num_labels=data.num_labels,
        is_regression=data.is_regression,
        learning_rate=config.learning_rate,
        evaluate_selection=(
            (lambda m: evaluate(m, data.selection, data, settings.eval_batch_size)[settings.metric])
            if len(data.selection) else None
        ),
        tokenizer=tokenizer,
        unlabeled_texts=getattr(data, "unlabeled_texts", ()),
        max_seq_length=getattr(data, "max_seq_length", 128),
        schedule=schedule,
        device=device,
        resuming=resume_from is not None,
        seed=config.seed,
    )
    if method is not None:
        targets = prunable_targets(model, method.default_scope)
        method.prepare(model, targets, context)
        if method.needs_teacher:
            teacher = load_teacher(settings.teacher_dir).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if method is not None:
        params += list(method.extra_parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    lr_scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total), total
    )
    start_step = 0
    if resume_from is not None:
        start_step = _load_checkpoint(Path(resume_from), model, optimizer, lr_scheduler, method)

    evals = set(eval_steps(total, settings.eval_interval))
    batches = _cycle_batches(data.train, config.batch_size, config.seed, start_step=start_step)
    want_hidden = bool(method is not None and method.needs_hidden_states)
    losses: list[float] = []
    metrics: dict = {}
    t0 = time.perf_counter()
    for step in range(start_step, total):
        context.step = step
        context.learning_rate = lr_scheduler.get_last_lr()[0]
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        outputs = model(**batch, output_hidden_states=want_hidden)
        teacher_outputs = None
        if teacher is not None:
            with torch.no_grad():
                teacher_outputs = teacher(
                    **{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=want_hidden
                )
        loss = extra = None
        if method is not None:
            loss = method.task_loss(outputs, batch, teacher_outputs)
            extra = method.extra_loss(outputs, batch, teacher_outputs)
        if loss is None:
            loss = outputs.loss
        loss.backward(retain_graph=extra is not None)
        if settings.max_grad_norm:  # the task gradient only (see rayprune/methods/base.py)
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        if method is not None:
            method.after_backward(model)
        if extra is not None:
            extra.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if method is not None:
            method.after_optimizer_step(model)
            if schedule.should_update(step, total):
                method.step(schedule.sparsity_at(step, total))
            method.apply_masks()
        losses.append(float((loss + extra).detach()) if extra is not None else float(loss.detach()))
        if progress is not None:
            progress(step + 1, total)
        done = step + 1
        if done in evals:
            metrics = evaluate(model, data.eval, data, settings.eval_batch_size)
            metrics.update(_sparsity_metrics(model, method))
            if method is not None:
                metrics.update({f"method/{k}": float(v) for k, v in method.diagnostics().items()})
            metrics.update(
                target_sparsity=config.target_sparsity,
                scheduled_sparsity=schedule.sparsity_at(step, total) if schedule else 0.0,
                train_loss=float(np.mean(losses)) if losses else float("nan"),
                step=done,
                budget_fraction=done / total,
                seconds=time.perf_counter() - t0,
            )
            losses = []
            eval_index = sorted(evals).index(done) + 1
            due = done == total or eval_index % max(settings.checkpoint_every, 1) == 0
            writer = None
            if due:
                def writer(directory: Path, _step=done):
                    _save_checkpoint(Path(directory), model, optimizer, lr_scheduler, method, _step, config)
            if report is not None:
                report(dict(metrics), writer)
    return model, method, metrics


def _sparsity_metrics(model: nn.Module, method: PruningMethod | None) -> dict[str, float]:
    """Measured sparsity of the prunable set (``sparsity``) and of all encoder parameters."""
    scope = method.default_scope if method is not None else "encoder_linear"
    return {
        "sparsity": measure.sparsity(model, prunable_targets(model, scope)),
        "sparsity_encoder": measure.encoder_sparsity(model),
    }


def _save_checkpoint(directory: Path, model, optimizer, lr_scheduler, method, step: int, config: TrialConfig) -> None:
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


def _load_checkpoint(directory: Path, model, optimizer, lr_scheduler, method) -> int:
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
        settings.model, num_labels=data_info["num_labels"], is_regression=data_info["is_regression"]
    )
    method, schedule = build_method(config)
    if method is not None:
        # resuming: the weights come from the checkpoint, so prepare must not train (RPP's mlm
        # stage) or depend on the training data.
        ctx = TrainingContext(total_steps=settings.steps, schedule=schedule, resuming=True,
                              num_labels=data_info["num_labels"], is_regression=data_info["is_regression"])
        method.prepare(model, prunable_targets(model, method.default_scope), ctx)
    _load_checkpoint(Path(checkpoint_dir), model, None, None, method)
    return model, method


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

    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            resume = Path(tempfile.mkdtemp())
            for name in os.listdir(ckpt_dir):
                (resume / name).write_bytes((Path(ckpt_dir) / name).read_bytes())
        run_training(trial_config, settings, data, report=report, resume_from=resume)
    else:
        run_training(trial_config, settings, data, report=report)
