"""Source ``hub``: a Hugging Face hub dataset through ``datasets.load_dataset``.

A GLUE ``task`` loads ``nyu-mll/glue`` with the preset's configuration and columns; otherwise
``dataset`` (+ ``dataset_config``) with ``text_fields`` and ``label_field``.  GLUE test splits have
no labels, so the eval split defaults to the preset's validation split.
"""

from __future__ import annotations

from typing import Any

from rayprune.data.labels import finalize_task
from rayprune.data.presets import GLUE_TASKS
from rayprune.data.sources.base import class_names, dataset_columns
from rayprune.data.spec import DataSpec, TaskData

__all__ = ["load"]

# Eval split of a non-GLUE dataset when the spec names none: the first of these it has.
_EVAL_SPLIT_CANDIDATES = ("validation", "validation_matched", "dev", "test")


def _hub_load(name: str, config: str | None) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, config)
    except (OSError, ValueError) as err:
        # OSError covers ConnectionError (offline) and DatasetNotFoundError (FileNotFoundError).
        what = f"{name!r}" + (f" (config {config!r})" if config else "")
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"could not load dataset {what} from the Hugging Face hub (offline?) — pass "
            f"--data-dir or local files: {first}"
        ) from err


def _hub_split(dd: Any, split: str, name: str) -> Any:
    if split not in dd:
        raise ValueError(f"dataset {name!r} has no split {split!r}; available splits: {list(dd)}")
    return dd[split]


def load(spec: DataSpec, data_dir: str | None) -> TaskData:
    """Download (or read from the ``datasets`` cache) and finalize; ``data_dir`` is not used."""
    if spec.task_type != "classification":  # the task knows its columns (question/context/answers, tokens/tags)
        from rayprune.tasks import get_task

        return get_task(spec.task_type).load(spec, data_dir)
    preset = GLUE_TASKS.get(spec.task) if spec.task else None
    if preset is None and spec.dataset is None:
        raise ValueError(
            f"source 'hub' needs a GLUE task or a dataset name, got task={spec.task!r}"
        )
    name = preset.hub_name if preset else spec.dataset
    config = preset.hub_config if preset else spec.dataset_config
    dd = _hub_load(name, config)
    if spec.eval_split is not None:
        eval_split = spec.eval_split
    elif preset is not None:
        eval_split = preset.eval_split
    else:
        eval_split = next((s for s in _EVAL_SPLIT_CANDIDATES if s in dd), None)
        if eval_split is None:
            raise ValueError(
                f"dataset {name!r} has no validation/dev/test split; set eval_split to one of "
                f"{list(dd)}"
            )
    if eval_split == spec.train_split:
        raise ValueError(f"eval_split must differ from train_split, both are {eval_split!r}")
    train_ds = _hub_split(dd, spec.train_split, name)
    eval_ds = _hub_split(dd, eval_split, name)
    text_fields = tuple(spec.text_fields or preset.text_fields)
    label_field = preset.label_field if preset else spec.label_field
    fields = [*text_fields, label_field]
    where = (f"{name} split {spec.train_split!r}", f"{name} split {eval_split!r}")
    return finalize_task(
        spec,
        preset.name if preset else spec.dataset,
        dataset_columns(train_ds, fields, where[0]),
        dataset_columns(eval_ds, fields, where[1]),
        text_fields=text_fields,
        label_field=label_field,
        num_labels=preset.num_labels if preset else None,
        label_names=class_names(train_ds, label_field) or (preset.label_names if preset else None),
        default_metrics=preset.metrics if preset else None,
        source=f"hub:{name}{'/' + config if config else ''}[{spec.train_split},{eval_split}]",
        where=where,
    )
