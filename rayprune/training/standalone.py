"""``rayprune train --config``: one fine-tune-and-prune job from an exported config, no search."""

from __future__ import annotations

from pathlib import Path

from rayprune.config import build_section, read_yaml
from rayprune.data.spec import DataSpec
from rayprune.errors import SpecError
from rayprune.training import TrialConfig, TrialSettings, build_method, run_training

__all__ = ["train_from_config", "CONFIG_KEYS"]

#: The keys of a config written by `rayprune export` (``data_dir`` is optional).
CONFIG_KEYS = ("model", "data", "data_dir", "metric", "training", "trial")


def train_from_config(path: str | Path, *, out: str | Path | None = None, data_dir: str | None = None) -> dict:
    """Re-run the trial described by ``config.yaml``; return its final metrics.

    Raises:
        SpecError: the config is unreadable or any part of it is invalid, before training starts.
    """
    from rayprune.data import load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer

    path = Path(path)
    raw = read_yaml(path, what="config")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: <top level>: expected a mapping (a config written by `rayprune export`)")
    for key in raw:
        if key not in CONFIG_KEYS:
            raise SpecError(f"{path}: {key}: unknown key; allowed: {list(CONFIG_KEYS)}")
    for key in ("model", "data", "training", "trial", "metric"):
        if key not in raw:
            raise SpecError(f"{path}: {key}: required (a config written by `rayprune export`)")
    data_spec = build_section(DataSpec, raw["data"], where="data", source=str(path))
    if not isinstance(raw["training"], dict):
        raise SpecError(f"{path}: training: expected a mapping of trial settings")
    settings = build_section(TrialSettings, {"model": raw["model"], "metric": raw["metric"], **raw["training"]},
                             where="training", source=str(path))
    if settings.teacher_dir and not Path(settings.teacher_dir).exists():
        raise SpecError(f"{path}: training.teacher_dir: {settings.teacher_dir} does not exist")
    if not isinstance(raw["trial"], dict):
        raise SpecError(f"{path}: trial: expected a mapping (the trial's flat config)")
    try:
        config = TrialConfig.from_flat(raw["trial"], settings)
        build_method(config)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}: trial: {err}") from None
    try:
        task = load_task(data_spec, data_dir=data_dir or raw.get("data_dir"))
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise SpecError(f"{path}: data: {err}") from None
    _, tokenizer = load_model_and_tokenizer(settings.model, task=task.task, trust_remote_code=settings.trust_remote_code)
    data = tokenize_task(task, tokenizer, max_seq_length=data_spec.max_seq_length)
    from tqdm.auto import tqdm

    bar = tqdm(total=settings.steps, desc=f"train {config.method}", unit="step")
    model, method, metrics = run_training(config, settings, data, progress=lambda s, t: bar.update(1))
    bar.close()
    if out:
        final = method.finalize() if method is not None else model
        final.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return metrics
