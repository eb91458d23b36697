"""Preflight: before Ray starts, the model, tokenizer and dataset resolve, the metric exists,
and the task is tokenised once (trials get it through Ray's object store)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayprune.config import SearchSpec
from rayprune.errors import SpecError
from rayprune.training.config import TrialSettings

__all__ = ["PreparedSearch", "prepare_search"]


@dataclass
class PreparedSearch:
    spec: SearchSpec
    settings: TrialSettings
    data: Any  # TokenizedTask
    search_dir: Path
    data_info: dict


def prepare_search(spec: SearchSpec, *, output: str | Path = "rayprune_runs", data_dir: str | None = None,
                   log=print) -> PreparedSearch:
    """Preflight: the model, tokenizer and dataset resolve, the metric exists; tokenise once.

    Raises:
        SpecError: anything the user must fix, naming the file and key.
    """
    from rayprune.data import load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer

    try:
        task = load_task(spec.data, data_dir=data_dir)
    except SpecError:
        raise
    except (ValueError, FileNotFoundError) as err:
        raise SpecError(f"{spec.path}: data: {err}") from None
    metric = spec.metric or task.metrics[0]
    if metric not in task.metrics:
        raise SpecError(f"{spec.path}: objective.metric: {metric!r} is not a metric of task "
                        f"{task.name!r}; allowed: {list(task.metrics)}")
    spec.metric = metric  # the objective defaults to the task's primary metric
    model_name = spec.model
    local = Path(os.path.expanduser(model_name))
    if not model_name.startswith("bundled:") and local.exists():
        model_name = str(local.resolve())  # trials run in their own directories
    try:
        _, tokenizer = load_model_and_tokenizer(model_name, task=task.task, trust_remote_code=spec.trust_remote_code)
    except ValueError as err:
        raise SpecError(f"{spec.path}: model: {err}") from None
    data = tokenize_task(task, tokenizer, max_seq_length=spec.data.max_seq_length)
    training = spec.training
    steps = training.steps
    if steps is None:
        steps = max(1, int(math.ceil(training.epochs * len(data.train) / training.batch_size)))
    settings = TrialSettings.from_section(
        training, model=model_name, metric=metric, steps=int(steps), trust_remote_code=spec.trust_remote_code,
        # Fixed thread count: `rayprune train` on an exported config then reproduces the trial.
        threads=training.threads_per_trial or max(1, int(spec.cpu)),
    )
    search_dir = (Path(output) / spec.name).resolve()
    data_info = {
        **task.task.to_info(),
        "task": task.name, "num_labels": task.num_labels, "is_regression": task.is_regression,
        "metrics": list(task.metrics), "notes": list(task.notes), "floor_rule": task.task.floor_description(), "train_examples": len(data.train),
        "selection_examples": len(data.selection), "eval_examples": len(data.eval),
        "max_seq_length": spec.data.max_seq_length, "data_dir": data_dir,
    }
    return PreparedSearch(spec, settings, data, search_dir, data_info)
