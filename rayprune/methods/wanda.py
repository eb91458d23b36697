"""Wanda (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for LLMs"):
prune by ``|W_ij| · ‖X_j‖₂``, once, from calibration activations, with no weight update.

``‖X_j‖₂`` is the norm of input feature ``j`` of the linear over every calibration token (padding
left out), collected layer by layer with each block's inputs coming from the already pruned blocks
before it (:mod:`rayprune.methods.oneshot`).  Wanda compares weights within each output row
(``selection="row"``, the paper's choice: each output keeps the same number of inputs);
``selection="layer"`` compares the whole matrix.  Under an N:M ``sparsity_pattern`` the score
chooses the kept N of every M consecutive inputs of each row, as the paper does for 2:4 / 4:8.

When every input feature has the same norm the score is ``|W|`` times a constant, so Wanda then
prunes exactly as magnitude pruning with the same comparison group (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rayprune.methods.oneshot import OneShotMethod, OneShotOptions

__all__ = ["WandaMethod", "wanda_scores"]


def wanda_scores(weight: torch.Tensor, feature_norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| · ‖X_j‖₂`` for a ``(out, in)`` weight and the ``(in,)`` input-feature norms."""
    return weight.detach().abs().float() * feature_norms.float().reshape(1, -1)


@dataclass(kw_only=True)
class WandaOptions(OneShotOptions):
    """Wanda's options: ``selection`` (``row``, the paper's per-output comparison, or ``layer``),
    ``calibration_samples`` (paper: 128), ``sparsity_pattern``, ``mask_policy``."""

    selection: Literal["row", "layer"] = field(
        default="row",
        metadata={"help": "row: each output row pruned to the target (paper); layer: whole matrix"},
    )


class WandaMethod(OneShotMethod):
    """Wanda: one-shot, score ``|W_ij| · ‖X_j‖₂`` from calibration data (module docstring)."""

    Options = WandaOptions
    description = "Wanda (Sun et al. 2023): one-shot |W|·‖X‖ from calibration data, then fine-tune"

    def _new_stats(self, fqn: str, weight: torch.Tensor) -> Any:
        # Sum over tokens of x_j², float64 so that long calibration sets lose no precision.
        return torch.zeros(weight.shape[1], dtype=torch.float64, device=weight.device)

    def _accumulate(self, stats: Any, x: torch.Tensor) -> Any:
        return stats.add_(x.pow(2).sum(dim=0).double())

    def _prune_target(self, fqn: str, stats: Any, sparsity: float) -> None:
        self._stats_kept[fqn] = stats.sqrt().float()  # (in,) ‖X_j‖₂
        param = self.params[fqn]
        keep = self._select_keep(self.score(fqn, param.detach()).masked_fill(~self.masks[fqn], float("-inf")),
                                 sparsity)
        self.masks[fqn] &= keep
        param.data.mul_(self.masks[fqn])

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        """``|W| · ‖X_j‖₂`` with the norms of the calibration pass."""
        norms = self._stats_kept.get(fqn)
        if norms is None:
            raise RuntimeError(f"WandaMethod.score({fqn!r}) before the calibration pass")
        return wanda_scores(weight, norms)
