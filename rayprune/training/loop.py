"""One trial: config -> model -> method -> fine-tune and prune -> a report per evaluation.

:func:`run_training` is the loop, with no Ray in it; ``rayprune train --config`` calls it
directly and :mod:`rayprune.training.trainable` wraps it for Ray Tune.

The loop is ours and short (STYLE §3); it never names a method.  What a method's hooks do in a
training step, and in which order, is defined once, by :func:`method_step_hooks`, which the loop
calls every step and the method tests drive too.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rayprune import measure
from rayprune.methods import PruningMethod, SparsitySchedule, TrainingContext
from rayprune.models import load_model_and_tokenizer, prunable_targets
from rayprune.training.checkpoint import CheckpointBudget, load_checkpoint, save_checkpoint, state_bytes
from rayprune.training.config import TrialConfig, TrialSettings, build_method, eval_steps
from rayprune.methods.dense import DenseMethod
from rayprune.training.precision import Precision

__all__ = ["run_training", "method_step_hooks", "load_teacher", "distillation_loss", "TrialFailed",
           "SPARSITY_SHORTFALL"]

#: A trial whose measured sparsity ends more than this below its target has failed: the method did
#: not prune what it was asked to (a diverged or broken run), and its metric is not comparable.
#: 0.05 leaves room for methods that prune whole units (GRAIN lands within one unit of its target).
SPARSITY_SHORTFALL = 0.05


class TrialFailed(RuntimeError):
    """Raised when a trial cannot give a usable result: a non-finite loss, metric or weight, or a
    measured sparsity far below the target at the end of the budget.  Raised at once, so Ray marks
    the trial ERROR, Optuna is told it failed and the search goes on; the message is the reason
    shown in ``results.csv``."""


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                      *, is_regression: bool = False) -> torch.Tensor:
    """Soft-target loss over one logit vector per row (kept for callers from before tasks; the
    loop asks the task: :meth:`rayprune.tasks.base.Task.distillation_loss`)."""
    from rayprune.tasks.classification import logits_distillation_loss

    return logits_distillation_loss(student_logits, teacher_logits, temperature, is_regression=is_regression)


def _distill_options(config: TrialConfig) -> tuple[float, float]:
    """(alpha, temperature) from the trial's ``distill.*`` keys; alpha 0 (the default) is off."""
    alpha = float(config.distill.get("alpha", 0.0))
    temperature = float(config.distill.get("temperature", 2.0))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distill.alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"distill.temperature must be > 0, got {temperature}")
    return alpha, temperature


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


