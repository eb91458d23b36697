"""Source ``glue_dir``: the official GLUE TSVs in a local folder.

The folder is ``data_dir`` or ``$RAYPRUNE_DATA_DIR``; it holds the task directories as
``download_glue_data.py`` writes them (``SST-2/train.tsv`` + ``dev.tsv``) or in lowercase
(``sst2/``), directly or under ``glue/`` / ``glue_data/``.  The TSVs name their columns
differently from the hub; :func:`read_glue_tsv` renames them, so the task looks the same as one
loaded from the hub.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from rayprune.data.labels import finalize_task, missing_column, records_to_columns
from rayprune.data.presets import GLUE_SPLIT_FILES, GLUE_TASKS, TaskPreset, get_preset
from rayprune.data.sources.base import DATA_DIR_ENV, resolve_data_dir
from rayprune.data.sources.files import read_data_files
from rayprune.data.spec import DataSpec, TaskData

__all__ = ["load", "find_local_glue_dir", "read_glue_tsv"]

# A data dir may be the GLUE root itself or a folder holding it.
_GLUE_ROOTS = (".", "glue", "glue_data")


def find_local_glue_dir(data_dir: str | os.PathLike, task: str) -> Path | None:
    """The directory of ``task`` under a GLUE data dir, or ``None`` when it is not there.

    Looks for the official layout (``SST-2/dev.tsv``) and the lowercase one (``sst2/dev.tsv``),
    directly under ``data_dir`` or under ``data_dir/glue`` / ``data_dir/glue_data``.  A
    directory counts when it holds the task's eval file (``dev.tsv``; MNLI ``dev_matched.tsv``).
    """
    preset = get_preset(task)
    eval_file = GLUE_SPLIT_FILES[preset.eval_split]
    base = Path(data_dir).expanduser()
    for root in _GLUE_ROOTS:
        for name in preset.local_dirs:
            candidate = base / root / name
            if (candidate / eval_file).is_file():
                return candidate
    return None


def read_glue_tsv(path: str | os.PathLike, task: str) -> list[dict]:
    """Read one official GLUE TSV (train or dev) into examples with the hub's column names.

    Labels become class ids following the hub label order (``entailment`` -> 0 for RTE/QNLI,
    ``0``/``1`` stay as they are) or floats for STS-B.  Rows with a missing text or label are
    dropped with a warning (QQP's train file has a few).

    Raises:
        ValueError: unknown task, missing file or column, or a label outside the preset.
    """
    import datasets

    preset = get_preset(task)
    path = os.fspath(path)
    needed = [*preset.tsv_text_columns, preset.tsv_label_column]
    extra: dict[str, Any] = {
        # Read every column as text: labels are converted below, and a chunk of numeric-looking
        # sentences must not turn a text column into ints.
        "features": datasets.Features({c: datasets.Value("string") for c in needed}),
        "usecols": needed,
        # Lines with too many fields are skipped with pandas' warning, as GLUE readers do.
        "on_bad_lines": "warn",
    }
    if preset.tsv_header is not None:
        extra.update(header=None, column_names=list(preset.tsv_header))
    else:
        with open(path, encoding="utf-8-sig") as fh:  # MRPC's header starts with a BOM
            header = fh.readline().rstrip("\n").split("\t")
        for c in needed:
            if c not in header:
                raise missing_column(c, header, f"{path} (GLUE task {preset.name!r})")
    ds = read_data_files([path], **extra)
    cols = ds.to_dict()
    texts = [cols[c] for c in preset.tsv_text_columns]
    raw_labels = cols[preset.tsv_label_column]

    examples, dropped = [], 0
    label_of: dict[str, int | float] = {}  # raw label text -> label; few distinct values
    for *row_texts, raw in zip(*texts, raw_labels):
        if raw is None or None in row_texts:
            dropped += 1
            continue
        if raw not in label_of:
            label_of[raw] = _glue_label(raw, preset, path)
        ex = dict(zip(preset.text_fields, row_texts))
        ex[preset.label_field] = label_of[raw]
        examples.append(ex)
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} rows with a missing text or label", stacklevel=2)
    return examples


def _glue_label(raw: str, preset: TaskPreset, path: str) -> int | float:
    raw = raw.strip()
    if preset.is_regression:
        return float(raw)
    if preset.label_names is not None and raw in preset.label_names:
        return preset.label_names.index(raw)
    try:
        label = int(raw)
    except ValueError:
        label = -1
    if not 0 <= label < preset.num_labels:
        raise ValueError(
            f"{path}: label {raw!r} is not one of {list(preset.label_names or [])} nor a class id "
            f"in [0, {preset.num_labels}) for GLUE task {preset.name!r}"
        )
    return label


def load(spec: DataSpec, data_dir: str | None) -> TaskData:
    """Read the task's train file and its eval file (``dev.tsv`` unless ``eval_split`` says
    otherwise) from ``data_dir`` or ``$RAYPRUNE_DATA_DIR``."""
    preset = GLUE_TASKS.get(spec.task) if spec.task else None
    if preset is None:
        raise ValueError(
            f"source 'glue_dir' needs a GLUE task, got task={spec.task!r}; "
            f"allowed: {sorted(GLUE_TASKS)}"
        )
    folder, from_env = resolve_data_dir(data_dir)
    if folder is None:
        raise ValueError(
            f"source 'glue_dir' needs a data directory: pass data_dir (--data-dir) or set "
            f"{DATA_DIR_ENV}"
        )
    if not Path(folder).expanduser().is_dir():
        origin = f"{DATA_DIR_ENV}={folder}" if from_env else f"data_dir={folder!r}"
        raise ValueError(f"GLUE data directory not found: {origin}")
    task_dir = find_local_glue_dir(folder, preset.name)
    if task_dir is None:
        eval_file = GLUE_SPLIT_FILES[preset.eval_split]
        looked = [str(Path(r, d, eval_file)) for r in _GLUE_ROOTS for d in preset.local_dirs]
        hint = f" (set by {DATA_DIR_ENV}; unset it to load from the hub)" if from_env else ""
        raise ValueError(
            f"GLUE task {preset.name!r} not found under {folder!r}{hint}; looked for {looked}"
        )
    eval_split = spec.eval_split or preset.eval_split
    if eval_split not in GLUE_SPLIT_FILES or eval_split == "train":
        raise ValueError(
            f"eval_split {eval_split!r} has no labelled GLUE file; allowed: "
            f"{[s for s in GLUE_SPLIT_FILES if s != 'train']} (GLUE test files have no labels)"
        )
    train_path = task_dir / GLUE_SPLIT_FILES["train"]
    eval_path = task_dir / GLUE_SPLIT_FILES[eval_split]
    for p in (train_path, eval_path):
        if not p.is_file():
            raise ValueError(f"GLUE task {preset.name!r}: {p} is missing")
    fields = [*preset.text_fields, preset.label_field]
    return finalize_task(
        spec,
        preset.name,
        records_to_columns(read_glue_tsv(train_path, preset.name), fields),
        records_to_columns(read_glue_tsv(eval_path, preset.name), fields),
        text_fields=preset.text_fields,
        label_field=preset.label_field,
        num_labels=preset.num_labels,
        label_names=preset.label_names,
        default_metrics=preset.metrics,
        source=f"local:{task_dir}",
        where=(str(train_path), str(eval_path)),
    )
