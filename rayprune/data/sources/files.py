"""Source ``files``: local csv, tsv, json, jsonl or parquet files (``train_files`` +
``eval_files``), read with ``datasets.load_dataset("csv" | "json" | "parquet", ...)``.

With a GLUE ``task`` as well, the preset supplies the text columns, the class names and the
metrics; otherwise ``text_fields`` and ``label_field`` name the columns.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

from rayprune.data.labels import finalize_task
from rayprune.data.presets import GLUE_TASKS
from rayprune.data.sources.base import class_names, dataset_columns
from rayprune.data.spec import FILE_FORMATS, DataSpec, TaskData

__all__ = ["load", "read_data_files"]


def _csv_kwargs(path: str) -> dict:
    """``datasets`` csv-builder options: TSVs have no quoting (GLUE sentences contain bare
    quotes), and only empty fields count as missing (a sentence may read "NA" or "null")."""
    kwargs: dict[str, Any] = {"keep_default_na": False, "na_values": [""]}
    if path.lower().endswith(".tsv"):
        kwargs.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    return kwargs


def read_data_files(files: Sequence[str], **extra) -> Any:
    """One ``datasets.Dataset`` from local files of one format; ``extra`` goes to the builder.

    Raises:
        ValueError: a file that does not exist or cannot be parsed, or files of different
            formats in one split.
    """
    import datasets

    for f in files:
        if not Path(f).is_file():
            raise ValueError(f"data file not found: {f!r}")
    builders = {FILE_FORMATS[Path(f).suffix.lower()] for f in files}
    is_tsv = {Path(f).suffix.lower() == ".tsv" for f in files}
    if len(builders) > 1 or len(is_tsv) > 1:
        raise ValueError(f"the files of one split must share one format, got {list(files)}")
    builder = builders.pop()
    kwargs = _csv_kwargs(files[0]) if builder == "csv" else {}
    kwargs.update(extra)
    try:
        return datasets.load_dataset(builder, data_files=list(files), split="train", **kwargs)
    except (datasets.exceptions.DatasetsError, ValueError) as err:
        # A malformed file: `datasets` wraps the parser's error (bad JSON, a broken CSV row,
        # bytes that are not UTF-8, a file that is not parquet); name the file and the cause.
        cause = err.__cause__ or err
        first = str(cause).splitlines()[0] if str(cause) else ""
        raise ValueError(
            f"could not read {list(files)} as {builder}: {type(cause).__name__}: {first}"
        ) from err


def load(spec: DataSpec, data_dir: str | None) -> TaskData:
    """Read ``spec.train_files`` and ``spec.eval_files`` (``data_dir`` is not used)."""
    if spec.train_files is None:
        raise ValueError("source 'files' needs train_files and eval_files")
    if spec.task_type != "classification":  # SQuAD JSON, CoNLL columns: the task reads its formats
        from rayprune.tasks import get_task

        return get_task(spec.task_type).load(spec, data_dir)
    preset = GLUE_TASKS.get(spec.task) if spec.task else None
    text_fields = tuple(spec.text_fields or preset.text_fields)
    label_field = spec.label_field
    fields = [*text_fields, label_field]
    train_ds = read_data_files(spec.train_files)
    notes: list[str] = []
    if spec.eval_fraction is not None:
        where = (f"train_files {spec.train_files} (train part)", f"train_files {spec.train_files} (eval part)")
        train_cols, eval_cols, note = carve_columns(
            dataset_columns(train_ds, fields + ([spec.group_field] if spec.group_field else []), where[0]),
            spec, f"train_files {spec.train_files}")
        notes.append(note)
    else:
        eval_ds = read_data_files(spec.eval_files)
        where = (f"train_files {spec.train_files}", f"eval_files {spec.eval_files}")
        train_cols = dataset_columns(train_ds, fields, where[0])
        eval_cols = dataset_columns(eval_ds, fields, where[1])
    task = finalize_task(
        spec,
        preset.name if preset else Path(spec.train_files[0]).stem,
        train_cols,
        eval_cols,
        text_fields=text_fields,
        label_field=label_field,
        num_labels=preset.num_labels if preset else None,
        label_names=class_names(train_ds, label_field) or (preset.label_names if preset else None),
        default_metrics=preset.metrics if preset else None,
        source="files:" + ",".join(spec.train_files + (spec.eval_files or [])),
        where=where,
    )
    task.notes.extend(notes)
    return task


def carve_columns(cols: dict[str, list], spec: DataSpec, where: str) -> tuple[dict, dict, str]:
    """Split one set of columns into (train, eval) by ``spec.group_field`` (data/splits.py)."""
    from rayprune.data.splits import describe_carve, eval_mask_by_group

    n = len(next(iter(cols.values()))) if cols else 0
    keys = cols[spec.group_field] if spec.group_field else [None] * n
    mask = eval_mask_by_group(keys, spec.eval_fraction, spec.seed, where=where, group_field=spec.group_field)
    train = {c: [v for v, m in zip(values, mask) if not m] for c, values in cols.items()}
    evals = {c: [v for v, m in zip(values, mask) if m] for c, values in cols.items()}
    return train, evals, describe_carve(mask, keys, spec.eval_fraction, spec.seed, spec.group_field)