def load_teacher(teacher_dir: str | None, task=None) -> nn.Module:
    """The dense reference, frozen, with the head of ``task`` (a sequence classifier without one)."""
    if not teacher_dir:
        raise ValueError("this method needs a dense teacher, but the trial was given none")
    if task is None:
        from transformers import AutoModelForSequenceClassification

        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    else:  # the task's head size and label names: a teacher with another head is refused, not misread
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(teacher_dir, **task.model_config())
        teacher = task.model_class().from_pretrained(teacher_dir, config=config)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def method_step_hooks(
    method: PruningMethod | None,
    model: nn.Module,
    *,
    step: int,
    total: int,
    schedule: SparsitySchedule | None,
    optimizer_step: Callable[[bool], None],
    extra_backward: Callable[[], bool | None] | None = None,
    finite: bool = True,
) -> bool:
    """The rest of a training step once the task loss's gradients are in ``.grad``: the one
    definition of when a pruning method's hooks run (:func:`run_training` calls it every step;
    tests that simulate steps call it instead of the hooks)::

        method.after_backward(model)       # the task loss's gradients only
        extra_backward()                   # the extra loss (GRAIN's hidden loss, penalties)
        optimizer_step(finite)             # the weights, the learning rate, zero_grad
        method.after_optimizer_step(model)
        if schedule.should_update(step, total):
            method.step(schedule.sparsity_at(step, total))
        method.apply_masks()

    What comes before stays with the caller: the forward and the loss hooks, the task loss's
    backward and, in the trial, fp16 unscaling and gradient clipping, so ``after_backward`` reads
    clipped true task gradients.  A step whose gradients overflowed (fp16) feeds the method
    nothing and takes no update, only the masking schedule goes on: task gradients that are not
    ``finite`` skip ``after_backward`` and the extra backward, an extra backward that returns
    False skips what follows it; either way ``optimizer_step(False)`` and no
    ``after_optimizer_step``.

    Args:
        method: the trial's method; ``None`` runs the optimizer step alone.
        model: the model the method prunes (what its hooks are given).
        step: the current 0-based optimizer step.
        total: optimizer steps in the run.
        schedule: the run's sparsity schedule; ``None`` never calls ``method.step``.
        optimizer_step: called once with whether the gradients are finite; steps the optimizer
            (or skips it), the learning-rate schedule and zeroes the gradients.  The trial passes
            ``Precision.step`` + ``lr_scheduler.step`` + ``zero_grad``; a test a plain optimizer
            step, or nothing when it sets the gradients by hand.
        extra_backward: back-propagates the method's extra loss and returns False when its
            gradients overflowed (anything else, e.g. the ``None`` of ``extra.backward``, counts
            as finite); ``None`` when the step has no extra loss.
        finite: whether the task loss's gradients are finite (``Precision.unscale``).

    Returns:
        whether the step's gradients were finite, i.e. the optimizer step was taken.
    """
    if finite and method is not None:
        method.after_backward(model)
    if finite and extra_backward is not None:
        finite = extra_backward() is not False
    optimizer_step(finite)
    if method is not None:
        if finite:
            method.after_optimizer_step(model)
        if schedule is not None and schedule.should_update(step, total):
            method.step(schedule.sparsity_at(step, total))
        method.apply_masks()
    return finite


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

    The loop: a batch, the forward, the loss (the task's, or the method's, plus distillation and
    the method's extra loss), backward, the method's hooks (:func:`method_step_hooks`), and every
    ``eval_interval`` steps the task's evaluation, reported with a checkpoint writer.  What the
    head is lives in ``data.task``; what the method does lives in its hooks (a dense trial gets
    :class:`~rayprune.methods.dense.DenseMethod`, which does nothing).

    Args:
        config: the trial's searched values.
        settings: what all trials share.
        data: a ``TokenizedTask`` (train/selection/eval splits and the task).
        report: called after every evaluation with the metrics and a function that writes a
            checkpoint into a directory (or None when no checkpoint is due: the final evaluation
            always checkpoints, the others within ``settings.checkpoint_budget``).
        resume_from: a checkpoint directory written by that function.
        progress: called with (step, total) after every step (progress bars).

    Returns:
        the model, the method (``None`` for a dense trial) and the last evaluation's metrics.
    """
    trial = _Trial(config, settings, data, resume_from)
    model, method, precision = trial.model, trial.method, trial.precision
    total = settings.steps
    evals = set(eval_steps(total, settings.eval_interval))
    batches = _cycle_batches(data.train, config.batch_size, config.seed, start_step=trial.start_step)
    losses: list[float] = []
    metrics: dict = {}
    checkpoints = CheckpointBudget(settings.checkpoint_budget)
    t0 = time.perf_counter()
    for step in range(trial.start_step, total):
        trial.context.step = step
        trial.context.learning_rate = trial.lr_scheduler.get_last_lr()[0]
        batch = precision.to_device(next(batches))
        with precision.autocast():  # forwards and losses; backward and the hooks run outside
            loss, extra = trial.losses(batch)
        precision.backward(loss, retain_graph=extra is not None)
        # fp16: true gradients before clipping and before the method reads them; an overflowed
        # step is skipped whole (no statistics, no update), only the masking schedule goes on.
        finite = precision.unscale(trial.optimizer)
        if finite and settings.max_grad_norm:  # the task gradient only (see rayprune/methods/base.py)
            torch.nn.utils.clip_grad_norm_(trial.params, settings.max_grad_norm)
        finite = method_step_hooks(
            method, model, step=step, total=total, schedule=trial.schedule, optimizer_step=trial.optimizer_step,
            extra_backward=None if extra is None else functools.partial(precision.backward_extra, extra),
            finite=finite,
        )
        losses.append(float((loss + extra).detach()) if extra is not None else float(loss.detach()))
        if not math.isfinite(losses[-1]) and finite:  # fp16: a step the loss scaler skipped is not divergence
            raise TrialFailed(f"non-finite training loss ({losses[-1]}) at step {step + 1}")
        if progress is not None:
            progress(step + 1, total)
        done = step + 1
        if done not in evals:
            continue
        metrics = trial.evaluate(done)
        metrics.update(train_loss=float(np.mean(losses)) if losses else float("nan"),
                       seconds=time.perf_counter() - t0)
        losses = []
        if report is None:
            continue
        final = done == total
        kept_optimizer = None if final else trial.optimizer  # the final checkpoint needs no optimizer
        size = state_bytes(model, kept_optimizer)
        due = checkpoints.due(elapsed_s=time.perf_counter() - t0, size_bytes=size, final=final)
        started = time.perf_counter()
        report(dict(metrics), functools.partial(trial.write_checkpoint, step=done, optimizer=kept_optimizer)
               if due else None)
        if due:
            checkpoints.record(time.perf_counter() - started, size)
    return model, (None if trial.dense else method), metrics


class _Trial:
    """Everything one trial builds before its first step: the model with the task's head, the
    method (or the null one) and its schedule, the teacher when one is needed, the optimizer,
    the learning-rate schedule, mixed precision, and the restored state when resuming."""

    def __init__(self, config: TrialConfig, settings: TrialSettings, data, resume_from: Path | None):
        if settings.threads:
            torch.set_num_threads(settings.threads)
        torch.manual_seed(config.seed)
        self.config, self.settings, self.data, self.task = config, settings, data, data.task
        self.model, tokenizer = load_model_and_tokenizer(settings.model, task=self.task,
                                                         trust_remote_code=settings.trust_remote_code)
        # Ray gives a trial with `gpu` resources its own CUDA_VISIBLE_DEVICES; otherwise the CPU.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.precision = Precision.create(settings.precision, self.device)
        self.model.to(self.device).train()
        method, self.schedule = build_method(config)
        self.dense = method is None
        self.method = DenseMethod() if method is None else method
        self.alpha, self.temperature = _distill_options(config)
        self.context = TrainingContext(
            total_steps=settings.steps,
            num_train_examples=len(data.train),
            num_labels=self.task.num_labels,
            is_regression=self.task.is_regression,
            learning_rate=config.learning_rate,
            evaluate_selection=(
                (lambda m: self.task.evaluate(m, data.selection, settings.eval_batch_size)[settings.metric])
                if len(data.selection) else None
            ),
            tokenizer=tokenizer,
            unlabeled_texts=getattr(data, "unlabeled_texts", ()),
            max_seq_length=getattr(data, "max_seq_length", 128),
            schedule=self.schedule,
            device=self.device,
            resuming=resume_from is not None,
            seed=config.seed,
            task=self.task,
            calibration_batches=functools.partial(_calibration_batches, data.train, self.task, self.device,
                                                  settings.eval_batch_size),
        )
        self.scope = self.method.default_scope if not self.dense else "encoder_linear"
        self.method.prepare(self.model, prunable_targets(self.model, self.scope), self.context)
        self.teacher = None
        if self.method.needs_teacher or self.alpha > 0:
            self.teacher = load_teacher(settings.teacher_dir, self.task).to(self.device)
        self.want_hidden = bool(self.method.needs_hidden_states)
        self.params = [p for p in self.model.parameters() if p.requires_grad] + list(self.method.extra_parameters())
        self.optimizer = self.precision.optimizer(self.params, lr=config.learning_rate,
                                                  weight_decay=config.weight_decay)
        if settings.compile:
            self.model.compile()  # in place: parameter names and tensors stay those the method holds
        from transformers import get_linear_schedule_with_warmup

        self.lr_scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(config.warmup_ratio * settings.steps), settings.steps)
        self.start_step = 0
        if resume_from is not None:
            self.start_step = load_checkpoint(Path(resume_from), self.model, self.optimizer, self.lr_scheduler,
                                              self.method)
            self.precision.load(Path(resume_from))

    def losses(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(task loss, the method's extra loss or None) of one training batch: the method may
        replace the task's loss (``task_loss``); otherwise the task's, mixed with distillation
        from the dense reference when ``distill.alpha > 0``."""
        outputs = self.model(**batch, output_hidden_states=self.want_hidden)
        teacher_outputs = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_outputs = self.teacher(**self.task.model_inputs(batch), output_hidden_states=self.want_hidden)
        loss = self.method.task_loss(outputs, batch, teacher_outputs)
        extra = self.method.extra_loss(outputs, batch, teacher_outputs)
        if loss is None:
            loss = self.task.loss(outputs, batch)
            if self.alpha > 0:
                loss = (1 - self.alpha) * loss + self.alpha * self.task.distillation_loss(
                    outputs, teacher_outputs, batch, self.temperature)
        return loss, extra

    def optimizer_step(self, finite: bool) -> None:
        self.precision.step(self.optimizer, finite=finite)  # skipped (and the fp16 scale backed off) if not finite
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self, done: int) -> dict:
        """The report of an evaluation after ``done`` steps: the task's metrics, ``retained``,
        the measured sparsity, the method's diagnostics and the run's counters.  The task metric
        and sparsity come first (MLflow lists metrics in the order they were logged)."""
        config, settings, total = self.config, self.settings, self.settings.steps
        metrics = self.task.evaluate(self.model, self.data.eval, settings.eval_batch_size)
        _check_finite(self.model, metrics, settings.metric, done)
        if settings.reference_metric:
            metrics["retained"] = metrics[settings.metric] / settings.reference_metric
        metrics.update(_sparsity_metrics(self.model, self.scope))
        if done == total:
            _check_sparsity(config, None if self.dense else self.method, metrics)
            metrics.update(_constraint_measurements(self.model, None if self.dense else self.method, self.data,
                                                    settings, self.device))
        metrics.update({f"method/{k}": float(v) for k, v in self.method.diagnostics().items()})
        metrics["numeric_precision"] = self.precision.name  # fp32 | bf16 | fp16; "precision" is NER's metric
        if self.precision.scaler is not None:
            metrics["skipped_steps"] = self.precision.skipped_steps
        metrics.update(
            target_sparsity=config.target_sparsity,
            scheduled_sparsity=self.schedule.sparsity_at(done - 1, total) if self.schedule else 0.0,
            step=done,
            budget_fraction=done / total,
        )
        return metrics

    def write_checkpoint(self, directory: Path, *, step: int, optimizer) -> None:
        save_checkpoint(Path(directory), self.model, optimizer, self.lr_scheduler if optimizer is not None else None,
                        None if self.dense else self.method, step, self.config)
        self.precision.save(Path(directory))


