"""The null method: dense fine-tuning, no pruning.

The trial loop runs every trial through one method's hooks (STYLE §3: the loop never names a
method); a trial with no ``method`` (the dense reference, a dense baseline) gets this one, whose
hooks do nothing.  Not in the registry: it is not a pruning method a search can choose.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from rayprune.methods.base import PruningMethod, TrainingContext

__all__ = ["DenseMethod"]


class DenseMethod(PruningMethod):
    """Prunes nothing; ``finalize`` returns the model as it is."""

    description = "no pruning (dense fine-tuning)"

    def prepare(self, model: nn.Module, targets: Sequence[str], context: TrainingContext) -> None:
        self.model, self.context = model, context

    def step(self, sparsity: float) -> dict[str, float]:
        return {}

    def apply_masks(self) -> None:
        return None

    def finalize(self) -> nn.Module:
        return self.model

    def diagnostics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None
