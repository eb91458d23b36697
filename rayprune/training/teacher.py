"""The dense teacher of a distilling method: the search's dense reference
(:mod:`rayprune.training.reference`), one model for both.  Kept for the benchmarks, which only
need the teacher's directory."""

from __future__ import annotations

from pathlib import Path

from rayprune.training.reference import ensure_reference

__all__ = ["ensure_teacher"]


def ensure_teacher(search_dir: Path, settings, data, *, model: str | None = None, steps: int | None = None,
                   learning_rate: float | None = None, log=print) -> str:
    """The directory (or hub id) of the dense reference, trained once per ``search_dir``."""
    return ensure_reference(search_dir, settings, data, model=model, steps=steps,
                            learning_rate=learning_rate, log=log).path
