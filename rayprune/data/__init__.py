"""Fine-tune, selection and eval data from a :class:`DataSpec`, tokenized once per search.

Where the data comes from (first match wins):

1. ``DataSpec(task="demo")``: a generated sentiment task with negation and contrast that runs
   fully offline (:func:`make_demo_task`).
2. ``train_files`` / ``eval_files``: local csv, tsv, json, jsonl or parquet files, read with
   ``datasets.load_dataset("csv" | "json" | "parquet", data_files=...)``.  With a GLUE ``task``
   as well, the preset supplies the columns and metrics.
3. A GLUE ``task`` and a data directory (``data_dir=`` or the ``RAYPRUNE_DATA_DIR`` environment
   variable): the official GLUE TSVs (``SST-2/train.tsv`` + ``dev.tsv`` as
   ``download_glue_data.py`` writes them, or lowercase ``sst2/``).
4. A GLUE ``task`` without a data directory, or a ``dataset`` name: the Hugging Face hub through
   ``datasets.load_dataset``.

GLUE test splits have no labels, so the dev split is the eval split (as every paper reports).
Methods that pick a checkpoint or a teacher (PINS, teacher selection) use the *selection*
split, carved from train after subsampling, so eval numbers stay untouched by any choice.

Example::

    from transformers import AutoTokenizer
    from rayprune.data import DataSpec, load_task, tokenize_task

    task = load_task(DataSpec(task="sst2", max_train_samples=2000), data_dir="glue_data")
    tok = AutoTokenizer.from_pretrained("bert-base-uncased")
    data = tokenize_task(task, tok, max_seq_length=128)
    for batch in data.train.batches(32, shuffle=True, seed=0):
        loss = model(**batch).loss
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from rayprune.metrics import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS

__all__ = [
    "TaskPreset",
    "GLUE_TASKS",
    "DataSpec",
    "TaskData",
    "find_local_glue_dir",
    "read_glue_tsv",
    "load_task",
    "make_demo_task",
    "TokenizedSplit",
    "TokenizedTask",
    "tokenize_task",
]

DATA_DIR_ENV = "RAYPRUNE_DATA_DIR"
DEMO_TASK = "demo"
# File extension -> `datasets` packaged builder.
FILE_FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"
}


# --------------------------------------------------------------------------------------------
# GLUE presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskPreset:
    """Columns, labels and metrics of one GLUE task.

    ``text_fields`` and ``label_field`` are the Hugging Face hub column names; the official TSVs
    name their columns differently (``tsv_text_columns``, ``tsv_label_column``) and are renamed
    to the hub names when read, so a :class:`TaskData` looks the same from either source.

    Attributes:
        name: preset key (``sst2``).
        text_fields: one or two hub text columns (a sentence, or a sentence pair).
        label_field: hub label column.
        num_labels: classes; 1 means regression (STS-B).
        metrics: metric names; the first is the primary one.
        eval_split: hub split used for evaluation (``validation_matched`` for MNLI).
        local_dirs: directory names of the task under a GLUE data dir (official, lowercase).
        label_names: class names in the hub's label order; string labels in the TSVs (RTE's
            ``entailment`` / ``not_entailment``) map to their position here.
        hub_name: hub dataset id.
        hub_config: hub configuration name.
        tsv_text_columns: TSV columns holding ``text_fields``, in the same order.
        tsv_label_column: TSV column holding the label.
        tsv_header: column names of a TSV without a header row (CoLA), else ``None``.
    """

    name: str
    text_fields: tuple[str, ...]
    label_field: str = "label"
    num_labels: int
    metrics: tuple[str, ...]
    eval_split: str = "validation"
    local_dirs: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    hub_name: str = "nyu-mll/glue"
    hub_config: str
    tsv_text_columns: tuple[str, ...]
    tsv_label_column: str
    tsv_header: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.text_fields) not in (1, 2):
            raise ValueError(f"{self.name}: text_fields must hold 1 or 2 columns")
        if len(self.tsv_text_columns) != len(self.text_fields):
            raise ValueError(f"{self.name}: tsv_text_columns must match text_fields")
        if not self.metrics or any(m not in METRICS for m in self.metrics):
            raise ValueError(f"{self.name}: metrics must be non-empty names from {sorted(METRICS)}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{self.name}: label_names must have num_labels entries")

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


GLUE_TASKS: dict[str, TaskPreset] = {
    p.name: p
    for p in (
        TaskPreset(
            name="cola",
            text_fields=("sentence",),
            num_labels=2,
            metrics=("matthews_correlation", "accuracy"),
            local_dirs=("CoLA", "cola"),
            label_names=("unacceptable", "acceptable"),
            hub_config="cola",
            tsv_text_columns=("sentence",),
            tsv_label_column="label",
            # The official CoLA train/dev.tsv have no header row.
            tsv_header=("source", "label", "original_label", "sentence"),
        ),
        TaskPreset(
            name="sst2",
            text_fields=("sentence",),
            num_labels=2,
            metrics=("accuracy",),
            local_dirs=("SST-2", "sst2"),
            label_names=("negative", "positive"),
            hub_config="sst2",
            tsv_text_columns=("sentence",),
            tsv_label_column="label",
        ),
        TaskPreset(
            name="mrpc",
            text_fields=("sentence1", "sentence2"),
            num_labels=2,
            metrics=("accuracy", "f1"),
            local_dirs=("MRPC", "mrpc"),
            label_names=("not_equivalent", "equivalent"),
            hub_config="mrpc",
            tsv_text_columns=("#1 String", "#2 String"),
            tsv_label_column="Quality",
        ),
        TaskPreset(
            name="qqp",
            text_fields=("question1", "question2"),
            num_labels=2,
            metrics=("accuracy", "f1"),
            local_dirs=("QQP", "qqp"),
            label_names=("not_duplicate", "duplicate"),
            hub_config="qqp",
            tsv_text_columns=("question1", "question2"),
            tsv_label_column="is_duplicate",
        ),
        TaskPreset(
            name="stsb",
            text_fields=("sentence1", "sentence2"),
            num_labels=1,
            metrics=("pearson", "spearman"),
            local_dirs=("STS-B", "stsb"),
            hub_config="stsb",
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="score",
        ),
        TaskPreset(
            name="mnli",
            text_fields=("premise", "hypothesis"),
            num_labels=3,
            metrics=("accuracy",),
            eval_split="validation_matched",
            local_dirs=("MNLI", "mnli"),
            label_names=("entailment", "neutral", "contradiction"),
            hub_config="mnli",
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="gold_label",
        ),
        TaskPreset(
            name="qnli",
            text_fields=("question", "sentence"),
            num_labels=2,
            metrics=("accuracy",),
            local_dirs=("QNLI", "qnli"),
            label_names=("entailment", "not_entailment"),
            hub_config="qnli",
            tsv_text_columns=("question", "sentence"),
            tsv_label_column="label",
        ),
        TaskPreset(
            name="rte",
            text_fields=("sentence1", "sentence2"),
            num_labels=2,
            metrics=("accuracy",),
            local_dirs=("RTE", "rte"),
            label_names=("entailment", "not_entailment"),
            hub_config="rte",
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="label",
        ),
    )
}

# Hub split name -> file name in a GLUE task directory (download_glue_data.py layout).
GLUE_SPLIT_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}
# A data dir may be the GLUE root itself or a folder holding it.
_GLUE_ROOTS = (".", "glue", "glue_data")


def _allowed_tasks() -> list[str]:
    return sorted(GLUE_TASKS) + [DEMO_TASK]


def _normalize_task(task: str) -> str:
    """``SST-2`` / ``STS-B`` / ``CoLA`` -> preset keys, so official directory names work too."""
    return task.strip().lower().replace("-", "").replace("_", "")


# --------------------------------------------------------------------------------------------
# Spec and loaded data
# --------------------------------------------------------------------------------------------


def _as_file_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (str, os.PathLike)) for v in value
    ):
        raise TypeError(f"{name} must be a list of file paths, got {value!r}")
    if not value:
        raise ValueError(f"{name} must name at least one file, got an empty list")
    files = [os.fspath(v) for v in value]
    for f in files:
        if Path(f).suffix.lower() not in FILE_FORMATS:
            raise ValueError(
                f"{name}: unsupported file type {f!r}; allowed extensions: {sorted(FILE_FORMATS)}"
            )
    return files


def _check_optional_positive(value: Any, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (or None for all examples), got {name}={value}")


@dataclass(kw_only=True)
class DataSpec:
    """Which data a search fine-tunes and evaluates on.

    Exactly one source: ``task`` (a GLUE preset or ``"demo"``), ``dataset`` (a hub name), or
    ``train_files`` + ``eval_files`` (optionally with a GLUE ``task`` for its columns/metrics).

    Attributes:
        task: GLUE preset (``cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte``; official spellings
            such as ``SST-2`` are accepted) or ``"demo"`` for the built-in offline task.
        dataset: Hugging Face hub dataset name (e.g. ``imdb``), used when ``task`` is unset.
        dataset_config: its configuration name.
        train_files: local csv/tsv/json/jsonl/parquet files for training.
        eval_files: local files for evaluation (required with ``train_files``).
        text_fields: one or two text columns; required unless a preset supplies them.
        label_field: label column.
        num_labels: classes (1 = regression); inferred from the labels when ``None``.
        metrics: metric names, first = primary; default: the preset's, else ``accuracy``
            (``pearson``, ``spearman`` for regression).
        train_split: hub split to train on.
        eval_split: hub split to evaluate on; default: the preset's, else the first of
            ``validation``, ``validation_matched``, ``dev``, ``test`` that exists.
        max_train_samples: keep this many training examples (seeded random subset; the subsets
            for growing sizes are nested), e.g. for CPU runs.
        max_eval_samples: the same for the eval split.
        selection_fraction: fraction of the (subsampled) train split held out as the selection
            split for checkpoint/teacher selection; never taken from eval.
        seed: seed of the subsampling and the selection split.
    """

    task: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_files: list[str] | None = None
    eval_files: list[str] | None = None
    text_fields: list[str] | None = None
    label_field: str = "label"
    num_labels: int | None = None
    metrics: list[str] | None = None
    train_split: str = "train"
    eval_split: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    selection_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task is not None:
            if not isinstance(self.task, str):
                raise TypeError(f"task must be a string, got task={self.task!r}")
            key = _normalize_task(self.task)
            if key not in GLUE_TASKS and key != DEMO_TASK:
                raise ValueError(f"unknown task {self.task!r}; allowed: {_allowed_tasks()}")
            self.task = key
        self.train_files = _as_file_list(self.train_files, "train_files")
        self.eval_files = _as_file_list(self.eval_files, "eval_files")
        if self.task is None and self.dataset is None and self.train_files is None:
            raise ValueError(
                "no data source: set task (a GLUE preset or 'demo'), dataset (a hub name) or "
                "train_files + eval_files"
            )
        if self.dataset is not None and (self.task is not None or self.train_files is not None):
            raise ValueError("dataset cannot be combined with task or train_files; pick one source")
        if self.dataset_config is not None and self.dataset is None:
            raise ValueError("dataset_config needs dataset to be set")
        if (self.train_files is None) != (self.eval_files is None):
            raise ValueError(
                "train_files and eval_files go together: the eval split is never carved from "
                "train, so pass both"
            )
        if self.task == DEMO_TASK and (self.train_files is not None or self.text_fields):
            raise ValueError("task='demo' is generated; it takes no train_files or text_fields")
        if self.text_fields is not None:
            if isinstance(self.text_fields, str):
                self.text_fields = [self.text_fields]
            self.text_fields = list(self.text_fields)
            if len(self.text_fields) not in (1, 2) or not all(
                isinstance(f, str) and f for f in self.text_fields
            ):
                raise ValueError(
                    "text_fields must name 1 or 2 text columns, got "
                    f"text_fields={self.text_fields!r}"
                )
            if self.task in GLUE_TASKS and self.train_files is None:
                raise ValueError(
                    f"text_fields is set by the GLUE preset {self.task!r}; pass it only with "
                    "train_files or a hub dataset"
                )
        elif self.task is None:
            raise ValueError(
                "text_fields is required without a GLUE task: name the 1 or 2 text columns"
            )
        if self.num_labels is not None:
            if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool):
                raise TypeError(f"num_labels must be an int or None, got {self.num_labels!r}")
            if self.num_labels < 1:
                raise ValueError(f"num_labels must be >= 1 (1 = regression), got {self.num_labels}")
            if self.task in GLUE_TASKS and self.num_labels != GLUE_TASKS[self.task].num_labels:
                raise ValueError(
                    f"num_labels={self.num_labels} contradicts the GLUE preset {self.task!r} "
                    f"(num_labels={GLUE_TASKS[self.task].num_labels})"
                )
        if self.metrics is not None:
            if isinstance(self.metrics, str):
                self.metrics = [self.metrics]
            self.metrics = list(self.metrics)
            unknown = [m for m in self.metrics if m not in METRICS]
            if not self.metrics or unknown:
                raise ValueError(
                    f"metrics must be a non-empty list from {sorted(METRICS)}, got {self.metrics!r}"
                )
        _check_optional_positive(self.max_train_samples, "max_train_samples")
        _check_optional_positive(self.max_eval_samples, "max_eval_samples")
        if not isinstance(self.selection_fraction, (int, float)) or not (
            0.0 <= self.selection_fraction < 1.0
        ):
            raise ValueError(
                "selection_fraction must be in [0, 1), got "
                f"selection_fraction={self.selection_fraction!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got seed={self.seed!r}")
        if not self.label_field:
            raise ValueError("label_field must be a non-empty column name")


@dataclass
class TaskData:
    """Loaded, label-encoded examples; what :func:`tokenize_task` consumes.

    Each example is a dict ``{text_field: str, ..., label_field: int | float}``.  Labels are
    class ids in ``[0, num_labels)``, or floats for regression (``num_labels == 1``).
    """

    name: str
    train: list[dict]
    selection: list[dict]
    eval: list[dict]
    text_fields: tuple[str, ...]
    label_field: str
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    source: str = ""

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


# --------------------------------------------------------------------------------------------
# Local GLUE files
# --------------------------------------------------------------------------------------------


def _preset(task: str) -> TaskPreset:
    key = _normalize_task(task)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; allowed: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def find_local_glue_dir(data_dir: str | os.PathLike, task: str) -> Path | None:
    """The directory of ``task`` under a GLUE data dir, or ``None`` when it is not there.

    Looks for the official layout (``SST-2/dev.tsv``) and the lowercase one (``sst2/dev.tsv``),
    directly under ``data_dir`` or under ``data_dir/glue`` / ``data_dir/glue_data``.  A
    directory counts when it holds the task's eval file (``dev.tsv``; MNLI ``dev_matched.tsv``).
    """
    preset = _preset(task)
    eval_file = GLUE_SPLIT_FILES[preset.eval_split]
    base = Path(data_dir).expanduser()
    for root in _GLUE_ROOTS:
        for name in preset.local_dirs:
            candidate = base / root / name
            if (candidate / eval_file).is_file():
                return candidate
    return None


def _csv_kwargs(path: str) -> dict:
    """``datasets`` csv-builder options: TSVs have no quoting (GLUE sentences contain bare
    quotes), and only empty fields count as missing (a sentence may read "NA" or "null")."""
    kwargs: dict[str, Any] = {"keep_default_na": False, "na_values": [""]}
    if path.lower().endswith(".tsv"):
        kwargs.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    return kwargs


def _load_files(files: Sequence[str], **extra) -> "Any":
    """One ``datasets.Dataset`` from local files of one format."""
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
    return datasets.load_dataset(builder, data_files=list(files), split="train", **kwargs)


def _missing_column(column: str, available: Sequence[str], where: str) -> ValueError:
    return ValueError(
        f"column {column!r} not found in {where}; available columns: {list(available)}"
    )


def read_glue_tsv(path: str | os.PathLike, task: str) -> list[dict]:
    """Read one official GLUE TSV (train or dev) into examples with the hub's column names.

    Labels become class ids following the hub label order (``entailment`` -> 0 for RTE/QNLI,
    ``0``/``1`` stay as they are) or floats for STS-B.  Rows with a missing text or label are
    dropped with a warning (QQP's train file has a few).

    Raises:
        ValueError: unknown task, missing file or column, or a label outside the preset.
    """
    import datasets

    preset = _preset(task)
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
                raise _missing_column(c, header, f"{path} (GLUE task {preset.name!r})")
    ds = _load_files([path], **extra)
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


# --------------------------------------------------------------------------------------------
# Label encoding, subsampling, selection split
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) or isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, (float, np.floating))


def _encode_labels(
    train: list, evals: list, *, num_labels: int | None, label_names: Sequence[str] | None
) -> tuple[list, list, int, tuple[str, ...] | None]:
    """Labels -> class ids (or floats when regression); returns (train, eval, num_labels, names).

    Rules: ``num_labels == 1`` -> regression floats.  Known ``label_names`` (preset or hub
    ``ClassLabel``) -> names map to their index, ids pass through.  Otherwise strings get ids in
    sorted order, ints stay as ids (``num_labels = max + 1``), and numbers with at least one
    float among them mean regression.
    """
    values = train + evals
    numeric = all(_is_float(v) or (_is_int(v) and not isinstance(v, bool)) for v in values)
    if num_labels == 1 or (
        num_labels is None
        and label_names is None
        and numeric
        and any(_is_float(v) for v in values)
    ):
        try:
            return [float(v) for v in train], [float(v) for v in evals], 1, None
        except (TypeError, ValueError) as err:
            raise ValueError(f"regression labels must be numbers: {err}") from None

    if label_names is None and values and all(isinstance(v, str) for v in values):
        label_names = tuple(sorted(set(values)))
    if label_names is not None:
        names = tuple(str(n) for n in label_names)
        if num_labels is not None and num_labels != len(names):
            raise ValueError(
                f"num_labels={num_labels} but the labels have {len(names)} classes: {list(names)}"
            )
        num_labels = len(names)
        index = {n: i for i, n in enumerate(names)}

        def to_id(v: Any) -> int:
            if isinstance(v, str) and v in index:
                return index[v]
            if isinstance(v, str) and v.strip().isdigit():  # "1" from a text column
                v = int(v)
            if _is_int(v) or (_is_float(v) and float(v).is_integer()):
                if 0 <= int(v) < len(names):
                    return int(v)
            raise ValueError(
                f"label {v!r} is not one of {list(names)} nor an id in [0, {len(names)})"
            )

        return [to_id(v) for v in train], [to_id(v) for v in evals], num_labels, names

    def as_int(v: Any) -> int:
        if _is_int(v) or (_is_float(v) and float(v).is_integer()):
            return int(v)
        raise ValueError(
            f"cannot use label {v!r} ({type(v).__name__}) as a class id; labels must be all "
            "integers, all strings, or floats for regression (num_labels=1)"
        )

    tr, ev = [as_int(v) for v in train], [as_int(v) for v in evals]
    ids = tr + ev
    if not ids:
        raise ValueError("no labelled examples")
    if min(ids) < 0:
        raise ValueError(f"class ids must be >= 0, found {min(ids)}")
    inferred = max(ids) + 1
    if num_labels is None:
        num_labels = max(inferred, 2)
    elif inferred > num_labels:
        raise ValueError(f"label id {max(ids)} is out of range for num_labels={num_labels}")
    return tr, ev, num_labels, None


def _seeded_subset(n: int, k: int | None, seed: int, stream: int) -> np.ndarray:
    """Indices of a seeded random subset of size ``min(k, n)`` (all of them when ``k`` is None).

    The first ``k`` entries of one permutation, sorted: subsets for growing ``k`` are nested.
    """
    if k is None or k >= n:
        return np.arange(n)
    perm = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(perm[:k])


_STREAM_TRAIN, _STREAM_EVAL, _STREAM_SELECTION = 0, 1, 2


def _split_selection(
    train: list[dict], fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """Carve ``ceil(fraction * n)`` examples (at least one, if fraction > 0) out of train."""
    n = len(train)
    if fraction <= 0.0 or n == 0:
        return train, []
    n_sel = min(max(1, math.ceil(fraction * n)), n - 1)
    if n_sel <= 0:
        raise ValueError(
            f"selection_fraction={fraction} needs at least 2 training examples, got {n}"
        )
    perm = np.random.default_rng([seed, _STREAM_SELECTION]).permutation(n)
    sel = np.sort(perm[:n_sel])
    keep = np.sort(perm[n_sel:])
    return [train[i] for i in keep], [train[i] for i in sel]


def _finalize(
    name: str,
    train_cols: dict[str, list],
    eval_cols: dict[str, list],
    *,
    spec: DataSpec,
    text_fields: Sequence[str],
    label_field: str,
    num_labels: int | None,
    label_names: Sequence[str] | None,
    default_metrics: Sequence[str] | None,
    source: str,
    where: tuple[str, str],
) -> TaskData:
    """Columns -> TaskData: check columns, drop incomplete rows, encode labels, subsample, carve
    the selection split, and check that the metrics fit the label type."""
    needed = [*text_fields, label_field]
    for cols, w in ((train_cols, where[0]), (eval_cols, where[1])):
        for c in needed:
            if c not in cols:
                raise _missing_column(c, list(cols), w)

    def rows(cols: dict[str, list], w: str) -> tuple[list[list], list]:
        texts, labels, dropped = [], [], 0
        for i, label in enumerate(cols[label_field]):
            row = [cols[f][i] for f in text_fields]
            if label is None or (_is_float(label) and math.isnan(label)) or any(
                t is None for t in row
            ):
                dropped += 1
                continue
            texts.append([t if isinstance(t, str) else str(t) for t in row])
            labels.append(label)
        if dropped:
            warnings.warn(f"{w}: dropped {dropped} rows with a missing text or label", stacklevel=3)
        return texts, labels

    train_texts, train_labels = rows(train_cols, where[0])
    eval_texts, eval_labels = rows(eval_cols, where[1])
    if not train_texts:
        raise ValueError(f"{where[0]} has no labelled examples")
    if not eval_texts:
        raise ValueError(f"{where[1]} has no labelled examples")
    train_labels, eval_labels, num_labels, names = _encode_labels(
        train_labels, eval_labels, num_labels=num_labels, label_names=label_names
    )
    is_regression = num_labels == 1

    metrics = tuple(spec.metrics or default_metrics or ())
    if not metrics:
        metrics = REGRESSION_METRICS if is_regression else ("accuracy",)
    allowed = REGRESSION_METRICS if is_regression else CLASSIFICATION_METRICS
    bad = [m for m in metrics if m not in allowed]
    if bad:
        kind = "regression" if is_regression else "classification"
        raise ValueError(f"metrics {bad} do not apply to {kind}; allowed: {list(allowed)}")
    if "f1" in metrics and num_labels != 2:
        raise ValueError(f"metric 'f1' is binary (positive class 1) but num_labels={num_labels}")

    def examples(texts: list[list], labels: list, idx: np.ndarray) -> list[dict]:
        out = []
        for i in idx:
            ex = dict(zip(text_fields, texts[i]))
            ex[label_field] = labels[i]
            out.append(ex)
        return out

    tr_idx = _seeded_subset(len(train_texts), spec.max_train_samples, spec.seed, _STREAM_TRAIN)
    ev_idx = _seeded_subset(len(eval_texts), spec.max_eval_samples, spec.seed, _STREAM_EVAL)
    train = examples(train_texts, train_labels, tr_idx)
    train, selection = _split_selection(train, spec.selection_fraction, spec.seed)
    return TaskData(
        name=name,
        train=train,
        selection=selection,
        eval=examples(eval_texts, eval_labels, ev_idx),
        text_fields=tuple(text_fields),
        label_field=label_field,
        num_labels=num_labels,
        is_regression=is_regression,
        metrics=metrics,
        label_names=None if names is None else tuple(names),
        source=source,
    )


def _records_to_cols(records: list[dict], fields: Sequence[str]) -> dict[str, list]:
    return {f: [r[f] for r in records] for f in fields}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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


def _columns(ds: Any, fields: Sequence[str], where: str) -> dict[str, list]:
    missing = [c for c in fields if c not in ds.column_names]
    if missing:
        raise _missing_column(missing[0], ds.column_names, where)
    return ds.select_columns(list(fields)).to_dict()


def _class_names(ds: Any, label_field: str) -> tuple[str, ...] | None:
    feature = ds.features.get(label_field)
    names = getattr(feature, "names", None)  # datasets.ClassLabel
    return tuple(names) if names else None


def _load_hub(spec: DataSpec, preset: TaskPreset | None) -> TaskData:
    name = preset.hub_name if preset else spec.dataset
    config = preset.hub_config if preset else spec.dataset_config
    dd = _hub_load(name, config)
    if spec.eval_split is not None:
        eval_split = spec.eval_split
    elif preset is not None:
        eval_split = preset.eval_split
    else:
        eval_split = next(
            (s for s in ("validation", "validation_matched", "dev", "test") if s in dd), None
        )
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
    names = _class_names(train_ds, label_field) or (preset.label_names if preset else None)
    return _finalize(
        preset.name if preset else spec.dataset,
        _columns(train_ds, fields, f"{name} split {spec.train_split!r}"),
        _columns(eval_ds, fields, f"{name} split {eval_split!r}"),
        spec=spec,
        text_fields=text_fields,
        label_field=label_field,
        num_labels=preset.num_labels if preset else spec.num_labels,
        label_names=names,
        default_metrics=preset.metrics if preset else None,
        source=f"hub:{name}{'/' + config if config else ''}[{spec.train_split},{eval_split}]",
        where=(f"{name} split {spec.train_split!r}", f"{name} split {eval_split!r}"),
    )


def _load_local_glue(spec: DataSpec, preset: TaskPreset, data_dir: str, from_env: bool) -> TaskData:
    if not Path(data_dir).expanduser().is_dir():
        origin = f"{DATA_DIR_ENV}={data_dir}" if from_env else f"data_dir={data_dir!r}"
        raise ValueError(f"GLUE data directory not found: {origin}")
    task_dir = find_local_glue_dir(data_dir, preset.name)
    if task_dir is None:
        eval_file = GLUE_SPLIT_FILES[preset.eval_split]
        looked = [str(Path(r, d, eval_file)) for r in _GLUE_ROOTS for d in preset.local_dirs]
        hint = f" (set by {DATA_DIR_ENV}; unset it to load from the hub)" if from_env else ""
        raise ValueError(
            f"GLUE task {preset.name!r} not found under {data_dir!r}{hint}; looked for {looked}"
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
    return _finalize(
        preset.name,
        _records_to_cols(read_glue_tsv(train_path, preset.name), fields),
        _records_to_cols(read_glue_tsv(eval_path, preset.name), fields),
        spec=spec,
        text_fields=preset.text_fields,
        label_field=preset.label_field,
        num_labels=preset.num_labels,
        label_names=preset.label_names,
        default_metrics=preset.metrics,
        source=f"local:{task_dir}",
        where=(str(train_path), str(eval_path)),
    )


def _load_local_files(spec: DataSpec, preset: TaskPreset | None) -> TaskData:
    text_fields = tuple(spec.text_fields or preset.text_fields)
    label_field = spec.label_field
    fields = [*text_fields, label_field]
    train_ds = _load_files(spec.train_files)
    eval_ds = _load_files(spec.eval_files)
    where = (f"train_files {spec.train_files}", f"eval_files {spec.eval_files}")
    name = preset.name if preset else Path(spec.train_files[0]).stem
    return _finalize(
        name,
        _columns(train_ds, fields, where[0]),
        _columns(eval_ds, fields, where[1]),
        spec=spec,
        text_fields=text_fields,
        label_field=label_field,
        num_labels=preset.num_labels if preset else spec.num_labels,
        label_names=_class_names(train_ds, label_field) or (preset.label_names if preset else None),
        default_metrics=preset.metrics if preset else None,
        source="files:" + ",".join(spec.train_files + spec.eval_files),
        where=where,
    )


def load_task(spec: DataSpec, *, data_dir: str | None = None) -> TaskData:
    """Load, label-encode, subsample and split the data a :class:`DataSpec` names.

    Called once per search by the driver; the result is tokenized with :func:`tokenize_task` and
    shipped to every trial.

    Args:
        spec: what to load (see the module docstring for the order of sources).
        data_dir: folder with GLUE task directories; default: ``$RAYPRUNE_DATA_DIR``.  Without
            one, GLUE presets load from the Hugging Face hub.

    Raises:
        ValueError: missing files or columns, labels that do not fit, metrics that do not apply,
            or a hub dataset that cannot be reached (the message says to pass local data).
    """
    if not isinstance(spec, DataSpec):
        raise TypeError(f"spec must be a DataSpec, got {type(spec).__name__}")
    if spec.task == DEMO_TASK:
        records = _demo_split_pair(
            n_train=spec.max_train_samples or 2000,
            n_eval=spec.max_eval_samples or 500,
            seed=spec.seed,
        )
        return _finalize_demo(records, spec)
    preset = GLUE_TASKS.get(spec.task) if spec.task else None
    if spec.train_files is not None:
        return _load_local_files(spec, preset)
    if preset is not None:
        from_env = data_dir is None
        if from_env:
            data_dir = os.environ.get(DATA_DIR_ENV) or None
        if data_dir:
            return _load_local_glue(spec, preset, data_dir, from_env)
    return _load_hub(spec, preset)


# --------------------------------------------------------------------------------------------
# Demo task
# --------------------------------------------------------------------------------------------

# Film-review vocabulary.  Copular verbs are negated by inserting one word ("was not", "is
# never"), so moving the negation from one clause to the other keeps the multiset of words.
_ASPECTS = (
    "the plot", "the acting", "the script", "the soundtrack", "the dialogue", "the ending",
    "the cast", "the direction", "the pacing", "the camera work", "the story", "the lead",
    "the humor", "the score", "the editing", "the finale", "the premise", "the villain",
)
_POSITIVE = (
    "good", "great", "wonderful", "brilliant", "excellent", "charming", "engaging", "clever",
    "moving", "delightful", "gripping", "impressive", "beautiful", "funny", "fresh",
    "compelling", "solid", "memorable", "superb", "enjoyable",
)
_NEGATIVE = (
    "bad", "awful", "dull", "boring", "terrible", "weak", "clumsy", "tedious", "predictable",
    "bland", "messy", "forgettable", "painful", "lifeless", "lazy", "flat", "sloppy", "shallow",
    "tiresome", "mediocre",
)
# Adjectives that only eval sentences use: the model must bring their polarity from
# pre-training, which is exactly the knowledge that pruning can destroy.
_EVAL_ONLY_POSITIVE = (
    "dazzling", "stunning", "touching", "inventive", "riveting", "witty", "masterful", "heartfelt",
)
_EVAL_ONLY_NEGATIVE = (
    "clunky", "dreary", "incoherent", "insipid", "plodding", "trite", "amateurish", "stale",
)
_COPULAS = ("was", "is")
_NEGATORS = ("not", "never")
_INTENSIFIERS = ("", "", "", "very", "really", "quite", "truly", "rather", "so")
# Label = the clause in {b}; {a} is the conceded clause of opposite polarity.
_CONTRAST = (
    "{a} but {b}", "{a} , but {b}", "{a} , yet {b}", "{a} ; however , {b}", "although {a} , {b}",
    "even though {a} , {b}", "while {a} , {b}", "{b} , although {a}", "{b} , even though {a}",
    "{b} , though {a}",
)
_AGREE = ("{a} and {b}", "{a} , and {b}", "{a} ; also , {b}")
_REPORTED = (
    "i expected it to be {adj}", "the trailer made it look {adj}", "my friends said it was {adj}",
    "critics called it {adj}", "everyone told me it would be {adj}",
)
_PREFIXES = ("honestly ,", "to be fair ,", "in the end ,", "i saw it on a sunday ,", "for me ,")
_SUFFIXES = (
    ", if you ask me", ", at least for me", ". we watched it at home", ". my brother picked it",
    ", in my opinion",
)


class _DemoGenerator:
    """Sentences whose label depends on negation scope and on which clause a contrast keeps.

    Each call to :meth:`unit` returns one or two ``(sentence, label)`` pairs.  Twin units return
    two sentences with the same multiset of words and opposite labels (clauses swapped around
    the connective, or the negation moved to the other clause), so no bag-of-words model can get
    both right.
    """

    def __init__(self, rng: np.random.Generator, *, held_out_adjectives: bool) -> None:
        self.rng = rng
        self.target = 0  # alternates so single-sentence units stay balanced
        self.positive = _POSITIVE + (_EVAL_ONLY_POSITIVE if held_out_adjectives else ())
        self.negative = _NEGATIVE + (_EVAL_ONLY_NEGATIVE if held_out_adjectives else ())

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def clause(self, polarity: int, *, negated: bool | None = None, aspect: str | None = None):
        """(words before the adjective, adjective) of a clause with the given polarity (1/0)."""
        if negated is None:
            negated = bool(self.rng.random() < 0.4)
        adj_pol = polarity if not negated else 1 - polarity
        adj = self.pick(self.positive if adj_pol else self.negative)
        verb = self.pick(_COPULAS)
        neg = self.pick(_NEGATORS) if negated else ""
        intens = self.pick(_INTENSIFIERS)
        return " ".join(w for w in (aspect or self.pick(_ASPECTS), verb, neg, intens, adj) if w)

    def two_aspects(self) -> tuple[str, str]:
        i, j = self.rng.choice(len(_ASPECTS), size=2, replace=False)
        return _ASPECTS[int(i)], _ASPECTS[int(j)]

    def wrap(self, sentence: str) -> str:
        r = self.rng.random()
        if r < 0.15:
            return f"{self.pick(_PREFIXES)} {sentence}"
        if r < 0.3:
            return f"{sentence} {self.pick(_SUFFIXES)}"
        return sentence

    def next_target(self) -> int:
        self.target = 1 - self.target
        return self.target

    def unit(self) -> list[tuple[str, int]]:
        kind = self.rng.random()
        if kind < 0.2:  # one clause: label = adjective polarity XOR negation
            y = self.next_target()
            return [(self.wrap(self.clause(y)), y)]
        if kind < 0.35:  # two clauses that agree
            y = self.next_target()
            asp_a, asp_b = self.two_aspects()
            a, b = self.clause(y, aspect=asp_a), self.clause(y, aspect=asp_b)
            return [(self.wrap(self.pick(_AGREE).format(a=a, b=b)), y)]
        if kind < 0.5:  # contrast: the kept clause decides
            y = self.next_target()
            asp_a, asp_b = self.two_aspects()
            a, b = self.clause(1 - y, aspect=asp_a), self.clause(y, aspect=asp_b)
            return [(self.wrap(self.pick(_CONTRAST).format(a=a, b=b)), y)]
        if kind < 0.6:  # a reported opinion that the sentence then overrides
            y = self.next_target()
            adj = self.pick(self.negative if y else self.positive)
            said = self.pick(_REPORTED).format(adj=adj)
            return [(self.wrap(f"{said} , but {self.clause(y)}"), y)]
        template = self.pick(_CONTRAST)
        prefix_suffix = self.wrap("{}")
        if kind < 0.8:  # twin: swap the clauses around the connective
            asp_a, asp_b = self.two_aspects()
            a, b = self.clause(0, aspect=asp_a), self.clause(1, aspect=asp_b)
            return [
                (prefix_suffix.format(template.format(a=a, b=b)), 1),
                (prefix_suffix.format(template.format(a=b, b=a)), 0),
            ]
        # twin: same two adjectives (same polarity), the negation sits in one clause or the other
        p = int(self.rng.integers(2))
        adjs = self.positive if p else self.negative
        asp_a, asp_b = self.two_aspects()
        verb_a, verb_b, neg = self.pick(_COPULAS), self.pick(_COPULAS), self.pick(_NEGATORS)
        adj_a, adj_b = self.pick(adjs), self.pick(adjs)
        int_a, int_b = self.pick(_INTENSIFIERS), self.pick(_INTENSIFIERS)

        def cl(aspect: str, verb: str, intens: str, adj: str, negated: bool) -> str:
            return " ".join(w for w in (aspect, verb, neg if negated else "", intens, adj) if w)

        a_neg, a_pos = (cl(asp_a, verb_a, int_a, adj_a, flag) for flag in (True, False))
        b_neg, b_pos = (cl(asp_b, verb_b, int_b, adj_b, flag) for flag in (True, False))
        first, second = template.format(a=a_neg, b=b_pos), template.format(a=a_pos, b=b_neg)
        # {b} decides: plain in the first sentence (label p), negated in the second (label 1-p).
        return [(prefix_suffix.format(first), p), (prefix_suffix.format(second), 1 - p)]


def _demo_examples(
    n: int, rng: np.random.Generator, exclude: set[str], *, held_out_adjectives: bool
) -> list[dict]:
    gen = _DemoGenerator(rng, held_out_adjectives=held_out_adjectives)
    seen = set(exclude)
    out: list[dict] = []
    while len(out) < n:
        unit = gen.unit()
        if any(s in seen for s, _ in unit):
            continue  # keep sentences unique within and across splits
        for s, y in unit:
            seen.add(s)
            out.append({"sentence": s, "label": y})
    out = out[:n]
    order = rng.permutation(len(out))  # twins must not sit next to each other
    return [out[i] for i in order]


def _demo_split_pair(*, n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    for name, n in (("n_train", n_train), ("n_eval", n_eval)):
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"{name} must be an int >= 2, got {name}={n!r}")
    train = _demo_examples(
        n_train, np.random.default_rng([seed, 100]), set(), held_out_adjectives=False
    )
    evals = _demo_examples(
        n_eval,
        np.random.default_rng([seed, 101]),
        {r["sentence"] for r in train},
        held_out_adjectives=True,
    )
    return train, evals


def _finalize_demo(records: tuple[list[dict], list[dict]], spec: DataSpec) -> TaskData:
    train, evals = records
    fields = ["sentence", "label"]
    # The demo generates exactly the requested sizes, so no further subsampling.
    spec = DataSpec(task=DEMO_TASK, selection_fraction=spec.selection_fraction, seed=spec.seed,
                    metrics=spec.metrics)
    return _finalize(
        DEMO_TASK,
        _records_to_cols(train, fields),
        _records_to_cols(evals, fields),
        spec=spec,
        text_fields=("sentence",),
        label_field="label",
        num_labels=2,
        label_names=("negative", "positive"),
        default_metrics=("accuracy",),
        source="demo",
        where=("demo train", "demo eval"),
    )


def make_demo_task(
    *, n_train: int = 2000, n_eval: int = 500, seed: int = 0, selection_fraction: float = 0.1
) -> TaskData:
    """The built-in offline task: film-review sentiment with negation and contrast.

    Labels depend on word order, so a bag of words cannot solve it: "the plot was not good but
    the cast was bad" (negative) and "the plot was good but the cast was not bad" (positive)
    hold the same words, as do "the plot was dull but the cast was great" and "the cast was great
    but the plot was dull".  More than half of the sentences come in such twins; the rest are single
    clauses (adjective polarity flipped by "not"/"never", which no linear unigram model can
    represent), agreeing clauses, and opinions reported and then overridden.  Prefixes and
    suffixes without sentiment act as distractors.  Eval sentences also use 16 adjectives that
    train never shows ("riveting", "plodding", ...), so eval measures what the pretrained model
    knows rather than memorised templates; that knowledge is what pruning can damage.  Labels
    are balanced; sentences are unique and no eval sentence occurs in train.  The same ``seed``
    gives the same task.

    Args:
        n_train: training examples before the selection split is carved out.
        n_eval: eval examples.
        seed: generator seed (also seeds the selection split).
        selection_fraction: fraction of train held out as the selection split.
    """
    spec = DataSpec(task=DEMO_TASK, selection_fraction=selection_fraction, seed=seed)
    return _finalize_demo(_demo_split_pair(n_train=n_train, n_eval=n_eval, seed=seed), spec)


# --------------------------------------------------------------------------------------------
# Tokenization and batching
# --------------------------------------------------------------------------------------------


@dataclass
class TokenizedSplit:
    """One split as right-padded numpy arrays (picklable; no tokenizer inside).

    Attributes:
        input_ids: ``(n, L)`` int32 token ids, padded to the split's longest example.
        attention_mask: ``(n, L)`` int8, 1 on real tokens.
        token_type_ids: ``(n, L)`` int8 segment ids for sentence pairs, else ``None``.
        labels: ``(n,)`` int64 class ids or float32 regression targets.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def lengths(self) -> np.ndarray:
        """Real (unpadded) length of each example, ``(n,)``."""
        return self.attention_mask.sum(axis=1).astype(np.int64)

    def batches(
        self, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of model-ready batches, each cut to its own longest sequence.

        Trimming the padding per batch (dynamic padding) makes short-sentence tasks much
        faster on CPU than padding everything to ``max_seq_length``.

        Args:
            batch_size: examples per batch.
            shuffle: visit examples in a seeded random order (training) or in order (eval).
            seed: the order's seed; use a different one per epoch.
            drop_last: skip the final smaller batch.

        Yields:
            ``input_ids``, ``attention_mask``, (``token_type_ids``) as int64 ``(b, l)`` tensors
            and ``labels`` as int64 (classification) or float32 (regression) ``(b,)``.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got batch_size={batch_size!r}")
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        lengths = self.lengths()
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            width = max(int(lengths[idx].max()), 1)
            # Rows are right-padded, so the first `width` columns hold every real token.
            batch = {
                "input_ids": torch.from_numpy(self.input_ids[idx, :width].astype(np.int64)),
                "attention_mask": torch.from_numpy(
                    self.attention_mask[idx, :width].astype(np.int64)
                ),
            }
            if self.token_type_ids is not None:
                batch["token_type_ids"] = torch.from_numpy(
                    self.token_type_ids[idx, :width].astype(np.int64)
                )
            batch["labels"] = torch.from_numpy(self.labels[idx])
            yield batch

    def subset(self, idx) -> "TokenizedSplit":
        """The examples at ``idx`` (indices or a boolean mask), as a new split."""
        idx = np.asarray(idx)
        return TokenizedSplit(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[idx],
            labels=self.labels[idx],
        )


@dataclass
class TokenizedTask:
    """A task ready for training: what the driver puts in Ray's object store for every trial.

    Attributes:
        unlabeled_texts: one string per training example (a pair joined by a space), for
            masked-language-model stages that need raw text.
    """

    name: str
    train: TokenizedSplit
    selection: TokenizedSplit
    eval: TokenizedSplit
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    unlabeled_texts: list[str] = field(default_factory=list)
    max_seq_length: int = 128
    label_names: tuple[str, ...] | None = None

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def _tokenize_split(
    examples: list[dict], task: TaskData, tokenizer: Any, max_seq_length: int
) -> TokenizedSplit:
    label_dtype = np.float32 if task.is_regression else np.int64
    labels = np.asarray([ex[task.label_field] for ex in examples], dtype=label_dtype)
    pair = len(task.text_fields) == 2
    if not examples:
        empty = np.zeros((0, 0), dtype=np.int32)
        return TokenizedSplit(
            input_ids=empty,
            attention_mask=empty.astype(np.int8),
            token_type_ids=empty.astype(np.int8) if pair else None,
            labels=labels,
        )
    first = [ex[task.text_fields[0]] for ex in examples]
    second = [ex[task.text_fields[1]] for ex in examples] if pair else None
    # Unpadded batch call (fast tokenizers run it in Rust); we pad to the right ourselves so
    # per-batch trimming in `batches` is valid whatever the tokenizer's padding_side.
    enc = tokenizer(first, second, truncation=True, max_length=max_seq_length)
    ids = enc["input_ids"]
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), tokenizer.pad_token_id, dtype=np.int32)
    attention = np.zeros((len(ids), width), dtype=np.int8)
    types = enc.get("token_type_ids") if pair else None
    token_types = np.zeros((len(ids), width), dtype=np.int8) if types is not None else None
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
        if token_types is not None:
            token_types[i, : len(row)] = types[i]
    return TokenizedSplit(
        input_ids=input_ids, attention_mask=attention, token_type_ids=token_types, labels=labels
    )


