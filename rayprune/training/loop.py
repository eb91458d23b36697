"""One trial: config -> model -> method -> fine-tune and prune -> a report per evaluation.

:func:`run_training` is the loop, with no Ray in it; ``rayprune train --config`` calls it
directly and :mod:`rayprune.training.trainable` wraps it for Ray Tune.

The loop is ours and short (STYLE §3); it drives the method's hooks in the order documented in
``rayprune/methods/base.py`` and never names a method.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rayprune import measure
from rayprune.methods import PruningMethod, TrainingContext
from rayprune.models import load_model_and_tokenizer, prunable_targets
from rayprune.training.checkpoint import load_checkpoint, save_checkpoint
from rayprune.training.config import TrialConfig, TrialSettings, build_method, eval_steps
from rayprune.training.evaluation import evaluate

__all__ = ["run_training", "load_teacher"]


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
        start_step = load_checkpoint(Path(resume_from), model, optimizer, lr_scheduler, method)

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
                    save_checkpoint(Path(directory), model, optimizer, lr_scheduler, method, _step, config)
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
