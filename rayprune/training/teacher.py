"""The dense teacher: fine-tuned once per search and shared by every trial that distils.

GRAIN (and any later distilling method) needs a dense model fine-tuned on the task.  Training it
per trial would multiply the cost of a search, so the driver trains it once, saves it in the
search directory (``<search_dir>/teacher``) and hands the path to the trials; a resumed search
reuses it.  A teacher given by the user (``teacher.model``: a path or hub id) is used as is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rayprune.models import resolve_model_path

__all__ = ["ensure_teacher"]


def ensure_teacher(search_dir: Path, settings, data, *, model: str | None = None, steps: int | None = None,
                   learning_rate: float | None = None, log=print) -> str:
    """Return a directory (or hub id) holding the dense teacher, training it if needed.

    Args:
        search_dir: the search's output directory (the cache lives in ``teacher/``).
        settings: the search's :class:`~rayprune.training.TrialSettings` (model, budget).
        data: the tokenised task.
        model: a user-given teacher (path or id): returned unchanged, nothing is trained.
        steps / learning_rate: the teacher's own budget (default: the trials' budget).
    """
    if model:
        return resolve_model_path(model)
    out = Path(search_dir) / "teacher"
    if (out / "config.json").exists() and (out / "teacher.json").exists():
        return str(out.resolve())
    from rayprune.training import TrialConfig, TrialSettings, evaluate, run_training

    teacher_settings: TrialSettings = dataclasses.replace(
        settings, steps=steps or settings.steps, eval_interval=steps or settings.steps, teacher_dir=None,
    )
    config = TrialConfig(
        method=None, target_sparsity=0.0, learning_rate=learning_rate or settings.learning_rate,
        weight_decay=settings.weight_decay, warmup_ratio=settings.warmup_ratio,
        batch_size=settings.batch_size, seed=settings.seed, schedule={}, method_options={},
    )
    log(f"training the dense teacher once for this search ({teacher_settings.steps} steps) ...")
    model_obj, _, metrics = run_training(config, teacher_settings, data)
    out.mkdir(parents=True, exist_ok=True)
    model_obj.save_pretrained(out)
    (out / "teacher.json").write_text(json.dumps({"metrics": metrics, "steps": teacher_settings.steps}, default=float))
    log(f"teacher ready: {settings.metric}={metrics.get(settings.metric, float('nan')):.4f} -> {out}")
    return str(out.resolve())
