"""PINS (Ren & Zhu, ACL Findings 2023): principled importance plus self-regularisation (SPEC §4).

Two ingredients:

* **Score.**  Keeping the k entries that minimise the first-order loss after the next update
  θ' = M ⊙ (θ − η∇L) is a 0–1 integer linear programme whose solution keeps the largest
  ``S = −θ ⊙ g + η ⊙ g²``.  The official code takes ``|S|`` and runs it through PLATON's window
  and EMA machinery (Ī·Ū), so :class:`PINSMethod` is :class:`~rayprune.methods.platon.PlatonMethod`
  with another instantaneous importance.
* **Self-regularisation.**  The student is distilled towards its own best earlier checkpoint
  (the "teacher"), with a per-example weight from the student's confidence; see
  :func:`self_distillation_loss`.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rayprune.methods.base import MaskPolicy, TrainingContext, mask_policy_option
from rayprune.methods.platon import PlatonMethod, PlatonOptions

__all__ = ["PINSMethod", "PINSOptions", "confidence_weight", "self_distillation_loss"]


def confidence_weight(logits: torch.Tensor) -> torch.Tensor:
    """α_i = 1 − H(softmax(z_i)) / log C for each row of ``logits`` (batch, C), detached.

    0 for a uniform prediction, → 1 for a one-hot one: confident examples lean on the teacher.
    """
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError(f"confidence_weight needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    entropy = torch.distributions.Categorical(logits=logits.detach().float()).entropy()  # (batch,)
    return 1.0 - entropy / math.log(num_classes)


def self_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Per-example PINS loss ``α_i·KD_i + (1 − α_i)·CE_i`` (SPEC §4.3), shape (batch,).

    ``KD_i = T²·CE(softmax(z_T/T), log_softmax(z_S/T))`` (soft cross-entropy; the T² keeps the
    gradient scale independent of T), ``CE_i`` the cross-entropy to the label, and ``α_i`` from
    :func:`confidence_weight` of the student's own logits.
    """
    alpha = confidence_weight(student_logits).to(student_logits.dtype)
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    soft_targets = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    # F.cross_entropy accepts class probabilities as target: −Σ_c p_T,c · log_softmax(z_S/T)_c.
    soft = F.cross_entropy(student_logits / temperature, soft_targets, reduction="none")
    return alpha * (temperature**2) * soft + (1.0 - alpha) * hard


@dataclass(kw_only=True)
class PINSOptions(PlatonOptions):
    """Options of :class:`PINSMethod` (PLATON's ``beta1``/``delta_t`` plus the ones below).

    Attributes:
        beta2: uncertainty EMA factor; 0.99 in the official RTE script (argparse default 0).
        temperature: distillation temperature T (> 0); 2.0 in the official code.
        eval_interval: optimizer steps between selection-split evaluations (the official
            ``logging_steps`` = 50).
        self_distill: distil towards the best earlier checkpoint (``False`` ablates it: plain
            cross-entropy, no evaluations).
        mask_policy: ``reselect`` (default: the official ``post_prune`` re-zeroes by the current
            threshold at every masking step, with no persistent mask) or ``persistent``.
    """

    mask_policy: MaskPolicy = mask_policy_option(
        "reselect", "official post_prune re-zeroes by the current threshold, no persistent mask"
    )
    beta2: float = 0.99
    temperature: float = 2.0
    eval_interval: int = 50
    self_distill: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, numbers.Real):
            raise TypeError(f"temperature must be a real number, got temperature={self.temperature!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got temperature={self.temperature}")
        if isinstance(self.eval_interval, bool) or not isinstance(self.eval_interval, numbers.Integral):
            raise TypeError(f"eval_interval must be an int, got eval_interval={self.eval_interval!r}")
        if self.eval_interval < 1:
            raise ValueError(f"eval_interval must be >= 1, got eval_interval={self.eval_interval}")
        if not isinstance(self.self_distill, bool):
            raise TypeError(f"self_distill must be True or False, got self_distill={self.self_distill!r}")


