"""The dense reference: one dense fine-tune per search, the number every pruned trial is compared
with (``retained``) and the teacher of every trial that distils.

Trained once on the driver, before the trials start, at the search's budget (``reference.steps``
/ ``reference.learning_rate`` override it), and cached in ``<search_dir>/reference``: a resumed
search reuses it, so the reference and the teacher are one model for the whole search.  A model
given by the user (``reference.model``: a path or hub id) is evaluated on the eval split instead
of trained; its evaluation is cached the same way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from rayprune.models import resolve_model_path

__all__ = ["Reference", "ensure_reference", "REFERENCE_DIR"]

#: The cache folder inside the search directory.
REFERENCE_DIR = "reference"
_INFO = "reference.json"


@dataclass(frozen=True)
class Reference:
    """The dense reference of a search.

    Attributes:
        path: a directory (or hub id) holding the model; the teacher of distilling trials.
        metrics: its evaluation on the eval split (the task's metrics, ``sparsity`` ...).
        trained: True when this search trained it, False for a user-given model.
        steps: the optimizer steps it was trained for (None: user-given).
    """

    path: str
    metrics: dict
    trained: bool
    steps: int | None


def ensure_reference(search_dir: Path, settings, data, *, model: str | None = None, steps: int | None = None,
                     learning_rate: float | None = None, log=print) -> Reference:
    """Return the search's dense reference, training (or evaluating) it only if not cached.

    Args:
        search_dir: the search's output directory (the cache lives in ``reference/``).
        settings: the search's :class:`~rayprune.training.TrialSettings` (model, budget).
        data: the tokenised task.
        model: a user-given dense model (path or id): evaluated, never trained.
        steps / learning_rate: the reference's own budget (default: the trials' budget).
    """
    out = Path(search_dir) / REFERENCE_DIR
    info_file = out / _INFO
    cached = json.loads(info_file.read_text()) if info_file.exists() else None
    if model:
        path = resolve_model_path(model)
        if cached is None or cached.get("model") != path:
            cached = {"model": path, "metrics": _evaluate_given(path, settings, data), "steps": None}
            out.mkdir(parents=True, exist_ok=True)
            info_file.write_text(json.dumps(cached, default=float))
        log(f"reference (given): {settings.metric}={cached['metrics'][settings.metric]:.4f} ({path})")
        return Reference(path, cached["metrics"], trained=False, steps=None)
    if cached is not None and cached.get("model") is None and (out / "config.json").exists():
        return Reference(str(out.resolve()), cached["metrics"], trained=True, steps=cached["steps"])
    from rayprune.training import TrialConfig, TrialSettings, run_training

    ref_settings: TrialSettings = dataclasses.replace(
        settings, steps=steps or settings.steps, eval_interval=steps or settings.steps, teacher_dir=None,
        reference_metric=None, constraints={},
        # On the driver before any trial runs: every core of the machine is free.
        threads=None,
    )
    config = TrialConfig(
        method=None, target_sparsity=0.0, learning_rate=learning_rate or settings.learning_rate,
        weight_decay=settings.weight_decay, warmup_ratio=settings.warmup_ratio,
        batch_size=settings.batch_size, seed=settings.seed, schedule={}, method_options={},
    )
    log(f"training the dense reference once for this search ({ref_settings.steps} steps) ...")
    model_obj, _, metrics = run_training(config, ref_settings, data)
    out.mkdir(parents=True, exist_ok=True)
    model_obj.save_pretrained(out)
    info_file.write_text(json.dumps({"model": None, "metrics": metrics, "steps": ref_settings.steps}, default=float))
    log(f"reference ready: {settings.metric}={metrics.get(settings.metric, float('nan')):.4f} -> {out}")
    return Reference(str(out.resolve()), metrics, trained=True, steps=ref_settings.steps)


def _evaluate_given(path: str, settings, data) -> dict:
    """The eval-split metrics of a user-given dense model."""
    from rayprune.models import load_model_and_tokenizer
    from rayprune.training.evaluation import evaluate

    model, _ = load_model_and_tokenizer(path, task=data.task, trust_remote_code=settings.trust_remote_code)
    return evaluate(model, data.eval, data, settings.eval_batch_size)
