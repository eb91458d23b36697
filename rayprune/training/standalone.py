"""``rayprune train --config``: one fine-tune-and-prune job from an exported config, no search."""

from __future__ import annotations

from pathlib import Path

import yaml

from rayprune.errors import SpecError
from rayprune.training import TrialConfig, TrialSettings, run_training

__all__ = ["train_from_config"]


def train_from_config(path: str | Path, *, out: str | Path | None = None, data_dir: str | None = None) -> dict:
    """Re-run the trial described by ``config.yaml``; return its final metrics."""
    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    raw = yaml.safe_load(path.read_text()) or {}
    for key in ("model", "data", "training", "trial", "metric"):
        if key not in raw:
            raise SpecError(f"{path}: {key}: required (a config written by `rayprune export`)")
    data_spec_fields = {k: v for k, v in raw["data"].items() if k != "max_seq_length"}
    try:
        task = load_task(DataSpec(**data_spec_fields), data_dir=data_dir or raw.get("data_dir"))
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise SpecError(f"{path}: data: {err}") from None
    settings = TrialSettings(model=raw["model"], metric=raw["metric"], **raw["training"])
    _, tokenizer = load_model_and_tokenizer(settings.model, num_labels=task.num_labels, is_regression=task.is_regression)
    data = tokenize_task(task, tokenizer, max_seq_length=int(raw["data"].get("max_seq_length", 128)))
    if settings.teacher_dir and not Path(settings.teacher_dir).exists():
        raise SpecError(f"{path}: training.teacher_dir: {settings.teacher_dir} does not exist")
    config = TrialConfig.from_flat(raw["trial"], settings)
    from tqdm.auto import tqdm

    bar = tqdm(total=settings.steps, desc=f"train {config.method}", unit="step")
    model, method, metrics = run_training(config, settings, data, progress=lambda s, t: bar.update(1))
    bar.close()
    if out:
        final = method.finalize() if method is not None else model
        final.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return metrics