class PINSMethod(PlatonMethod):
    """PINS: PLATON's Ī·Ū machinery on ``|−θ⊙g + η·g²|`` plus self-distillation (SPEC §4).

    When the trial calls what (on top of :class:`~rayprune.methods.platon.PlatonMethod`, whose
    docstring explains the windows, the hook order and the memory):

    * :meth:`after_backward`: instantaneous importance ``|−θ⊙g + η·g²|`` with η =
      ``context.learning_rate``, the rate this step's optimizer update uses.  The official code
      scores after ``lr_scheduler.step()`` (the next step's rate) and after clipping; we use the
      unclipped task-loss gradient, the only one our trial exposes (see PLATON's docstring).
    * :meth:`after_optimizer_step`: every ``eval_interval`` steps (after updates 50, 100, …)
      re-apply the masks, score the student on the **selection split** with
      ``context.evaluate_selection`` and, when the metric is strictly better than the best so
      far, copy the student's weights into the teacher.  The first evaluation always creates the
      teacher (the best so far starts at −inf, as the official −999).  The official code selects
      on the **dev set**, which leaks the evaluation data into training; the trial carves the
      selection split from the training data instead, so the search objective stays clean.
    * :meth:`task_loss`: once a teacher exists, runs it (eval mode, no grad) on the batch and
      returns the mean of :func:`self_distillation_loss`; before that, ``None`` (the model's own
      cross-entropy; the official script distils from an external fine-tuned model until its
      first evaluation).  Regression tasks (``context.is_regression``) never distil and never
      evaluate.  ``needs_teacher`` is False: the teacher is the run's own checkpoint.  Without
      a selection split (``evaluate_selection`` is None) the first evaluation raises
      ``ValueError``; ``self_distill=False`` runs the score alone.

    Schedule defaults: cubic, interval deltaT = 10, from the only official script (RTE: 20 epochs,
    batch 16, so T = 3120 steps; warmup_steps W = 200, initial_warmup 1, final_warmup 6).  Dense
    until a·W = 200 steps and final sparsity from T − 6·W = 1920 steps, i.e. start = 200/3120 =
    0.064 and end = 1920/3120 = 0.615 as fractions of the run.  Other paper settings of that
    script: β1 0.85, β2 0.99, 80% sparsity, LR 3e-5 with 200 warmup steps.

    Memory and cost: PLATON's three full-size buffers, plus one full copy of the model (the
    teacher, created at the first evaluation), one extra no-grad forward per step once it exists
    and one selection-split evaluation every ``eval_interval`` steps.  The checkpoint
    (``state_dict``) holds the teacher's weights, so a resumed trial distils from the same
    teacher.
    """

    Options = PINSOptions
    description = "PINS (Ren & Zhu 2023): ILP score |-w*g + lr*g^2| with PLATON's EMAs, self-distillation"
    needs_teacher = False
    schedule_defaults = {"kind": "cubic", "start": 0.064, "end": 0.615, "interval": 10}

    options: PINSOptions

    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        super().prepare(model, targets, context)
        self._teacher: nn.Module | None = None
        self._best_metric = float("-inf")

    def _instant_importance(
        self, param: torch.Tensor, grad: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        eta = float(self.context.learning_rate)
        # |(θ − η·g) ⊙ g| = |−θ⊙g + η·g²|, in three elementwise passes.
        return torch.add(param, grad, alpha=-eta, out=out).mul_(grad).abs_()

    def _distilling(self) -> bool:
        return self.options.self_distill and not self.context.is_regression

    # ------------------------------------------------------------------ self-regularisation
    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module) -> None:
        """Every ``eval_interval`` steps, evaluate on the selection split; keep the best."""
        if not self._distilling() or (self.context.step + 1) % self.options.eval_interval:
            return
        evaluate = self.context.evaluate_selection
        if evaluate is None:
            raise ValueError(
                "PINS self-distillation (self_distill=True) needs context.evaluate_selection, "
                "i.e. a selection split carved from the training data; give the trial one or "
                "set self_distill=False"
            )
        # The trial re-applies the masks after this hook; the teacher must be the masked model.
        self.apply_masks()
        was_training = self.model.training
        metric = float(evaluate(self.model))
        self.model.train(was_training)
        if metric > self._best_metric:
            self._best_metric = metric
            self._snapshot_teacher(self.model.state_dict())

    @torch.no_grad()
    def _snapshot_teacher(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Copy ``weights`` into the teacher, creating it (one deepcopy) the first time."""
        if self._teacher is None:
            teacher = copy.deepcopy(self.model)
            for param in teacher.parameters():
                param.requires_grad_(False)
                param.grad = None
            self._teacher = teacher.eval()
        self._teacher.load_state_dict(weights)

    def task_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """``mean_i(α_i·KD_i + (1 − α_i)·CE_i)`` against the self-teacher; ``None`` before it
        exists, without labels in the batch, for regression or with ``self_distill=False``."""
        task = self.context.task if self.context is not None else None
        if not self._distilling() or self._teacher is None:
            return None
        if task is None:  # driven without a task (unit tests): one classification row per example
            if "labels" not in batch:
                return None
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            with torch.no_grad():
                teacher_outputs = self._teacher(**inputs)
            rows = [(outputs.logits, batch["labels"])]
            teacher_rows = [(teacher_outputs.logits, None)]
        else:  # QA: start and end positions; NER: the labelled tokens (Task.logit_rows)
            with torch.no_grad():
                teacher_outputs = self._teacher(**task.model_inputs(batch))
            rows, teacher_rows = task.logit_rows(outputs, batch), task.logit_rows(teacher_outputs, batch)
        losses = [self_distillation_loss(s, t, labels, float(self.options.temperature)).mean()
                  for (s, labels), (t, _) in zip(rows, teacher_rows) if labels is not None and s.shape[0]]
        return sum(losses) / len(losses) if losses else None

    def finalize(self) -> nn.Module:
        self._teacher = None
        return super().finalize()

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """PLATON's state plus the best selection metric and the teacher's weights."""
        state = super().state_dict()
        teacher = None
        if self._teacher is not None:
            teacher = {k: v.detach().cpu().clone() for k, v in self._teacher.state_dict().items()}
        state["self_distillation"] = {"best_metric": self._best_metric, "teacher": teacher}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("self_distillation")
        if saved is None:
            raise ValueError("PINS checkpoint has no 'self_distillation' entry")
        self._best_metric = float(saved["best_metric"])
        if saved["teacher"] is None:
            self._teacher = None
        else:
            self._snapshot_teacher(saved["teacher"])
