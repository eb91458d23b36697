"""Soft movement pruning (Sanh, Wolf & Rush 2020): a threshold on sigmoid(S) plus an L1 penalty.

SPEC §7.3.  The scores ``S`` learn exactly as in movement pruning (:mod:`.movement`: straight-
through gradient ``grad * W`` from the task loss, own AdamW), and ``extra_loss`` adds the official
penalty, backpropagated into ``S`` only::

    penalty(t) = lambda(t) * mean_l ( ||sigmoid(S_l)||_1 / numel(S_l) )
    lambda(t)  = final_lambda * tau(t) / final_threshold

The official mask is ``sigmoid(S) > tau(t)``, with ``tau`` following the cubic schedule from 0 to
``final_threshold``, so the sparsity is whatever the penalty produces.  rayprune searches over a
*target* sparsity and measures what it gets, so we reconcile the two as follows (our reading):

* ``tau(t) = final_threshold * s(t) / s_final`` and ``lambda(t) = final_lambda * s(t) / s_final``,
  where ``s(t)`` is the run's sparsity schedule (``schedule.sparsity_at``).  With the default
  cubic schedule and ``initial_sparsity=0`` this is the official ``1 - (1 - x)^3`` ramp of ``tau``
  and of ``lambda`` (SPEC §7.3: lambda is proportional to tau).  Without a schedule both are at
  their final values.
* At each masking step an entry may be pruned only if ``sigmoid(S) <= tau(t)`` (the official
  rule), and never beyond the requested sparsity ``s(t)``: we prune the lowest ``S`` with
  ``k = min(#entries at or below the threshold, round(s(t) * n))`` (globally by default, as the
  official threshold is one number for all matrices; per matrix with ``selection="layer"``).

So the threshold can only *lag* the target: while the penalty has not pushed enough scores
under ``tau``, the sparsity stays below ``s(t)``.  What happens at the end is an option:

* ``fill_to_target=True`` (default): at the ramp's last masking step the remaining gap to the
  target is pruned by lowest ``S`` even above ``tau`` (movement pruning's top-k for the rest), so
  every run ends at the requested sparsity, as the search and the method contract expect.  The
  number of entries of the final mask pruned although ``sigmoid(S) > tau`` is
  :attr:`SoftMovementMethod.filled_above_threshold` (0 = the threshold reached the target).

**Masks are reselected** by default (``mask_policy="reselect"``): the official mask
``sigmoid(S) > tau(t)`` is recomputed from ``S`` at every step, and ``S`` of a pruned entry keeps
learning through the straight-through estimator (task gradient with the dense weight, as in
:mod:`.movement`, plus the penalty), so an entry whose score climbs back above ``tau`` returns with
its stored value.  ``persistent`` is the project's former rule.
* ``fill_to_target=False``: the official reading; the run ends at
  ``min(target, #sigmoid(S) <= tau_final)``, possibly far below the target when ``final_lambda``
  is too weak for the run's length (search over ``final_lambda`` then).

Either way, read the measured sparsity (``step``'s return value), never the target.  The penalty
stops after the ramp (the mask is frozen, ``S`` no longer matters).

Memory: as movement pruning (``S``, its gradient, two AdamW moments), plus the penalty's
``sigmoid(S)`` graph for one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods.base import MaskPolicy, TrainingContext, mask_policy_option

from rayprune.methods.movement import MovementMethod, MovementOptions
from rayprune.methods.flat_scores import ramp_window

__all__ = ["SoftMovementMethod", "SoftMovementOptions"]


@dataclass(kw_only=True)
class SoftMovementOptions(MovementOptions):
    """Options of soft movement pruning (SPEC §7.3; defaults from the official code).

    Attributes:
        selection: ``global`` (default: one threshold for all matrices, as the official code)
            or ``layer`` (the target caps each matrix separately).
        final_lambda: penalty weight at the end of the ramp (official 400).
        final_threshold: ``tau_final``, the sigmoid(S) threshold at the end of the ramp (0.1).
        fill_to_target: at the ramp's last masking step, prune up to the target by lowest
            ``S`` even above ``tau`` (our addition, see the module docstring; ``False`` = the
            official threshold only).
        score_learning_rate: learning rate of the scores' AdamW (official 1e-2).
        mask_init: constant initial score (0, i.e. sigmoid(S) = 0.5).
        mask_policy: ``reselect`` (default: the official mask ``sigmoid(S) > tau(t)`` is
            recomputed at every step, so an entry whose score climbs back above ``tau`` returns)
            or ``persistent``.
    """

    selection: Literal["global", "layer"] = "global"
    mask_policy: MaskPolicy = mask_policy_option(
        "reselect", "official mask sigmoid(S) > tau recomputed every step"
    )
    final_lambda: float = 400.0
    final_threshold: float = 0.1
    fill_to_target: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("final_lambda", "final_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {name}={value!r}")
        if not isinstance(self.fill_to_target, bool):
            raise TypeError(
                f"fill_to_target must be True or False, got fill_to_target={self.fill_to_target!r}"
            )
        if not 0.0 <= self.final_lambda < float("inf"):
            raise ValueError(
                f"final_lambda must be finite and >= 0, got final_lambda={self.final_lambda}"
            )
        if not 0.0 < self.final_threshold < 1.0:
            raise ValueError(
                f"final_threshold must be in (0, 1), got final_threshold={self.final_threshold}"
            )


class SoftMovementMethod(MovementMethod):
    """Soft movement pruning: scores as in movement pruning, an L1 penalty on sigmoid(S), and
    masks from ``sigmoid(S) <= tau(t)`` capped at the requested sparsity (SPEC §7.3).

    When the trial calls each hook (besides :class:`MovementMethod`'s):

    * ``extra_loss``: every step of the ramp where ``lambda(t) > 0``, returns the penalty, a
      differentiable function of ``S`` only; its backward adds to ``S.grad`` after
      ``after_backward`` wrote the task part, and ``after_optimizer_step`` steps both.
    * ``step``: prunes the lowest scores among those with ``sigmoid(S) <= tau(t)``, up to the
      requested sparsity; at the ramp's last step with ``fill_to_target``, up to the target.

    Attributes:
        filled_above_threshold: entries of the mask left by the final fill that are pruned
            although ``sigmoid(S) > tau`` (0 when the threshold reached the target by itself).
    """

    Options = SoftMovementOptions
    description = (
        "Soft movement pruning (Sanh et al. 2020): sigmoid(S) > tau, L1 penalty on sigmoid(S)"
    )
    schedule_defaults = {"kind": "cubic", "interval": 1}

    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        super().prepare(model, targets, context)
        self.filled_above_threshold = 0

    def ramp(self) -> float:
        """``s(t) / s_final`` in [0, 1]: how far ``tau`` and ``lambda`` are along their ramp."""
        schedule = self.context.schedule
        if schedule is None:
            return 1.0
        step, total = self.context.step, self.context.total_steps
        if schedule.final_sparsity > 0.0:
            value = schedule.sparsity_at(step, total) / schedule.final_sparsity
        else:
            value = schedule.fraction_done(step, total)
        return min(max(value, 0.0), 1.0)

    def threshold(self) -> float:
        """``tau(t)``: entries with sigmoid(S) at or below it may be pruned."""
        return self.options.final_threshold * self.ramp()

    def penalty_weight(self) -> float:
        """``lambda(t) = final_lambda * tau(t) / tau_final``."""
        return self.options.final_lambda * self.ramp()

    def extra_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], teacher_outputs: Any):
        if not self._scores_active():
            return None
        weight = self.penalty_weight()
        if weight == 0.0:
            return None
        # mean over targets of mean(sigmoid(S_l)); split's backward writes one flat gradient.
        sigmoid = torch.sigmoid(self._scores_flat)  # (total,)
        per_target = torch.stack([chunk.mean() for chunk in sigmoid.split(self._sizes)])
        return weight * per_target.mean()

    def pruning_ceiling(self) -> float | None:
        if self.options.fill_to_target and self.context.step >= ramp_window(self.context)[1]:
            return None  # the ramp's last masking step: reach the target
        # sigmoid(S) <= tau  <=>  S <= logit(tau); nothing qualifies while tau is 0.
        tau = self.threshold()
        if tau <= 0.0:
            return float("-inf")
        return math.log(tau / (1.0 - tau))

    def on_pruned(self, flat_indices: torch.Tensor) -> None:
        if self.pruning_ceiling() is None:
            # The fill step: count every pruned entry above tau (under persistent only the
            # newly pruned can be, as earlier ones were pruned at or below a lower tau).
            tau = self.threshold()
            pruned = ~torch.cat([self.masks[fqn].reshape(-1) for fqn in self.params])
            above = pruned & (torch.sigmoid(self._scores_flat.detach()) > tau)
            self.filled_above_threshold = int(above.count_nonzero())

    def diagnostics(self) -> dict[str, float]:
        """``filled_above_threshold``: share of the prunable set that the final mask prunes
        although ``sigmoid(S) > tau`` (0 when the penalty alone reached the target); plus the
        base's reselection numbers."""
        total = sum(m.numel() for m in self.masks.values())
        return {
            **super().diagnostics(),
            "filled_above_threshold": self.filled_above_threshold / max(total, 1),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["filled_above_threshold"] = self.filled_above_threshold
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.filled_above_threshold = int(state.get("filled_above_threshold", 0))
