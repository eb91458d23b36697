"""SEVEN_dyn (Xiao et al., IJCNN 2024): keep the "sentinels", weights whose saliency is steady.

SPEC §5.2-5.4.  Inside the pruning window, at every step ``k`` (0-based, counted from the first
step of the window) and for every prunable weight::

    g_k = |dL/dW|                                  task-loss gradient of this step
    m_k = a1 * m_{k-1} + (1 - a1) * g_k            EMA of |g|
    v_k = a2 * v_{k-1} + (1 - a2) * g_k**2         EMA of g**2
    m^  = m_k / (1 - a1**(k+1)),  v^ = v_k / (1 - a2**(k+1))        Adam bias correction
    I_k = I_{k-1} + |W * g_k * m^ / (sqrt(v^) + 1e-9)|              accumulated importance
    I[pruned] = 0

``m^ / sqrt(v^)`` is in [0, 1] (E|g| <= sqrt(E g^2)): about 1 when the gradient magnitude is
steady and small when it is noisy, so of two weights with the same mean |g| the noisier one ranks
lower.  Masks are re-selected at every step of the window with one global threshold
(``schedule_defaults``: cubic, ``interval=1``; ``mask_policy="reselect"``) and frozen afterwards.
A pruned weight returns only if its score beats a kept one; with ``I[pruned] = 0`` and, as in the
official masked forward, no increment while it is pruned (our pruned weights are 0, so
``|W * g| = 0``), its score stays 0, so in practice SEVEN's masks only grow, under either policy
(SPEC §5.2: "monotone").  A returning weight would resume from its stored value
(``keeps_pruned_values``: the official ``MaskedModule`` keeps the dense weight under ``W * M``).

Our readings, where the official code and our interface differ (say so when comparing):

* The statistics are read in ``after_backward``: task-loss gradients only, as the trial hands
  them over (``rayprune.training.loop`` clips them to ``max_grad_norm`` first, when set), with the weights
  the forward used.  The official code reads them after ``optimizer.step()``, i.e. with ``W`` one
  optimizer step later; the difference is one learning-rate step.
* The window is the run's schedule ramp (``schedule.steps``).  With ``interval > 1`` the statistics
  still accumulate every step of the window; masks change only when the schedule says so.
* The official keep ratio is shifted by one step (``(k+1)/iter_num``); we use the project's cubic
  schedule, so the first step of the window prunes nothing.
* For the large GLUE tasks (MNLI, QQP, QNLI, SST-2; 10 epochs at batch 32) the official windows
  (SPEC §5.4) start at 4-6 % of training and end at 18-43 %; for the small ones they start at
  19-28 % and end at 56 % (CoLA), 78 % (MRPC) or past the end of training (RTE, STS-B); computed
  from the GLUE training-set sizes.  ``schedule_defaults`` leaves ``start``/``end`` to the project
  defaults; set them in the search space to reproduce a task.

Memory: three float32 buffers of the prunable set's size (``I``, ``m``, ``v``) plus the base's
bool mask; 13 bytes per prunable weight, i.e. 140 MB for MiniLM-L6's 10.76M ``all_linear`` weights
and 1.1 GB for BERT-base's 85.5M.  They are one flat buffer each, viewed per target, so the
every-step global selection needs no concatenation.  ``after_backward`` adds three temporaries of
the largest target's size.

Cost: an exact global lowest-k over ~10M scores at every step, as ``PruningMethod.step`` does with
``masks.select_lowest_k_global``, costs 120-190 ms of CPU time on this project's CPU (single
thread), 3-5 % of a MiniLM training step at batch 32, sequence 128 (about 4 s of CPU time), on top
of the statistics.  Masks only grow, so a step only has to find the ``k_new`` lowest *kept*
entries, ``k_new`` being the schedule's increment (hundreds to thousands of entries).
:func:`select_new_pruned` does that exactly (the same entries as the full lowest-k, up to ties)
from a bound estimated on a random sample, and :class:`FlatScoreMethod` updates the masks in
place from the chosen indices: the whole SEVEN step (statistics, selection, measured sparsity)
then costs 75-90 ms of CPU time, about 2 % of a training step.  Both are shared with movement
and soft movement pruning; both live outside this file (``rayprune.methods.masks`` and
``rayprune.methods.flat_scores``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods.base import MaskPolicy, MethodOptions, TrainingContext, mask_policy_option
from rayprune.methods.flat_scores import FlatScoreMethod, flat_views, ramp_window

__all__ = ["SevenMethod", "SevenOptions"]


@dataclass(kw_only=True)
class SevenOptions(MethodOptions):
    """Options of SEVEN_dyn (SPEC §5.4; ``selection`` is global as in the official code).

    Attributes:
        alpha1: EMA factor of |g| (official default 0.8).
        alpha2: EMA factor of g**2 (official default 0.9; the README's example uses 0.8).
        mask_policy: ``reselect`` (default: the official code recomputes the mask at every step
            of the window) or ``persistent``.
    """

    mask_policy: MaskPolicy = mask_policy_option(
        "reselect", "official mask recomputed every step of the window"
    )
    alpha1: float = 0.8
    alpha2: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("alpha1", "alpha2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float in [0, 1), got {name}={value!r}")
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {name}={value}")


class SevenMethod(FlatScoreMethod):
    """SEVEN_dyn: accumulated, noise-corrected |W * g| with a global cut every step (SPEC §5).

    When the trial calls each hook:

    * ``prepare``: allocates ``I``, ``m``, ``v`` (zeros) for every target.
    * ``after_backward``: every step inside the schedule's window, updates ``m``, ``v`` and ``I``
      from the task-loss gradient (bias correction counted from the window's first step).
    * ``step``: at every masking step, prunes the lowest ``I`` globally until the requested
      sparsity is reached and sets ``I`` of the newly pruned entries to zero.
    """

    Options = SevenOptions
    description = (
        "SEVEN_dyn (Xiao et al. 2024): accumulated |W*g| x (m^/sqrt(v^)), global, every step"
    )
    default_scope = "all_linear"
    schedule_defaults = {"kind": "cubic", "interval": 1}
    keeps_pruned_values = True  # the official MaskedModule keeps the dense W under W * M

    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        super().prepare(model, targets, context)
        self._importance_flat, self.importance = flat_views(self.params)
        self._m_flat, self._m = flat_views(self.params)
        self._v_flat, self._v = flat_views(self.params)
        self.updates = 0  # k: statistics updates since the window opened

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        return self.importance[fqn]

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        first, last = ramp_window(self.context)
        if not first <= self.context.step <= last:
            return
        a1, a2 = self.options.alpha1, self.options.alpha2
        k = self.updates
        correction1 = 1.0 - a1 ** (k + 1)
        root_correction2 = math.sqrt(1.0 - a2 ** (k + 1))
        for fqn, param in self.params.items():
            if param.grad is None:
                g = torch.zeros_like(self._m[fqn])
            else:
                g = param.grad.detach().float().abs()
            m, v = self._m[fqn], self._v[fqn]
            m.mul_(a1).add_(g, alpha=1.0 - a1)
            v.mul_(a2).addcmul_(g, g, value=1.0 - a2)
            # sqrt(v^) + eps with v^ = v / (1 - a2^(k+1))
            denominator = v.sqrt().div_(root_correction2).add_(1e-9)
            # |W * g * m^ / denominator|; g, m^ >= 0.  Pruned weights are zero in the forward
            # (apply_masks runs after every step), so their increment is zero: I stays 0 there.
            ratio = torch.div(m, denominator).div_(correction1)
            self.importance[fqn].addcmul_(g.mul_(param.detach().float()).abs_(), ratio)
        self.updates += 1

    def flat_scores(self) -> torch.Tensor:
        return self._importance_flat

    def on_pruned(self, flat_indices: torch.Tensor) -> None:
        self._importance_flat[flat_indices] = 0.0  # I[pruned] = 0 (SPEC §5.2)

    def finalize(self) -> nn.Module:
        model = super().finalize()
        self._importance_flat = self._m_flat = self._v_flat = None
        self.importance, self._m, self._v = {}, {}, {}
        return model

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for key, views in (("importance", self.importance), ("m", self._m), ("v", self._v)):
            state[key] = {fqn: t.detach().cpu().clone() for fqn, t in views.items()}
        state["updates"] = self.updates
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for key, views in (("importance", self.importance), ("m", self._m), ("v", self._v)):
            for fqn, tensor in state[key].items():
                if fqn not in views:
                    raise ValueError(f"checkpoint has {key} for unknown target {fqn!r}")
                views[fqn].copy_(tensor)
        self.updates = int(state["updates"])
