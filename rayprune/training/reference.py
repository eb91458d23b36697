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

__all__ = ["Reference", "ensure_reference", "cached_reference", "REFERENCE_DIR"]

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
    cached = cached_reference(search_dir, settings, data, model=model, steps=steps, learning_rate=learning_rate)
    if model:
        path = resolve_model_path(model)
        if cached is None:
            metrics = _evaluate_given(path, settings, data)
            out.mkdir(parents=True, exist_ok=True)
            info_file.write_text(json.dumps({"model": path, "metrics": metrics, "steps": None}, default=float))
            cached = Reference(path, metrics, trained=False, steps=None)
        log(f"reference (given): {settings.metric}={cached.metrics[settings.metric]:.4f} ({path})")
        return cached
    if cached is not None:
        return cached
    from rayprune.training import TrialConfig, TrialSettings, run_training

    budget = _budget(settings, data, steps, learning_rate)
    ref_settings: TrialSettings = dataclasses.replace(
        settings, steps=budget["steps"], eval_interval=budget["steps"], teacher_dir=None,
        reference_metric=None, constraints={},
        # On the driver before any trial runs: every core of the machine is free.
        threads=None,
    )
    config = TrialConfig(
        method=None, target_sparsity=0.0, learning_rate=budget["learning_rate"],
        weight_decay=settings.weight_decay, warmup_ratio=settings.warmup_ratio,
        batch_size=settings.batch_size, seed=settings.seed, schedule={}, method_options={},
    )
    log(f"training the dense reference once for this search ({ref_settings.steps} steps) ...")
    model_obj, _, metrics = run_training(config, ref_settings, data)
    out.mkdir(parents=True, exist_ok=True)
    model_obj.save_pretrained(out)
    info_file.write_text(json.dumps({"model": None, "metrics": metrics, "steps": ref_settings.steps,
                                     "budget": budget}, default=float))
    log(f"reference ready: {settings.metric}={metrics.get(settings.metric, float('nan')):.4f} -> {out}")
    return Reference(str(out.resolve()), metrics, trained=True, steps=ref_settings.steps)


def cached_reference(search_dir: Path, settings, data, *, model: str | None = None, steps: int | None = None,
                     learning_rate: float | None = None) -> Reference | None:
    """The reference cached in ``<search_dir>/reference`` for this budget, or None; trains and
    evaluates nothing (a dry run reads it to check the reference against the floor).

    A trained reference is reused only when it was trained with the same budget (steps,
    learning rate, batch size, seed, training examples): a search stopped because its reference
    did not learn, and started again with a longer budget, trains a new one.  A cache written
    before the budget was recorded is reused as it is.  A given model's evaluation is reused
    while ``model`` names the same model.
    """
    out = Path(search_dir) / REFERENCE_DIR
    info_file = out / _INFO
    if not info_file.is_file():
        return None
    cached = json.loads(info_file.read_text())
    if model:
        path = resolve_model_path(model)
        if cached.get("model") != path:
            return None
        return Reference(path, cached["metrics"], trained=False, steps=None)
    if cached.get("model") is not None or not (out / "config.json").exists():
        return None
    if cached.get("budget") not in (None, _budget(settings, data, steps, learning_rate)):
        return None
    return Reference(str(out.resolve()), cached["metrics"], trained=True, steps=cached["steps"])


def _budget(settings, data, steps: int | None, learning_rate: float | None) -> dict:
    """What a trained reference depends on besides the model and the data's content."""
    return {"steps": int(steps or settings.steps), "learning_rate": float(learning_rate or settings.learning_rate),
            "batch_size": int(settings.batch_size), "seed": int(settings.seed),
            "train_examples": len(data.train)}


def _evaluate_given(path: str, settings, data) -> dict:
    """The eval-split metrics of a user-given dense model."""
    from rayprune.models import load_model_and_tokenizer
    from rayprune.training.evaluation import evaluate

    model, _ = load_model_and_tokenizer(path, task=data.task, trust_remote_code=settings.trust_remote_code)
    return evaluate(model, data.eval, data, settings.eval_batch_size)
