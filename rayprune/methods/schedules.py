"""Pure sparsity schedules: how sparse the model should be at a given training step.

The papers all use the cubic schedule of Zhu & Gupta (2018) in slightly different clothes:
PLATON/PINS/movement write it for the *remaining* ratio, GRAIN for the *density*, MGPP starts the
ramp from a non-zero ``initial_sparsity`` and SEVEN shifts it by one step.  All of them are
``s(t) = s_f + (s_i - s_f) * (1 - x)^3`` with ``x`` the position inside the ramp, so one
:class:`SparsitySchedule` covers them; methods only choose defaults (``schedule_defaults``).

Steps are 0-based: a run has steps ``0 .. total_steps - 1``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["SparsitySchedule", "cubic_sparsity", "linear_sparsity", "SCHEDULE_KINDS"]

SCHEDULE_KINDS = ("cubic", "linear", "constant", "oneshot")


def cubic_sparsity(x: float, initial: float, final: float) -> float:
    """Cubic ramp: ``final + (initial - final) * (1 - x)^3`` for ramp position ``x`` in [0, 1]."""
    x = min(max(x, 0.0), 1.0)
    return final + (initial - final) * (1.0 - x) ** 3


def linear_sparsity(x: float, initial: float, final: float) -> float:
    """Linear ramp from ``initial`` to ``final`` for ramp position ``x`` in [0, 1]."""
    x = min(max(x, 0.0), 1.0)
    return initial + (final - initial) * x


@dataclass(kw_only=True)
class SparsitySchedule:
    """When and how far to prune.

    Attributes:
        final_sparsity: the target, reached at ``end`` and kept to the end of training.
        kind: ``cubic`` (default, Zhu & Gupta), ``linear``, ``constant`` (prune to the target once
            at ``start``, then keep the mask) or ``oneshot`` (same as constant; kept as an alias
            users search for).
        initial_sparsity: sparsity applied at ``start`` (MGPP prunes to 0.3-0.5 at once).
        start: fraction of training at which pruning begins (dense before).
        end: fraction of training at which ``final_sparsity`` is reached; masks freeze after.
        interval: masks are updated every ``interval`` steps inside the ramp.
    """

    final_sparsity: float
    kind: Literal["cubic", "linear", "constant", "oneshot"] = "cubic"
    initial_sparsity: float = 0.0
    start: float = 0.1
    end: float = 0.7
    interval: int = 10

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got kind={self.kind!r}")
        for name in ("final_sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {name}={value}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(
                f"need 0 <= start <= end <= 1, got start={self.start}, end={self.end}"
            )
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got interval={self.interval}")

    def replace(self, **changes) -> "SparsitySchedule":
        return dataclasses.replace(self, **changes)

    def steps(self, total_steps: int) -> tuple[int, int]:
        """Return the (first, last) step of the ramp for a run of ``total_steps``.

        Raises:
            ValueError: ``total_steps`` < 1 (a run without steps has no ramp).
        """
        if not total_steps >= 1:
            raise ValueError(f"total_steps must be >= 1, got total_steps={total_steps!r}")
        # Round away binary noise before floor/ceil: 0.7 * 90 is 62.99999999999999 and
        # 0.07 * 100 is 7.000000000000001, which would move the ramp by one step.
        first = int(math.floor(round(self.start * total_steps, 9)))
        last = max(first, int(math.ceil(round(self.end * total_steps, 9))) - 1)
        return min(first, total_steps - 1), min(last, total_steps - 1)

    def sparsity_at(self, step: int, total_steps: int) -> float:
        """Target sparsity at ``step`` (0-based) of a run of ``total_steps``."""
        first, last = self.steps(total_steps)
        if step < first:
            return 0.0
        if self.kind in ("constant", "oneshot") or step >= last:
            return self.final_sparsity
        x = (step - first) / max(last - first, 1)
        ramp = cubic_sparsity if self.kind == "cubic" else linear_sparsity
        return ramp(x, self.initial_sparsity, self.final_sparsity)

    def should_update(self, step: int, total_steps: int) -> bool:
        """Whether masks are recomputed at ``step``: the ramp's first and last step and every
        ``interval`` steps in between.  After the ramp the mask is frozen."""
        first, last = self.steps(total_steps)
        if step < first or step > last:
            return False
        if self.kind in ("constant", "oneshot"):
            return step == first
        return step in (first, last) or (step - first) % self.interval == 0

    def fraction_done(self, step: int, total_steps: int) -> float:
        """Position inside the ramp in [0, 1] (methods that anneal with the ramp read this)."""
        first, last = self.steps(total_steps)
        if step <= first:
            return 0.0
        if step >= last:
            return 1.0
        return (step - first) / max(last - first, 1)
