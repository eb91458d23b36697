"""What to load (:class:`DataSpec`) and what a source returns (:class:`TaskData`).

Both are plain dataclasses; this module imports neither torch nor ``datasets``, so the YAML
parser can build and validate a ``DataSpec`` (and ``--dry-run`` can reject a bad one) without
loading either.  ``DataSpec`` checks every field in its constructor: a value that passes is one
that :func:`rayprune.data.load_task` and the tokenizer accept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rayprune.data.presets import DEMO_TASK, GLUE_TASKS, TASK_PRESETS, allowed_tasks, normalize_task
from rayprune.metrics import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS

__all__ = ["DataSpec", "TaskData", "FILE_FORMATS", "DEMO_MAX_EXAMPLES"]

# File extension -> `datasets` packaged builder.
FILE_FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"
}
# The demo generator writes every example it is asked for; past this it would run for minutes.
DEMO_MAX_EXAMPLES = 100_000


def _int_field(default: int | None, lo: int, hi: int | None = None, note: str = "") -> Any:
    """A dataclass field whose inclusive bounds live in its metadata (read by the validation
    below and by anything that describes the spec, such as a JSON Schema)."""
    return field(default=default, metadata={"minimum": lo, "maximum": hi, "note": note})


@dataclass(kw_only=True)
class DataSpec:
    """Which data a search fine-tunes and evaluates on.

    One source: ``task`` (a GLUE preset or ``"demo"``), ``dataset`` (a hub name), or
    ``train_files`` + ``eval_files`` (optionally with a GLUE ``task`` for its columns/metrics);
    or ``source``, the name of a registered data source (:func:`rayprune.data.register_source`).

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
            for growing sizes are nested), e.g. for CPU runs.  For ``demo``: how many to
            generate (default 2000).
        max_eval_samples: the same for the eval split (``demo`` default 500).
        max_seq_length: longest tokenized sequence, special tokens included; the default of
            :func:`rayprune.data.tokenize_task`.
        selection_fraction: fraction of the (subsampled) train split held out as the selection
            split for checkpoint/teacher selection; never taken from eval.
        seed: seed of the subsampling and the selection split.
        source: name of the data source to load with; ``None`` picks one by the rule in
            :func:`rayprune.data.choose_source`.
        task_type: what the head does (:mod:`rayprune.tasks`): ``classification`` (default),
            ``extractive_qa`` or ``token_classification``.
        task_options: the task type's own options (QA: ``doc_stride``, ``max_answer_length``,
            ``n_best_size``; NER: ``tag_scheme``...), checked by the task.
        eval_fraction: carve the eval split out of ``train_files`` (share of the groups, in
            (0, 1)) instead of reading ``eval_files`` (:mod:`rayprune.data.splits`).
        group_field: with ``eval_fraction``: rows sharing this column's value stay on one side
            (SQuAD: ``title``, so no article is in both); unset: each row is its own group.
    """

    task: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_files: list[str] | None = None
    eval_files: list[str] | None = None
    text_fields: list[str] | None = None
    label_field: str = "label"
    num_labels: int | None = _int_field(None, 1, 100_000, "1 = regression")
    metrics: list[str] | None = None
    train_split: str = "train"
    eval_split: str | None = None
    max_train_samples: int | None = _int_field(None, 1, note="or None for all examples")
    max_eval_samples: int | None = _int_field(None, 1, note="or None for all examples")
    max_seq_length: int = _int_field(128, 8, 8192)
    selection_fraction: float = 0.1
    seed: int = _int_field(0, 0, 2**63 - 1)
    source: str | None = None
    task_type: str | None = None
    task_options: dict | None = None
    eval_fraction: float | None = None
    group_field: str | None = None

    def __post_init__(self) -> None:
        self._check_fields()
        self._check_combination()

    def _check_fields(self) -> None:
        """Each field on its own: type, emptiness, bounds; normalises task, lists and metrics."""
        for name in ("task", "dataset", "dataset_config", "eval_split", "source", "task_type", "group_field"):
            _check_text(self, name, optional=True)
        self._check_task_type()
        for name in ("label_field", "train_split"):
            _check_text(self, name, optional=False)
        if self.task is not None:
            key = normalize_task(self.task)
            if key not in GLUE_TASKS and key != DEMO_TASK and key not in TASK_PRESETS:
                raise ValueError(f"unknown task {self.task!r}; allowed: {allowed_tasks() + sorted(TASK_PRESETS)}")
            self.task = key
            if key in TASK_PRESETS:
                preset_type = TASK_PRESETS[key]
                if self.task_type not in (None, preset_type):
                    raise ValueError(f"task={key!r} is a {preset_type} preset, but task_type={self.task_type!r}")
                self.task_type = preset_type
        if self.task_type is None:
            self.task_type = "classification"
        classification = self.task_type == "classification"
        # CoNLL column files have any extension (.train, .conll, .txt); classification and the
        # QA reader go through `datasets`' csv/json/parquet builders.
        self.train_files = _file_list(self.train_files, "train_files", any_suffix=self.task_type == "token_classification")
        self.eval_files = _file_list(self.eval_files, "eval_files", any_suffix=self.task_type == "token_classification")
        if self.text_fields is not None:
            self.text_fields = _name_list(self.text_fields, "text_fields")
            if len(self.text_fields) not in (1, 2) or not all(self.text_fields):
                raise ValueError(
                    "text_fields must name 1 or 2 text columns, got "
                    f"text_fields={self.text_fields!r}"
                )
        if self.metrics is not None:
            self.metrics = _name_list(self.metrics, "metrics")
            allowed = sorted(METRICS) if classification else list(self._task_class().allowed_metrics)
            unknown = [m for m in self.metrics if m not in allowed]
            if not self.metrics or unknown:
                raise ValueError(
                    f"metrics must be a non-empty list from {allowed} (task_type {self.task_type!r}), "
                    f"got {self.metrics!r}"
                )
        if self.eval_fraction is not None:
            value = self.eval_fraction
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ValueError(f"eval_fraction must be a number in (0, 1) (the share of groups carved out of "
                                 f"train_files for eval), got eval_fraction={value!r}")
        for f in fields(self):
            if "minimum" in f.metadata:
                _check_int(f.name, getattr(self, f.name), optional=f.default is None, **f.metadata)
        fraction = self.selection_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(
                "selection_fraction must be a number in [0, 1), got "
                f"selection_fraction={fraction!r}"
            )
        if not 0.0 <= fraction < 1.0:  # also false for nan
            raise ValueError(
                f"selection_fraction must be in [0, 1), got selection_fraction={fraction!r}"
            )

    def _task_class(self):
        from rayprune.tasks import get_task

        return get_task(self.task_type)

    def _check_task_type(self) -> None:
        """``task_type`` names a registered task; ``task_options`` are that task's (checked by it)."""
        if self.task_type is not None:
            from rayprune.tasks import available_tasks

            if self.task_type not in available_tasks():
                raise ValueError(f"unknown task_type {self.task_type!r}; allowed: {available_tasks()}")
        if self.task_options is not None and not isinstance(self.task_options, dict):
            raise TypeError(f"task_options must be a mapping, got task_options={self.task_options!r}")

    def _check_combination(self) -> None:
        """Fields that must or must not go together."""
        self.task_options = self._task_class().check_options(self.task_options)
        if self.group_field is not None and self.eval_fraction is None:
            raise ValueError("group_field only applies with eval_fraction (carving eval out of train_files)")
        if self.eval_fraction is not None:
            if self.train_files is None or self.eval_files is not None:
                raise ValueError("eval_fraction carves the eval split out of train_files: set train_files "
                                 "and leave eval_files out")
        if self.task_type != "classification":
            self._check_other_task()
            return
        if (
            self.source is None
            and self.task is None
            and self.dataset is None
            and self.train_files is None
        ):
            raise ValueError(
                "no data source: set task (a GLUE preset or 'demo'), dataset (a hub name) or "
                "train_files + eval_files"
            )
        if self.source is not None:
            from rayprune.data.sources import available_sources

            if self.source not in available_sources():
                raise ValueError(
                    f"unknown source {self.source!r}; available: {available_sources()}"
                )
        if self.dataset is not None and (self.task is not None or self.train_files is not None):
            raise ValueError("dataset cannot be combined with task or train_files; pick one source")
        if self.dataset_config is not None and self.dataset is None:
            raise ValueError("dataset_config needs dataset to be set")
        if (self.train_files is None) != (self.eval_files is None) and self.eval_fraction is None:
            raise ValueError(
                "train_files and eval_files go together: pass both, or set eval_fraction to carve "
                "the eval split out of train_files"
            )
        if self.task == DEMO_TASK:
            self._check_demo()
        if self.text_fields is not None:
            if self.task in GLUE_TASKS and self.train_files is None:
                raise ValueError(
                    f"text_fields is set by the GLUE preset {self.task!r}; pass it only with "
                    "train_files or a hub dataset"
                )
            if self.label_field in self.text_fields:
                raise ValueError(
                    f"label_field={self.label_field!r} is also in "
                    f"text_fields={self.text_fields!r}; the label needs a column of its own"
                )
        elif self.task is None:
            raise ValueError(
                "text_fields is required without a GLUE task: name the 1 or 2 text columns"
            )
        if self.num_labels is not None and self.task in GLUE_TASKS:
            if self.num_labels != GLUE_TASKS[self.task].num_labels:
                raise ValueError(
                    f"num_labels={self.num_labels} contradicts the GLUE preset {self.task!r} "
                    f"(num_labels={GLUE_TASKS[self.task].num_labels})"
                )
        if self.metrics is not None:
            self._check_metrics_fit()
        if self.eval_split is not None and self.eval_split == self.train_split:
            raise ValueError(
                f"eval_split must differ from train_split, both are {self.eval_split!r}"
            )

    def _check_other_task(self) -> None:
        """Combinations for tasks other than classification: a source, no GLUE columns."""
        if self.task in GLUE_TASKS or self.task == DEMO_TASK:
            raise ValueError(f"task={self.task!r} is a classification task, but task_type={self.task_type!r}")
        if self.source is None and self.dataset is None and self.train_files is None and self.task is None:
            raise ValueError(f"task_type {self.task_type!r}: no data source: set dataset (a hub name) or "
                             f"train_files (+ eval_files or eval_fraction)")
        if self.dataset is not None and self.train_files is not None:
            raise ValueError("dataset cannot be combined with train_files; pick one source")
        if (self.train_files is None) != (self.eval_files is None) and self.eval_fraction is None:
            raise ValueError("train_files needs eval_files, or eval_fraction to carve the eval split out of them")
        if self.eval_split is not None and self.eval_split == self.train_split:
            raise ValueError(f"eval_split must differ from train_split, both are {self.eval_split!r}")

    def _check_metrics_fit(self) -> None:
        """Metrics against the label type, where the spec already knows it (a preset, the
        demo, or ``num_labels``); otherwise the loader checks once it has seen the labels."""
        if self.task == DEMO_TASK:
            num_labels = 2
        elif self.task in GLUE_TASKS:
            num_labels = GLUE_TASKS[self.task].num_labels
        else:
            num_labels = self.num_labels
        if num_labels is None:
            return
        kind, allowed = (
            ("regression", REGRESSION_METRICS) if num_labels == 1
            else ("classification", CLASSIFICATION_METRICS)
        )
        bad = [m for m in self.metrics if m not in allowed]
        if bad:
            raise ValueError(
                f"metrics {bad} do not apply to {kind} (num_labels={num_labels}); "
                f"allowed: {list(allowed)}"
            )
        if "f1" in self.metrics and num_labels != 2:
            raise ValueError(
                f"metrics: 'f1' is binary (positive class 1) but num_labels={num_labels}"
            )

    def _check_demo(self) -> None:
        if self.train_files is not None or self.text_fields:
            raise ValueError("task='demo' is generated; it takes no train_files or text_fields")
        if self.num_labels not in (None, 2):
            raise ValueError(f"task='demo' has 2 labels, got num_labels={self.num_labels}")
        for name in ("max_train_samples", "max_eval_samples"):
            n = getattr(self, name)
            if n is not None and not 2 <= n <= DEMO_MAX_EXAMPLES:
                raise ValueError(
                    f"{name} of task='demo' (examples to generate) must be in "
                    f"[2, {DEMO_MAX_EXAMPLES}], got {name}={n}"
                )


