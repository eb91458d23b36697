"""GLUE task presets: the columns, labels, metrics and file layout of each task.

The table is plain data (no torch, no ``datasets``), read by :class:`~rayprune.data.spec.DataSpec`
to validate a task name and by the hub and GLUE-directory sources to find columns and files.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayprune.metrics import METRICS

__all__ = [
    "TaskPreset",
    "GLUE_TASKS",
    "GLUE_SPLIT_FILES",
    "DEMO_TASK",
    "allowed_tasks",
    "TASK_PRESETS",
    "normalize_task",
    "get_preset",
]

# The generated offline task (rayprune.data.demo); a task name, not a GLUE preset.
DEMO_TASK = "demo"


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


#: Presets of other task types: ``data.task`` name -> task type.  ``squad`` loads SQuAD v1.1 (the
#: hub's ``rajpurkar/squad`` online, or ``train_files``/``eval_files`` in its JSON format).
TASK_PRESETS: dict[str, str] = {"squad": "extractive_qa"}


def allowed_tasks() -> list[str]:
    """Every valid ``DataSpec.task``: the GLUE presets, then ``demo``."""
    return sorted(GLUE_TASKS) + [DEMO_TASK]


def normalize_task(task: str) -> str:
    """``SST-2`` / ``STS-B`` / ``CoLA`` -> preset keys, so official directory names work too."""
    return task.strip().lower().replace("-", "").replace("_", "")


def get_preset(task: str) -> TaskPreset:
    """The preset of a GLUE task name in any spelling ``normalize_task`` accepts.

    Raises:
        ValueError: not a GLUE task; the message lists the presets.
    """
    key = normalize_task(task)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; allowed: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]