def _calibration_batches(split, task, device: str, batch_size: int, num_samples: int, seed: int):
    """``num_samples`` training rows drawn with ``seed`` (all of them when fewer), as model-input
    batches without targets on ``device``: the calibration set of one-shot methods (Wanda,
    SparseGPT), read from the train split as both papers do, never from eval."""
    n = len(split)
    take = min(int(num_samples), n)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=take, replace=False)) if take < n else np.arange(n)
    for batch in split.subset(rows).batches(batch_size, shuffle=False):
        yield {k: v.to(device) for k, v in task.model_inputs(batch).items()}


def _check_finite(model: nn.Module, metrics: dict, metric: str, step: int) -> None:
    """Raise :class:`TrialFailed` if the objective metric or any weight is NaN or infinite (a
    diverged model still gets a finite accuracy: argmax of NaN logits is class 0)."""
    if not math.isfinite(metrics[metric]):
        raise TrialFailed(f"non-finite {metric} ({metrics[metric]}) at step {step}")
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrialFailed(f"non-finite weights at step {step} in {len(bad)} tensors, e.g. {bad[0]}")


def _check_sparsity(config: TrialConfig, method: PruningMethod | None, metrics: dict) -> None:
    """Raise :class:`TrialFailed` if the measured sparsity ends more than ``SPARSITY_SHORTFALL``
    below the target.  The better of the prunable-set and encoder sparsities counts: structured
    methods reach their target over the encoder parameters."""
    if method is None or config.target_sparsity <= 0:
        return
    reached = max(metrics["sparsity"], metrics["sparsity_encoder"])
    if config.target_sparsity - reached > SPARSITY_SHORTFALL:
        raise TrialFailed(f"measured sparsity {reached:.3f} is far below the target {config.target_sparsity:.3f} "
                          f"at the end of the budget (more than {SPARSITY_SHORTFALL} below)")