def tokenize_task(task: TaskData, tokenizer: Any, *, max_seq_length: int = 128) -> TokenizedTask:
    """Tokenize every split of ``task`` once, for all trials of a search.

    Sentence pairs are encoded as pairs (``[CLS] a [SEP] b [SEP]`` for BERT) with
    ``longest_first`` truncation.  Single-sentence tasks carry no ``token_type_ids`` (they would
    all be 0, which is the model's default).

    Args:
        task: loaded data (:func:`load_task`, :func:`make_demo_task`).
        tokenizer: a Hugging Face tokenizer (fast recommended).
        max_seq_length: longest sequence kept, in tokens, special tokens included.

    Raises:
        ValueError: ``max_seq_length`` < 2, or a tokenizer without a pad token.
    """
    if not isinstance(max_seq_length, int) or max_seq_length < 2:
        raise ValueError(
            f"max_seq_length must be an int >= 2, got max_seq_length={max_seq_length!r}"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no pad token; set one, e.g. "
            "tokenizer.pad_token = tokenizer.eos_token"
        )
    splits = {
        name: _tokenize_split(getattr(task, name), task, tokenizer, max_seq_length)
        for name in ("train", "selection", "eval")
    }
    return TokenizedTask(
        name=task.name,
        **splits,
        num_labels=task.num_labels,
        is_regression=task.is_regression,
        metrics=tuple(task.metrics),
        unlabeled_texts=[" ".join(ex[f] for f in task.text_fields) for ex in task.train],
        max_seq_length=max_seq_length,
        label_names=task.label_names,
    )
