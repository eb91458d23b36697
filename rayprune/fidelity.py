"""What a trial's ``budget_fraction`` means: the one full-budget rule that the trial loop's
reports, the searcher, the schedulers' consumers, the tracker and the front share.  Imports
nothing, so both ``rayprune.search`` and ``rayprune.tracking`` use it without pointing at each
other."""

from __future__ import annotations

__all__ = ["reached_full_budget"]

# A trial's ``budget_fraction`` is step / total steps, a float: it ran its full budget when the
# fraction is 1 up to rounding.
_FULL_BUDGET_TOLERANCE = 1e-9


def reached_full_budget(budget_fraction) -> bool:
    """Whether a trial whose last report had this ``budget_fraction`` ran its full budget."""
    try:
        return float(budget_fraction) >= 1.0 - _FULL_BUDGET_TOLERANCE
    except (TypeError, ValueError):
        return False
