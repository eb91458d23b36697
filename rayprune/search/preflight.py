"""Preflight: before Ray starts, the model, tokenizer and dataset resolve, the metric exists,
and the task is tokenised once (trials get it through Ray's object store).

What would otherwise fail in every trial (or as a library traceback here) is one
:class:`SpecError` naming the file and key: a truncated or corrupt weight file, a classifier
head whose size the data's labels contradict, a ``data.max_seq_length`` longer than the model's
position embeddings."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayprune.config import SearchSpec
from rayprune.errors import SpecError
from rayprune.training.config import TrialSettings

__all__ = ["PreparedSearch", "prepare_search", "check_weight_files", "check_max_seq_length", "position_limit"]


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
    check_weight_files(model_name, where=f"{spec.path}: model")
    reference_model = getattr(getattr(spec, "reference", None), "model", None)
    if reference_model:
        check_weight_files(reference_model, where=f"{spec.path}: reference.model")
    try:
        model, tokenizer = load_model_and_tokenizer(model_name, task=task.task, trust_remote_code=spec.trust_remote_code)
    except ValueError as err:
        raise SpecError(f"{spec.path}: model: {err}") from None
    except Exception as err:  # transformers' RuntimeError for a head of another size; a broken weight file
        raise _load_error(spec, model_name, task, err) from None
    check_max_seq_length(model, spec.data.max_seq_length, where=f"{spec.path}: data.max_seq_length",
                         model_name=spec.model)
    del model  # trials load their own; only the tokenizer is needed here
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
        "metrics": list(task.metrics), "notes": list(task.notes), "floor_rule": task.task.floor_description(),
        "train_examples": len(data.train),
        "selection_examples": len(data.selection), "eval_examples": len(data.eval),
        "max_seq_length": spec.data.max_seq_length, "data_dir": data_dir,
    }
    return PreparedSearch(spec, settings, data, search_dir, data_info)


def check_weight_files(model: str, *, where: str) -> None:
    """Open the header of every ``*.safetensors`` file of a local model directory (cheap: no
    tensor is read), so a truncated or corrupt file is one error naming it instead of
    safetensors' traceback from deep inside ``from_pretrained``.  A hub id (no such local
    directory) is left to the loader.

    Raises:
        SpecError: a file that is not a complete safetensors file.
    """
    from rayprune.models import resolve_model_path

    try:
        directory = Path(resolve_model_path(model))
    except ValueError:
        return  # an unknown bundled name: the loader's error names the allowed ones
    if not directory.is_dir():
        return
    from safetensors import SafetensorError, safe_open

    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise SpecError(f"{where}: {file} is not a complete safetensors file ({reason}); it is truncated or "
                            f"corrupt: copy, download or save the model again") from None


def position_limit(model) -> int | None:
    """The longest sequence a model's absolute position embeddings cover, or None when it has
    none (relative or rotary positions).  RoBERTa-style tables start after their padding index,
    so their first ``padding_idx + 1`` rows are not positions of a sequence."""
    import torch

    for name, module in model.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, torch.nn.Embedding):
            offset = module.padding_idx + 1 if module.padding_idx is not None else 0
            return module.num_embeddings - offset
    return None


def check_max_seq_length(model, max_seq_length: int, *, where: str, model_name: str) -> None:
    """Refuse a ``data.max_seq_length`` longer than the model's position embeddings: every
    batch is padded to it, so every trial would fail on a tensor size.

    Raises:
        SpecError: naming the key, the model and the longest length allowed.
    """
    limit = position_limit(model)
    if limit is not None and max_seq_length > limit:
        raise SpecError(f"{where}: {max_seq_length}, but the model {model_name} has {limit} position embeddings "
                        f"(sequences of at most {limit} tokens; every trial would fail on a tensor size); "
                        f"allowed: 8..{limit}")


def _load_error(spec, model_name: str, task, err: Exception) -> SpecError:
    """The one-line error for a model that failed to load in the preflight; re-raises what is
    not the user's to fix."""
    message = str(err)
    if isinstance(err, RuntimeError) and ("ignore_mismatched_sizes" in message or "size mismatch" in message):
        head = _head_size(model_name, spec.trust_remote_code)
        labels = sorted({example[task.label_field] for example in task.train + task.eval}, key=float)
        if task.is_regression:
            implied = "1 output (a regression task)"
        else:
            shown = labels if len(labels) <= 10 else labels[:10] + ["..."]
            implied = (f"{task.num_labels} classes (labels {shown}"
                       + ("" if task.label_names else "; integer labels are class ids, 0..max") + ")")
        return SpecError(
            f"{spec.path}: model: {spec.model} has a classification head of {head} labels, but the data's labels "
            f"imply {implied}; rayprune does not replace a trained head: give the model's base checkpoint "
            f"(without this head), one fine-tuned with {task.num_labels} labels, or data whose label ids fit the "
            f"head (0..{head - 1 if isinstance(head, int) else '?'})")
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors ships with transformers
        SafetensorError = ()  # noqa: N806
    if isinstance(err, SafetensorError):
        first = (message.strip().splitlines() or [type(err).__name__])[0][:200]
        return SpecError(f"{spec.path}: model: a weight file of {spec.model} is truncated or corrupt ({first}); "
                         f"download or save the model again")
    raise err


def _head_size(model_name: str, trust_remote_code: bool):
    """The number of labels the checkpoint's own config gives its head ('?' if unreadable)."""
    from transformers import AutoConfig

    from rayprune.models import resolve_model_path

    try:
        return int(AutoConfig.from_pretrained(resolve_model_path(model_name),
                                              trust_remote_code=trust_remote_code).num_labels)
    except Exception:  # the head size only decorates the message
        return "?"
