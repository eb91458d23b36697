"""GLUE evaluation metrics as pure numpy functions.

Written by hand because none of rayprune's dependencies (torch, transformers, datasets, ray,
optuna, mlflow, pyarrow) ships the GLUE metrics for offline use: ``evaluate`` downloads its
metric scripts from the hub, and scikit-learn/scipy are not dependencies.  Each function follows
the definition that scikit-learn / scipy use for the GLUE leaderboard numbers:

* ``accuracy``: fraction of exact matches.
* ``f1``: binary F1 of the positive class 1 (MRPC, QQP).
* ``matthews_correlation``: multi-class Matthews correlation coefficient (CoLA).
* ``pearson`` / ``spearman``: correlation of predictions with gold scores (STS-B); Spearman uses
  average ranks for ties, like ``scipy.stats.spearmanr``.

Degenerate cases return 0.0 instead of NaN (scikit-learn does the same for F1 and MCC; scipy
returns NaN for the correlation of a constant vector).  A model that predicts one value for
every example has no association with the labels, and 0.0 keeps such a trial comparable in a
search instead of turning it into a failed trial.

Example::

    >>> compute_metrics(["accuracy", "f1"], np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]),
    ...                 is_regression=False)
    {'accuracy': 0.5, 'f1': 0.0}
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "f1_binary",
    "matthews_corrcoef",
    "pearson",
    "spearman",
    "METRICS",
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "compute_metrics",
    "constant_floor",
    "standard_error",
]


def _pair(pred, labels) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if pred.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must have the same length, got {pred.shape[0]} predictions "
            f"and {labels.shape[0]} labels"
        )
    if pred.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return pred, labels


def accuracy(pred, labels) -> float:
    """Fraction of predictions equal to the label."""
    pred, labels = _pair(pred, labels)
    return float(np.mean(pred == labels))


def f1_binary(pred, labels) -> float:
    """F1 score of the positive class 1: ``2 tp / (2 tp + fp + fn)``; 0.0 when tp+fp+fn is 0."""
    pred, labels = _pair(pred, labels)
    pred_pos, true_pos = pred == 1, labels == 1
    tp = float(np.sum(pred_pos & true_pos))
    fp = float(np.sum(pred_pos & ~true_pos))
    fn = float(np.sum(~pred_pos & true_pos))
    denom = 2.0 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(pred, labels) -> float:
    """Multi-class Matthews correlation coefficient (Gorodkin's R_K; binary MCC for 2 classes).

    ``(c * s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))`` with ``c`` the
    number of correct predictions, ``s`` the number of examples, ``p_k`` / ``t_k`` the number of
    times class ``k`` is predicted / true.  0.0 when either side predicts a single class.
    """
    pred, labels = _pair(pred, labels)
    classes, inverse = np.unique(np.concatenate([pred, labels]), return_inverse=True)
    p_idx, t_idx = inverse[: pred.size], inverse[pred.size :]
    p_counts = np.bincount(p_idx, minlength=classes.size).astype(np.float64)
    t_counts = np.bincount(t_idx, minlength=classes.size).astype(np.float64)
    s = float(pred.size)
    c = float(np.sum(p_idx == t_idx))
    cov_pt = c * s - float(p_counts @ t_counts)
    cov_pp = s * s - float(p_counts @ p_counts)
    cov_tt = s * s - float(t_counts @ t_counts)
    if cov_pp == 0.0 or cov_tt == 0.0:
        return 0.0
    return float(cov_pt / np.sqrt(cov_pp * cov_tt))


def pearson(pred, labels) -> float:
    """Pearson correlation coefficient; 0.0 when either vector is constant."""
    pred, labels = _pair(pred, labels)
    x = pred.astype(np.float64) - np.mean(pred, dtype=np.float64)
    y = labels.astype(np.float64) - np.mean(labels, dtype=np.float64)
    denom = np.sqrt(float(x @ x) * float(y @ y))
    if denom == 0.0:
        return 0.0
    # Rounding can push |r| a hair above 1 for (anti-)collinear inputs.
    return float(np.clip((x @ y) / denom, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # A new tie group starts wherever the sorted value changes.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], values.size]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(pred, labels) -> float:
    """Spearman rank correlation: Pearson of average ranks (ties share their mean rank)."""
    pred, labels = _pair(pred, labels)
    return pearson(_average_ranks(pred), _average_ranks(labels))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews_correlation": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews_correlation")
REGRESSION_METRICS = ("pearson", "spearman")
#: Proportion-like metrics of the other tasks (rayprune/tasks): SQuAD's exact match and F1, NER's
#: entity precision / recall / F1.  Their standard error is treated like accuracy's.
TASK_PROPORTION_METRICS = ("exact_match", "precision", "recall")


def compute_metrics(
    names: Sequence[str], logits_or_preds: np.ndarray, labels: np.ndarray, *, is_regression: bool
) -> dict[str, float]:
    """Evaluate ``names`` on one split's model outputs.

    Called by the trial loop after each evaluation pass over the whole eval split.

    Args:
        names: metric names, keys of ``METRICS``.
        logits_or_preds: classification: logits ``(n, num_labels)`` (argmax is taken) or class
            ids ``(n,)``; regression: predictions ``(n,)`` or ``(n, 1)``.
        labels: gold labels ``(n,)``.
        is_regression: whether the outputs are scores rather than class logits.

    Returns:
        ``{name: value}`` in the order of ``names``.

    Raises:
        ValueError: unknown metric name, or shapes that do not match.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; allowed: {sorted(METRICS)}")
    out = np.asarray(logits_or_preds)
    labels = np.asarray(labels).reshape(-1)
    if is_regression:
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]  # (n, 1) -> (n,)
        if out.ndim != 1:
            raise ValueError(
                f"regression predictions must have shape (n,) or (n, 1), got {out.shape}"
            )
        preds = out.astype(np.float64)
    else:
        if out.ndim == 2:
            preds = out.argmax(axis=-1)  # (n, num_labels) -> (n,)
        elif out.ndim == 1:
            preds = out
        else:
            raise ValueError(
                f"classification outputs must be logits (n, num_labels) or class ids (n,), "
                f"got shape {out.shape}"
            )
    return {name: METRICS[name](preds, labels) for name in names}