#: The fixed batch that ``latency_ms`` is measured on: the first this many eval examples (the same
#: batch for every trial of a search).
LATENCY_BATCH = 8


def _constraint_measurements(model: nn.Module, method: PruningMethod | None, data, settings: TrialSettings,
                             device: str) -> dict[str, float]:
    """What ``objective.constraints`` asks of a finished trial, on the model as it would be
    exported: ``parameters`` (non-zero ones; physical ones for structured methods, whose export
    drops whole units) and ``latency_ms`` (median forward time of a fixed batch on the trial's
    device).  Measured on a copy, so the trial's model and method stay as they are."""
    wanted = {k for k, v in (settings.constraints or {}).items() if v is not None}
    if not wanted & {"max_parameters", "max_latency_ms"}:
        return {}
    import copy

    deployed = copy.deepcopy(method).finalize() if method is not None and method.structured else model
    out = {}
    if "max_parameters" in wanted:
        out["parameters"] = float(measure.count_parameters(deployed, nonzero=not (method is not None and method.structured)))
    if "max_latency_ms" in wanted:
        batch = next(iter(data.eval.batches(LATENCY_BATCH, shuffle=False)))
        inputs = {k: v.to(device) for k, v in data.task.model_inputs(batch).items()}
        out["latency_ms"] = 1000.0 * measure.measure_latency(deployed, inputs).median_s
        model.train()
    return out


def _sparsity_metrics(model: nn.Module, scope: str) -> dict[str, float]:
    """Measured sparsity of the prunable set (``sparsity``) and of all encoder parameters."""
    return {
        "sparsity": measure.sparsity(model, prunable_targets(model, scope)),
        "sparsity_encoder": measure.encoder_sparsity(model),
    }
