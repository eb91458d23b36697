"""Source ``demo``: the generated offline task (:mod:`rayprune.data.demo`).

``max_train_samples`` / ``max_eval_samples`` are the sizes generated (default 2000 / 500), not a
subsample of a larger set.
"""

from __future__ import annotations

from rayprune.data.demo import (
    DEMO_EVAL_EXAMPLES,
    DEMO_TRAIN_EXAMPLES,
    demo_split_pair,
    finalize_demo,
)
from rayprune.data.presets import DEMO_TASK
from rayprune.data.spec import DataSpec, TaskData

__all__ = ["load"]


def load(spec: DataSpec, data_dir: str | None) -> TaskData:
    """Generate the demo task the spec sizes and seeds (``data_dir`` is not used)."""
    if spec.task != DEMO_TASK:
        raise ValueError(f"source 'demo' needs task='demo', got task={spec.task!r}")
    records = demo_split_pair(
        n_train=spec.max_train_samples or DEMO_TRAIN_EXAMPLES,
        n_eval=spec.max_eval_samples or DEMO_EVAL_EXAMPLES,
        seed=spec.seed,
    )
    return finalize_demo(records, spec)
