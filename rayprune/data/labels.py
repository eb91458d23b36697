"""From raw columns to a :class:`TaskData`: label encoding, seeded subsampling, the selection
split, and the check that the metrics fit the labels.

Every source ends in :func:`finalize_task`, so a GLUE TSV, a hub dataset, local files, the demo
and a user-registered source all subsample and split the same way.  The random streams are
fixed (``[seed, 0]`` train subset, ``[seed, 1]`` eval subset, ``[seed, 2]`` selection split):
changing them changes every benchmark.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from rayprune.data.spec import DataSpec, TaskData
from rayprune.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

__all__ = [
    "encode_labels",
    "seeded_subset",
    "split_selection",
    "finalize_task",
    "records_to_columns",
    "missing_column",
]

STREAM_TRAIN, STREAM_EVAL, STREAM_SELECTION = 0, 1, 2


def missing_column(column: str, available: Sequence[str], where: str) -> ValueError:
    """The error for a column a split lacks, listing the columns it has."""
    return ValueError(
        f"column {column!r} not found in {where}; available columns: {list(available)}"
    )


def records_to_columns(records: list[dict], fields: Sequence[str]) -> dict[str, list]:
    """``[{field: value}]`` -> ``{field: [values]}`` for the named fields."""
    return {f: [r[f] for r in records] for f in fields}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) or isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, (float, np.floating))


def encode_labels(
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


def seeded_subset(n: int, k: int | None, seed: int, stream: int) -> np.ndarray:
    """Indices of a seeded random subset of size ``min(k, n)`` (all of them when ``k`` is None).

    The first ``k`` entries of one permutation, sorted: subsets for growing ``k`` are nested.
    """
    if k is None or k >= n:
        return np.arange(n)
    perm = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(perm[:k])


def split_selection(
    train: list[dict], fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """Carve ``ceil(fraction * n)`` examples (at least one, if fraction > 0) out of train.

    Returns:
        (train without the selection examples, selection), both in their original order.
    """
    n = len(train)
    if fraction <= 0.0 or n == 0:
        return train, []
    n_sel = min(max(1, math.ceil(fraction * n)), n - 1)
    if n_sel <= 0:
        raise ValueError(
            f"selection_fraction={fraction} needs at least 2 training examples, got {n}"
        )
    perm = np.random.default_rng([seed, STREAM_SELECTION]).permutation(n)
    sel = np.sort(perm[:n_sel])
    keep = np.sort(perm[n_sel:])
    return [train[i] for i in keep], [train[i] for i in sel]


def finalize_task(
    spec: DataSpec,
    name: str,
    train_cols: dict[str, list],
    eval_cols: dict[str, list],
    *,
    text_fields: Sequence[str] | None = None,
    label_field: str | None = None,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    default_metrics: Sequence[str] | None = None,
    source: str = "",
    where: tuple[str, str] = ("train split", "eval split"),
) -> TaskData:
    """Columns -> :class:`TaskData`, the last step of every data source.

    Checks the columns, drops incomplete rows (with a warning), encodes the labels, subsamples
    (``spec.max_train_samples`` / ``max_eval_samples``, seeded by ``spec.seed``), carves the
    selection split out of train, and checks that the metrics fit the label type.

    Args:
        spec: the request; supplies subsampling, selection split, metrics, max_seq_length.
        name: task name (``sst2``, a file stem, a dataset name).
        train_cols: ``{column: values}`` of the training split.
        eval_cols: the same for the eval split.
        text_fields: text columns; default ``spec.text_fields``.
        label_field: label column; default ``spec.label_field``.
        num_labels: classes (1 = regression); default ``spec.num_labels`` (``None`` = infer).
        label_names: class names in id order, when the source knows them.
        default_metrics: metrics when the spec names none (a preset's).
        source: where the data came from, for logs.
        where: how to name the train and eval split in error messages.

    Raises:
        ValueError: a missing column, an empty split, labels that do not fit, or metrics that
            do not apply to the label type.
    """
    text_fields = tuple(text_fields or spec.text_fields or ())
    label_field = label_field or spec.label_field
    num_labels = spec.num_labels if num_labels is None else num_labels
    if len(text_fields) not in (1, 2):
        raise ValueError(f"{name}: text_fields must name 1 or 2 text columns, got {text_fields!r}")
    needed = [*text_fields, label_field]
    for cols, w in ((train_cols, where[0]), (eval_cols, where[1])):
        for c in needed:
            if c not in cols:
                raise missing_column(c, list(cols), w)

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
    train_labels, eval_labels, num_labels, names = encode_labels(
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

    tr_idx = seeded_subset(len(train_texts), spec.max_train_samples, spec.seed, STREAM_TRAIN)
    ev_idx = seeded_subset(len(eval_texts), spec.max_eval_samples, spec.seed, STREAM_EVAL)
    train = examples(train_texts, train_labels, tr_idx)
    train, selection = split_selection(train, spec.selection_fraction, spec.seed)
    return TaskData(
        name=name,
        train=train,
        selection=selection,
        eval=examples(eval_texts, eval_labels, ev_idx),
        text_fields=text_fields,
        label_field=label_field,
        num_labels=num_labels,
        is_regression=is_regression,
        metrics=metrics,
        label_names=None if names is None else tuple(names),
        source=source,
        max_seq_length=spec.max_seq_length,
    )
