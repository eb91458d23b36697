"""The pruning-method interface: a scorer plus optional hooks, with the lifecycle in the base.

A method is mostly a *scorer* (``score(fqn, weight)``, higher = keep).  :class:`PruningMethod`
owns masks, selection, re-application, finalisation and checkpoint state, in the spirit of
``torch.ao.pruning.BaseSparsifier`` but without parametrizations, so ``state_dict`` keys never
change.

Conventions every method shares (decided once, written in the README):

* **Masks persist.**  A pruned entry never comes back, even for methods whose official code
  zeroes in place between masking events (PLATON, PINS, MGPP).  ``step`` only ever grows the
  set of pruned entries.
* **Masks are applied by zeroing in place** after every optimizer step (``apply_masks``), so the
  forward pass always sees ``W * M``.  No forward hooks, no ``weight_orig``.
* **Sparsity is measured** from the weights (``rayprune.measure``), never copied from a target.

How the trial loop (``rayprune.training.loop``) drives a method, per training step::

    outputs = model(**batch)                      # hidden states if needs_hidden_states
    loss = method.task_loss(outputs, batch, teacher_outputs) or outputs.loss
    extra = method.extra_loss(outputs, batch, teacher_outputs)
    loss.backward(retain_graph=extra is not None)
    clip_grad_norm_(max_grad_norm)                # the task gradient only
    method.after_backward(model)                  # grads of the task loss only
    if extra is not None: extra.backward()        # e.g. GRAIN's hidden loss, penalties
    optimizer.step(); lr_scheduler.step()

Clipping applies to the task gradient alone, before ``after_backward``: what a method adds on
purpose (MGPP's prior gradient, whose spike term is ~1/(n*v0) on pruned weights; penalties through
``extra_loss``) is not rescaled by it, and importance statistics read clipped task gradients as
in PINS' official step order.
    method.after_optimizer_step(model)
    if schedule.should_update(step): method.step(schedule.sparsity_at(step))
    method.apply_masks()

``context`` (a :class:`TrainingContext`) is owned by the trial and updated every step, so a
method reads the current step and learning rate from it instead of reaching into the loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods import masks as mask_ops

__all__ = ["PruningMethod", "MethodOptions", "TrainingContext"]


@dataclass(kw_only=True)
class MethodOptions:
    """Options every unstructured method has.  Subclasses add their own fields (keyword-only).

    Attributes:
        selection: ``global`` ranks all prunable weights together (one threshold, as PLATON,
            PINS, MGPP, SEVEN do); ``layer`` prunes each tensor to the same sparsity.
    """

    selection: Literal["global", "layer"] = "global"

    def __post_init__(self) -> None:
        if self.selection not in ("global", "layer"):
            raise ValueError(
                f"selection must be one of ('global', 'layer'), got selection={self.selection!r}"
            )


@dataclass
class TrainingContext:
    """What the trial tells a method about the run; the trial updates ``step`` and
    ``learning_rate`` before each step's hooks fire.

    Attributes:
        total_steps: optimizer steps in the whole run.
        num_train_examples: size of the training set (MGPP scales its prior by 1/n).
        num_labels: classifier outputs (1 for regression).
        is_regression: STS-B-like tasks; distilling methods skip the KD term there.
        step: current 0-based optimizer step.
        learning_rate: current learning rate of the weights (PINS' eta).
        evaluate_selection: returns the task metric (higher is better) of a model on the
            *selection split* carved from the training data, never on the split the search
            objective is measured on.  ``None`` when the trial has no selection split.
        tokenizer: the model's tokenizer (for methods with a stage of their own, RPP's ``mlm``).
        unlabeled_texts: the task's training text without labels (RPP's ``mlm`` corpus).
        max_seq_length: the task's maximum sequence length.
        device: where the model lives.
        schedule: the run's sparsity schedule (MGPP anneals its prior over the ramp).
        resuming: the trial restores a checkpoint right after ``prepare`` (skip one-off stages).
        seed: the trial's seed.
    """

    total_steps: int
    num_train_examples: int = 0
    num_labels: int = 2
    is_regression: bool = False
    step: int = 0
    learning_rate: float = 0.0
    evaluate_selection: Callable[[nn.Module], float] | None = None
    tokenizer: Any = None
    unlabeled_texts: Sequence[str] = ()
    max_seq_length: int = 128
    device: str = "cpu"
    schedule: Any = None
    resuming: bool = False
    seed: int = 0
    extras: dict = field(default_factory=dict)


class PruningMethod:
    """Base class of every pruning method.  Subclasses implement :meth:`score` and may override
    the optional hooks; each hook's docstring says when the trial calls it.

    Class attributes:
        Options: the method's option dataclass (keyword-only, validated in ``__post_init__``).
        description: one line for ``rayprune methods``.
        needs_teacher: the trial supplies a dense fine-tuned teacher's outputs to the loss hooks.
        structured: removes whole units; ``finalize`` returns a physically smaller model and the
            target sparsity counts encoder parameters.
        needs_hidden_states: the trial runs forwards with ``output_hidden_states=True``.
        default_scope: name of the prunable-set rule in ``rayprune.models`` (e.g.
            ``encoder_linear``; PINS/PLATON add biases, SEVEN adds the pooler).
        schedule_defaults: overrides of :class:`~rayprune.methods.schedules.SparsitySchedule`
            fields that reproduce the paper (users can still override them in the space).
    """

    Options: ClassVar[type[MethodOptions]] = MethodOptions
    description: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    structured: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    default_scope: ClassVar[str] = "encoder_linear"
    schedule_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, options: MethodOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError("pass either an Options instance or keyword options, not both")
        if options is None:
            known = {f.name for f in dataclasses.fields(self.Options)}
            unknown = sorted(set(kwargs) - known)
            if unknown:
                raise ValueError(
                    f"unknown option(s) {unknown} for {type(self).__name__}; "
                    f"allowed: {sorted(known)}"
                )
            options = self.Options(**kwargs)
        elif not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} needs {self.Options.__qualname__}, got {type(options).__name__}"
            )
        self.options = options
        self.model: nn.Module | None = None
        self.context: TrainingContext | None = None
        self.params: dict[str, nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        """Resolve the target parameter FQNs and create all-ones masks.  Called once by the
        trial after the model is loaded and before the first step.  Subclasses that keep
        statistics override this, call ``super().prepare(...)`` and allocate their buffers."""
        named = dict(model.named_parameters())
        missing = [t for t in targets if t not in named]
        if missing:
            raise ValueError(f"prunable targets not found in the model: {missing[:5]}")
        if not targets:
            raise ValueError("no prunable targets: the scope selected no parameter")
        self.model = model
        self.context = context
        self.params = {t: named[t] for t in targets}
        self.masks = {t: torch.ones_like(p, dtype=torch.bool) for t, p in self.params.items()}

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        """Importance of each entry of ``weight`` (same shape; higher = keep).  Called by
        :meth:`step` for every target at every masking event.  The one required method."""
        raise NotImplementedError(f"{type(self).__name__} must implement score(fqn, weight)")

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Prune to ``sparsity`` over the prunable set: score every target, keep already-pruned
        entries pruned, select the lowest-scored entries (globally or per tensor, per
        ``options.selection``) and zero them.  Called by the trial when the schedule says so.

        Returns:
            the measured sparsity of every target after the step.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
        scores = {}
        for fqn, param in self.params.items():
            s = self.score(fqn, param.detach()).float()
            if s.shape != param.shape:
                raise RuntimeError(
                    f"{type(self).__name__}.score returned shape {tuple(s.shape)} for {fqn}, "
                    f"expected {tuple(param.shape)}"
                )
            scores[fqn] = s
        self._prune_lowest(scores, sparsity)
        return self.target_sparsity()

    @torch.no_grad()
    def _prune_lowest(self, scores: Mapping[str, torch.Tensor], sparsity: float) -> None:
        """Grow the masks to ``sparsity`` by the lowest ``scores`` (globally or per tensor, per
        ``options.selection``) and zero the pruned entries; already-pruned entries sort first,
        so masks only grow.  For subclasses that compute their own scores in ``step``."""
        scores = {fqn: s.masked_fill(~self.masks[fqn], float("-inf")) for fqn, s in scores.items()}
        if getattr(self.options, "selection", "global") == "layer":
            new = mask_ops.select_lowest_k_per_tensor(scores, sparsity)
        else:
            new = mask_ops.select_lowest_k_global(scores, sparsity)
        for fqn in self.masks:
            self.masks[fqn] &= new[fqn]
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned entry.  Called by the trial after every optimizer step."""
        for fqn, param in self.params.items():
            param.mul_(self.masks[fqn])

    def finalize(self) -> nn.Module:
        """Bake the masks into the weights, drop method state and return the model.  Called once
        at the end of training or at export; parameter names are unchanged."""
        self.apply_masks()
        model = self.model
        self.params = {}
        return model

    def target_sparsity(self) -> dict[str, float]:
        """Measured fraction of zeros of each target (pruned or exactly zero)."""
        return {fqn: float((p == 0).float().mean()) for fqn, p in self.params.items()}

    # ------------------------------------------------------------------ optional hooks
    def task_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """Replace the task loss (default: ``None`` = the model's own loss on the labels).
        Called every step after the forward.  Its gradients are the ones ``after_backward``
        sees (PINS' self-distillation, GRAIN's logit distillation)."""
        return None

    def extra_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        """A loss added after the task loss's backward, so its gradient updates the weights but
        never enters importance scores (GRAIN's gradient separation; soft movement's penalty).
        Called every step after ``task_loss``; ``None`` = nothing to add."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Read ``.grad`` (task loss only) into running statistics, or add a prior's gradient.
        Called every step after the task loss's backward and its gradient clipping, before the
        extra loss's backward and the optimizer."""

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Called every step after ``optimizer.step()`` and before the masking decision and
        ``apply_masks`` (proximal updates, score refreshes)."""

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors the method adds (GRAIN's hidden-state projections); the trial adds
        them to the weight optimizer.  Called once after :meth:`prepare`."""
        return []

    def diagnostics(self) -> dict[str, float]:
        """Numbers that explain how the method reached its sparsity, e.g. how much of it the
        method's own criterion chose and how much a top-up filled.  The trial reports them with
        every evaluation as ``method/<key>`` (Ray results and MLflow curves).  Default: none."""
        return {}

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """Masks plus whatever statistics the method keeps; tensors only on the CPU.  Subclasses
        extend the dict returned by ``super().state_dict()``."""
        # Copies: masks are updated in place by later steps.
        return {"masks": {k: v.detach().cpu().clone() for k, v in self.masks.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output after :meth:`prepare` (Tune trial resume)."""
        for fqn, mask in state["masks"].items():
            if fqn not in self.masks:
                raise ValueError(f"checkpoint has a mask for unknown target {fqn!r}")
            self.masks[fqn] = mask.to(self.masks[fqn].device, dtype=torch.bool)
        self.apply_masks()

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The method's options, for ``rayprune methods`` and the search-space schema."""
        return list(dataclasses.fields(cls.Options))
