"""GLUE metrics on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from rayprune.metrics import (
    METRICS,
    accuracy,
    compute_metrics,
    f1_binary,
    matthews_corrcoef,
    pearson,
    spearman,
)


def test_accuracy():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75


def test_f1_positive_class_is_one():
    # tp = 2 (idx 0, 1), fp = 1 (idx 2), fn = 1 (idx 3): F1 = 2*2 / (2*2 + 1 + 1) = 2/3.
    pred = [1, 1, 1, 0, 0]
    labels = [1, 1, 0, 1, 0]
    assert f1_binary(pred, labels) == pytest.approx(2 / 3)
    # Swapping the roles of the classes changes F1: it is not symmetric.
    # tp = 1 (idx 4), fp = 1 (idx 3), fn = 1 (idx 2): 2 / (2 + 2) = 0.5.
    assert f1_binary(1 - np.array(pred), 1 - np.array(labels)) == pytest.approx(0.5)


def test_f1_without_any_positive_is_zero():
    assert f1_binary([0, 0, 0], [0, 0, 0]) == 0.0


def test_mcc_binary_by_hand():
    # tp = 2, tn = 1, fp = 1, fn = 1:
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2) = 1/6.
    pred = [1, 1, 1, 0, 0]
    labels = [1, 1, 0, 1, 0]
    assert matthews_corrcoef(pred, labels) == pytest.approx(1 / 6)


def test_mcc_extremes_and_constant_prediction():
    labels = [0, 1, 1, 0, 1]
    assert matthews_corrcoef(labels, labels) == pytest.approx(1.0)
    assert matthews_corrcoef([1 - y for y in labels], labels) == pytest.approx(-1.0)
    # Predicting one class for everything (the CoLA failure mode) scores 0, not NaN.
    assert matthews_corrcoef([1] * 5, labels) == 0.0


def test_mcc_multiclass_by_hand():
    # pred [0,1,2,2], true [0,1,1,2]: c = 3, s = 4, p = (1,1,2), t = (1,2,1).
    # (3*4 - (1*1 + 1*2 + 2*1)) / sqrt((16 - 6) * (16 - 6)) = 7 / 10.
    assert matthews_corrcoef([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.7)


def test_pearson_by_hand():
    # x = [1,2,3], y = [1,3,2]: centred (-1,0,1), (-1,1,0); r = 1 / sqrt(2*2) = 0.5.
    assert pearson([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0


def test_spearman_uses_average_ranks_for_ties():
    # x = [1, 2, 2, 3] has ranks [1, 2.5, 2.5, 4]; y = [1, 2, 3, 4] ranks [1, 2, 3, 4].
    # Centred: (-1.5, 0, 0, 1.5) and (-1.5, -0.5, 0.5, 1.5): cov = 4.5, norms 4.5 and 5.
    expected = 4.5 / math.sqrt(4.5 * 5.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)
    # Rank correlation ignores the scale: any increasing map gives 1.
    x = np.array([0.3, -2.0, 5.0, 1.1, 0.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert pearson(x, np.exp(x)) < 0.99


def test_compute_metrics_classification_takes_argmax_of_logits():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])  # argmax 0, 1, 0, 0
    labels = np.array([0, 1, 1, 0])
    out = compute_metrics(["accuracy", "f1"], logits, labels, is_regression=False)
    assert list(out) == ["accuracy", "f1"]
    assert out["accuracy"] == 0.75
    # tp = 1, fp = 0, fn = 1: 2 / 3.
    assert out["f1"] == pytest.approx(2 / 3)
    # Class ids are accepted too.
    ids = compute_metrics(["accuracy"], np.array([0, 1, 0, 0]), labels, is_regression=False)
    assert ids["accuracy"] == 0.75


def test_compute_metrics_regression_squeezes_column():
    preds = np.array([[1.0], [2.0], [3.0]])
    labels = np.array([1.0, 3.0, 2.0])
    out = compute_metrics(["pearson", "spearman"], preds, labels, is_regression=True)
    assert out["pearson"] == pytest.approx(0.5)
    assert out["spearman"] == pytest.approx(0.5)


def test_compute_metrics_errors():
    with pytest.raises(ValueError, match="unknown metric.*accuracy"):
        compute_metrics(["acc"], np.zeros((2, 2)), np.zeros(2), is_regression=False)
    with pytest.raises(ValueError, match="same length"):
        compute_metrics(["accuracy"], np.zeros((3, 2)), np.zeros(2), is_regression=False)
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, 1\)"):
        compute_metrics(["pearson"], np.zeros((3, 2)), np.zeros(3), is_regression=True)


def test_metric_table_names():
    assert set(METRICS) == {"accuracy", "f1", "matthews_correlation", "pearson", "spearman"}


# ---------------------------------------------------------------- the chance floor
from rayprune.metrics import constant_floor, standard_error  # noqa: E402


def test_floor_of_accuracy_is_the_majority_class():
    # 3 of 5 labels are class 2, the majority in a 3-class task.
    assert constant_floor("accuracy", [2, 0, 2, 1, 2], is_regression=False) == pytest.approx(3 / 5)


def test_floor_of_f1_is_always_positive():
    # 68 % positives: always answering 1 gives tp = 17, fp = 8, fn = 0 -> 34 / 42 = 2p / (1 + p).
    labels = [1] * 17 + [0] * 8
    p = 17 / 25
    assert constant_floor("f1", labels, is_regression=False) == pytest.approx(2 * p / (1 + p))
    assert constant_floor("f1", labels, is_regression=False) == pytest.approx(34 / 42)
    # no positive at all: every constant scores 0
    assert constant_floor("f1", [0, 0, 0], is_regression=False) == 0.0


def test_floor_of_matthews_is_zero_even_when_unbalanced():
    assert constant_floor("matthews_correlation", [1, 1, 1, 0], is_regression=False) == 0.0


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_floor_of_correlations_is_zero(name):
    assert constant_floor(name, [0.5, 1.0, 4.2, 3.0], is_regression=True) == 0.0


def test_floor_refuses_unknown_metrics_and_empty_labels():
    with pytest.raises(ValueError, match="unknown metric"):
        constant_floor("bleu", [0, 1], is_regression=False)
    with pytest.raises(ValueError, match="zero examples"):
        constant_floor("accuracy", [], is_regression=False)


def test_standard_error_by_hand():
    # accuracy 0.5 on 100 examples: sqrt(0.25 / 100) = 0.05
    assert standard_error("accuracy", 0.5, 100) == pytest.approx(0.05)
    assert standard_error("f1", 0.8, 400) == pytest.approx(math.sqrt(0.16 / 400))
    # a correlation of 0 on 101 examples: 1 / sqrt(100)
    assert standard_error("matthews_correlation", 0.0, 101) == pytest.approx(0.1)
    assert standard_error("pearson", 0.6, 101) == pytest.approx(0.064)
    assert standard_error("accuracy", float("nan"), 100) == float("inf")