@dataclass
class TaskData:
    """Loaded, label-encoded examples; what every data source returns and what
    :func:`rayprune.data.tokenize_task` consumes.

    Each example is a dict ``{text_field: str, ..., label_field: int | float}``.  Labels are
    class ids in ``[0, num_labels)``, or floats for regression (``num_labels == 1``).

    Attributes:
        source: where the examples came from, for logs (``local:glue/sst2``, ``hub:imdb[...]``).
        max_seq_length: the spec's ``max_seq_length``, the tokenizer's default.
        task: the configured task (:mod:`rayprune.tasks`); built from the fields above for
            classification when a source passes none.
        notes: what loading repaired, dropped or decided (split rule, fixed offsets), one line
            each, for the CLI's start lines and the parent run.
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
    max_seq_length: int = 128
    task: Any = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.task is None:
            from rayprune.tasks.classification import ClassificationTask

            self.task = ClassificationTask(metrics=tuple(self.metrics), label_names=self.label_names,
                                           classes=self.num_labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


# ------------------------------------------------------------------------------ field checks


def _check_text(spec: DataSpec, name: str, *, optional: bool) -> None:
    value = getattr(spec, name)
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {name}={value!r}")
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {name}={value!r}")


def _check_int(
    name: str, value: Any, *, optional: bool, minimum: int, maximum: int | None, note: str
) -> None:
    """Integers only (no bool, no float such as 3.0 or nan), within ``[minimum, maximum]``;
    ``None`` passes for the fields whose default is ``None``."""
    if value is None and optional:
        return
    allowed = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
    if note:
        allowed += f" ({note})"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int {allowed}, got {name}={value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {name}={value}")


def _name_list(value: Any, name: str) -> list[str]:
    """A string or a list of strings -> a list of strings."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of strings, got {name}={value!r}")
    return list(value)


def _file_list(value: Any, name: str, *, any_suffix: bool = False) -> list[str] | None:
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
        if "\0" in f:
            raise ValueError(f"{name}: a file path contains a NUL byte: {f!r}")
        if not any_suffix and Path(f).suffix.lower() not in FILE_FORMATS:
            raise ValueError(
                f"{name}: unsupported file type {f!r}; allowed extensions: {sorted(FILE_FORMATS)}"
            )
    return files