def constant_floor(name: str, labels, *, is_regression: bool) -> float:
    """The best score a constant predictor reaches on ``labels``: the chance floor of a search.

    The driver computes it once from the eval split's labels; a trial that does not clearly beat
    it learned nothing usable (see ``rayprune.search.results``).  Classification: the best of
    "always predict class c" over the classes present, which is the majority-class accuracy, the
    F1 of always answering positive (``2p / (1 + p)`` with p the positive fraction), and 0 for
    Matthews correlation.  Regression: a constant has no correlation with the labels, 0 for
    Pearson and Spearman (the degenerate-case convention above).

    Raises:
        ValueError: unknown metric name, or no labels.
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; allowed: {sorted(METRICS)}")
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("cannot compute a floor on zero examples")
    if is_regression:
        return METRICS[name](np.full(labels.size, float(np.mean(labels))), labels)
    return max(METRICS[name](np.full(labels.size, c), labels) for c in np.unique(labels))


def standard_error(name: str, value: float, n: int) -> float:
    """Approximate standard error of a metric ``value`` measured on ``n`` examples.

    Used to decide whether a trial is *clearly* above the floor.  Accuracy: the binomial
    ``sqrt(v (1 - v) / n)``; F1 is treated the same way (a proportion; an approximation).
    Correlations (Matthews, Pearson, Spearman): ``(1 - v^2) / sqrt(n - 1)``, which is
    ``1 / sqrt(n - 1)`` at 0, the spread of a correlation under no association.
    """
    if name not in METRICS and name not in TASK_PROPORTION_METRICS:
        raise ValueError(f"unknown metric {name!r}; allowed: {sorted(METRICS) + list(TASK_PROPORTION_METRICS)}")
    if n < 2 or not np.isfinite(value):
        return float("inf")
    if name in ("accuracy", "f1") + TASK_PROPORTION_METRICS:
        v = min(max(float(value), 0.0), 1.0)
        return float(np.sqrt(v * (1.0 - v) / n))
    return float((1.0 - min(float(value) ** 2, 1.0)) / np.sqrt(n - 1))
