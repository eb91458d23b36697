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
(``schedule_defaults``: cubic, ``interval=1``) and frozen afterwards.

Our readings, where the official code and our interface differ (say so when comparing):

* The statistics are read in ``after_backward``: task-loss gradients only, as the trial hands
  them over (``rayprune.trial`` clips them to ``max_grad_norm`` first, when set), with the weights
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
and soft movement pruning; ``select_new_pruned`` is pure tensor maths (a candidate for
``rayprune.methods.masks``) and ``FlatScoreMethod.step`` a candidate for ``PruningMethod.step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods.base import MethodOptions, PruningMethod, TrainingContext

__all__ = [
    "SevenMethod",
    "SevenOptions",
    "FlatScoreMethod",
    "select_new_pruned",
    "lowest_kept_indices",
]

# Below this many entries a plain top-k over the kept entries is as cheap as anything else.
_SAMPLED_MIN_ENTRIES = 1 << 16
# Random sample used to bound the k-th lowest kept score (indices drawn with replacement).
_SAMPLE_SIZE = 1 << 14


# --------------------------------------------------------------------------- selection helpers
def lowest_kept_indices(
    score: torch.Tensor,
    keep: torch.Tensor,
    k: int,
    *,
    kept: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flat indices of the ``k`` lowest ``score`` entries among those where ``keep`` is True.

    Exact: the result always has ``min(k, kept)`` indices and no kept entry outside it scores
    lower than one inside it (ties broken arbitrarily).  When ``k`` is small against the number
    of kept entries, the k-th lowest kept score is bounded from above on a random sample, every
    kept entry at or below the bound becomes a candidate, and the top-k runs on the candidates
    only: one comparison pass instead of a top-k over the whole tensor.  If the sample bound is
    too low (fewer than ``k`` candidates, probability below 1e-6) it falls back to the top-k
    over all kept entries.  torch offers ``topk``/``kthvalue`` but no selection restricted to a
    subset that avoids sorting work over the whole tensor, hence this function.

    Args:
        score: 1-D scores, higher = keep.
        keep: 1-D bool of the same length; only True entries may be returned.
        k: how many to return.
        kept: ``keep.count_nonzero()`` if the caller has it.
        generator: CPU generator for the sample (fixes the tie-breaking for reproducibility).

    Returns:
        1-D int64 indices into ``score``.
    """
    if kept is None:
        kept = int(keep.count_nonzero())
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=score.device)
    if k >= kept:
        return keep.nonzero().squeeze(1)
    n = score.numel()
    if n >= _SAMPLED_MIN_ENTRIES and 8 * k < kept:
        idx = torch.randint(0, n, (_SAMPLE_SIZE,), generator=generator).to(score.device)
        sample = score[idx][keep[idx]]  # (kept draws,)
        expected = k * sample.numel() / kept  # draws expected below the true k-th lowest
        # Binomial upper tail: the true k-th lowest exceeds this rank's value with probability
        # < 1e-6, so there are at least k candidates.
        rank = math.ceil(expected + 5.0 * math.sqrt(expected) + 8.0)
        if rank < sample.numel():
            bound = sample.kthvalue(rank).values
            candidates = (keep & (score <= bound)).nonzero().squeeze(1)  # (c,), c >= k usually
            if candidates.numel() >= k:
                pick = torch.topk(score[candidates], k, largest=False, sorted=False).indices
                return candidates[pick]
    candidates = keep.nonzero().squeeze(1)  # (kept,)
    pick = torch.topk(score[candidates].float(), k, largest=False, sorted=False).indices
    return candidates[pick]


def select_new_pruned(
    score: torch.Tensor,
    keep: torch.Tensor,
    sparsity: float,
    *,
    sizes: Sequence[int] | None = None,
    ceiling: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which kept entries to prune now so that ``round(sparsity * n)`` are pruned in total.

    Entries already pruned (``keep`` False) stay pruned and count towards the total, so the new
    mask ``keep`` minus the result is exactly what ``masks.select_lowest_k_global`` /
    ``select_lowest_k_per_tensor`` give with the previous mask's entries forced to the bottom
    (what ``PruningMethod.step`` does), computed incrementally.

    Args:
        score: 1-D scores of all targets concatenated in order, higher = keep.
        keep: 1-D bool, the current mask (True = kept); not modified.
        sparsity: requested fraction pruned, in [0, 1).
        sizes: per-target lengths for per-tensor ("layer") selection; ``None`` = one global cut.
        ceiling: only entries with ``score <= ceiling`` may be newly pruned (soft movement's
            threshold); the request is then a cap, not a promise.
        generator: CPU generator for :func:`lowest_kept_indices`.

    Returns:
        1-D int64 flat indices of the entries to prune (all currently kept, no duplicates).
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
    groups = [(0, score.numel())]
    if sizes is not None:
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + int(size))
        if starts[-1] != score.numel():
            raise ValueError(f"sizes sum to {starts[-1]}, expected {score.numel()}")
        groups = list(zip(starts[:-1], starts[1:]))
    chosen = []
    for lo, hi in groups:
        s, kp = score[lo:hi], keep[lo:hi]  # views, (hi - lo,)
        kept = int(kp.count_nonzero())
        k_new = int(round(sparsity * (hi - lo))) - (hi - lo - kept)
        if ceiling is not None and k_new > 0:
            k_new = min(k_new, int((kp & (s <= ceiling)).count_nonzero()))
        if k_new > 0:
            chosen.append(lowest_kept_indices(s, kp, k_new, kept=kept, generator=generator) + lo)
    if not chosen:
        return torch.empty(0, dtype=torch.long, device=score.device)
    return torch.cat(chosen)


def flat_views(
    params: Mapping[str, torch.Tensor], *, fill: float = 0.0, requires_grad: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One flat float32 buffer over all ``params`` (in order) and a view of it per target.

    Used for per-weight statistics and scores, so a global selection reads one tensor and an
    optimizer steps one tensor.
    """
    first = next(iter(params.values()))
    total = sum(p.numel() for p in params.values())
    flat = torch.full((total,), float(fill), dtype=torch.float32, device=first.device)
    flat.requires_grad_(requires_grad)
    views, offset = {}, 0
    for fqn, p in params.items():
        views[fqn] = flat.detach()[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    return flat, views


def ramp_window(context: TrainingContext) -> tuple[int, int]:
    """(first, last) step of the pruning window; the whole run when there is no schedule."""
    if context.schedule is None:
        return 0, max(context.total_steps - 1, 0)
    return context.schedule.steps(context.total_steps)


class FlatScoreMethod(PruningMethod):
    """A method whose scores live in one flat float32 buffer over all targets (in target order)
    and whose masking step is incremental (:func:`select_new_pruned`).

    Subclasses implement :meth:`flat_scores` (and ``score`` as a view of it); they may override
    :meth:`pruning_ceiling` and :meth:`on_pruned`.  Masks are updated in place, so
    :meth:`state_dict` returns copies.  Shared by SEVEN, movement and soft movement.
    """

    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        super().prepare(model, targets, context)
        self._sizes = [p.numel() for p in self.params.values()]
        offsets = [0]
        for size in self._sizes:
            offsets.append(offsets[-1] + size)
        self._offsets = offsets

    def flat_scores(self) -> torch.Tensor:
        """1-D scores of all targets concatenated in target order (higher = keep)."""
        raise NotImplementedError

    def pruning_ceiling(self) -> float | None:
        """Highest score that may be newly pruned; ``None`` = any (plain lowest-k)."""
        return None

    def on_pruned(self, flat_indices: torch.Tensor) -> None:
        """Called by :meth:`step` with the flat indices just pruned (sorted)."""

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Prune the lowest scores to ``sparsity`` (global or per tensor, per ``selection``):
        the same selection as ``PruningMethod.step``, computed incrementally.  Called by the
        trial at every masking step.

        Returns:
            the measured sparsity of every target after the step.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
        keep = torch.cat([self.masks[fqn].reshape(-1) for fqn in self.params])  # (total,)
        new = select_new_pruned(
            self.flat_scores().detach(),
            keep,
            sparsity,
            sizes=self._sizes if self.options.selection == "layer" else None,
            ceiling=self.pruning_ceiling(),
            generator=torch.Generator(device="cpu").manual_seed(
                int(self.context.seed) * 1_000_003 + int(self.context.step)
            ),
        ).sort().values
        # Split the sorted flat indices by target: (targets + 1,) boundaries into `new`.
        bounds = torch.searchsorted(new, torch.tensor(self._offsets, device=new.device)).tolist()
        for i, fqn in enumerate(self.params):
            if bounds[i + 1] > bounds[i]:
                mask = self.masks[fqn]
                if not mask.is_contiguous():
                    mask = self.masks[fqn] = mask.contiguous()
                mask.view(-1)[new[bounds[i] : bounds[i + 1]] - self._offsets[i]] = False
        self.on_pruned(new)
        self.apply_masks()
        # Exact zeros of the weights, as target_sparsity() but without a float copy.
        return {fqn: 1.0 - int(p.count_nonzero()) / p.numel() for fqn, p in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["masks"] = {k: v.detach().cpu().clone() for k, v in self.masks.items()}
        return state


# --------------------------------------------------------------------------- SEVEN
@dataclass(kw_only=True)
class SevenOptions(MethodOptions):
    """Options of SEVEN_dyn (SPEC §5.4; ``selection`` is global as in the official code).

    Attributes:
        alpha1: EMA factor of |g| (official default 0.8).
        alpha2: EMA factor of g**2 (official default 0.9; the README's example uses 0.8).
    """

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
