"""Methods whose per-weight scores live in one flat buffer and whose masks grow incrementally.

SEVEN, movement and soft movement score every prunable weight every step and re-select masks
at every step of their window.  :class:`FlatScoreMethod` keeps their scores in one float32
buffer over all targets (viewed per target, :func:`flat_views`), so a global selection reads one
tensor and an optimizer steps one tensor.  Its :meth:`FlatScoreMethod.step` makes the same
selection as ``PruningMethod.step`` at a fraction of the cost: under ``persistent`` it finds only
the newly pruned entries (:func:`rayprune.methods.masks.select_new_pruned`); under ``reselect``
it finds the cut with a sampled bracket and one small ``kthvalue``
(:func:`rayprune.methods.masks.reselect_keep`) instead of a ``kthvalue`` over all scores.
Measured on MiniLM-L6's 10.6M prunable weights (movement, per-matrix cut, one thread, on the
2-core machine while a benchmark shared it): ~0.2 s per reselecting step (about half of it the
cut, the rest the mask bookkeeping), against ~0.5 s for one ``kthvalue`` over the whole set and
~0.8 s for a training step at batch 32, sequence 64.  With a mask step at every step of the ramp
that is ~15 % more wall-clock for movement over a 300-step run than under ``persistent``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from rayprune.methods.base import PruningMethod, TrainingContext
from rayprune.methods.masks import protect_top_n_of_m, reselect_keep, select_new_pruned

__all__ = ["FlatScoreMethod", "flat_views", "ramp_window"]


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
        """Called by :meth:`step`, after the masks changed, with the flat indices just pruned
        (sorted; under reselect, those pruned now that were kept before)."""

    @torch.no_grad()
    def step(self, sparsity: float) -> dict[str, float]:
        """Prune the lowest scores to ``sparsity`` (global or per tensor, per ``selection``):
        the same selection as ``PruningMethod.step``.  Persistent (or after the ramp): only the
        newly pruned entries are found (:func:`select_new_pruned`).  Reselecting: the whole mask
        is chosen again (:func:`reselect_keep`) and installed by the base, which stores and
        restores pruned values (``keeps_pruned_values``).  Called by the trial at every masking
        step.

        Returns:
            the measured sparsity of every target after the step.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got sparsity={sparsity}")
        keep = torch.cat([self.masks[fqn].reshape(-1) for fqn in self.params])  # (total,)
        scores = self._pattern_scores(self.flat_scores().detach(), keep)
        sparsity = self._pattern_request(sparsity)
        generator = torch.Generator(device="cpu").manual_seed(
            int(self.context.seed) * 1_000_003 + int(self.context.step)
        )
        sizes = self._sizes if self.options.selection == "layer" else None
        if self._reselecting():
            new_keep = reselect_keep(
                scores,
                keep,
                sparsity,
                sizes=sizes,
                ceiling=self.pruning_ceiling(),
                generator=generator,
            )
            new = (keep & ~new_keep).nonzero().squeeze(1)  # (pruned now,), sorted
            self._replace_masks(
                {
                    fqn: new_keep[self._offsets[i] : self._offsets[i + 1]].view(p.shape)
                    for i, (fqn, p) in enumerate(self.params.items())
                }
            )
        else:
            new = select_new_pruned(
                scores,
                keep,
                sparsity,
                sizes=sizes,
                ceiling=self.pruning_ceiling(),
                generator=generator,
            ).sort().values
            # Split the sorted flat indices by target: (targets + 1,) boundaries into `new`.
            offsets = torch.tensor(self._offsets, device=new.device)
            bounds = torch.searchsorted(new, offsets).tolist()
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

    def _pattern_scores(self, scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``scores`` as the selection sees them: under an N:M pattern a copy whose top N of
        every M (per target, input dimension; among the kept entries unless reselecting) are
        ``+inf``, so no group drops below N kept (``PruningMethod`` module docstring);
        unchanged otherwise."""
        if self._nm is None:
            return scores
        n, m = self._nm
        if not self._reselecting():
            # Already-pruned entries stay pruned: protect the best N among the kept ones.
            scores = scores.masked_fill(~keep, float("-inf"))
        protected = torch.empty_like(scores)
        for i, p in enumerate(self.params.values()):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            protected[lo:hi] = protect_top_n_of_m(scores[lo:hi].view(p.shape), n, m).reshape(-1)
        return protected

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["masks"] = {k: v.detach().cpu().clone() for k, v in self.masks.items()}
        return state
