"""Gradual magnitude pruning (GMP, Zhu & Gupta 2018): keep the largest |w|.

The baseline every paper in SPEC.md compares against (SPEC §7.1).  The score is ``|w|``; the
cubic schedule (``rayprune.methods.schedules``) decides how far to prune at each masking step and
``selection`` chooses one global threshold over all prunable weights or one per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rayprune.methods.base import MaskPolicy, MethodOptions, PruningMethod, mask_policy_option

__all__ = ["MagnitudeMethod"]


@dataclass(kw_only=True)
class MagnitudeOptions(MethodOptions):
    """GMP's options: ``selection`` (global threshold by default) and ``mask_policy``
    (``persistent``: Zhu & Gupta's pruned weights stay pruned, SPEC §7.1)."""

    mask_policy: MaskPolicy = mask_policy_option("persistent", "GMP, Zhu & Gupta 2018")


class MagnitudeMethod(PruningMethod):
    """Gradual magnitude pruning: score = |w| (SPEC §7.1)."""

    Options = MagnitudeOptions
    description = "Gradual magnitude pruning (Zhu & Gupta 2018): |w|, cubic schedule"
    schedule_defaults = {"kind": "cubic", "start": 0.1, "end": 0.7, "interval": 10}

    def score(self, fqn: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs()
