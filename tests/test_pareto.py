"""Pareto maths on hand-made fronts where the answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rayprune.pareto import (
    ParetoFront,
    crowding_distance,
    dominates,
    find_pareto_front,
    hypervolume_2d,
    non_dominated_sort,
    normalize,
    pareto_front,
    sort_by_rank_and_crowding,
)

NAN = float("nan")


def _fronts(points, modes):
    return [f.tolist() for f in non_dominated_sort(points, modes)]


# ---------------------------------------------------------------------------- normalize/dominates
def test_normalize_negates_only_max_columns_and_copies():
    points = np.array([[0.9, 0.5, 3.0]])
    out = normalize(points, ["max", "min", "max"])
    np.testing.assert_array_equal(out, [[-0.9, 0.5, -3.0]])
    assert points[0, 0] == 0.9  # input untouched


@pytest.mark.parametrize(
    "points, modes, match",
    [
        ([[1.0, 2.0]], ["min"], "one mode per objective"),
        ([[1.0, 2.0]], ["min", "maximize"], "maximize"),
        ([1.0, 2.0], ["min", "min"], "2-D"),
    ],
)
def test_normalize_rejects_bad_input(points, modes, match):
    with pytest.raises(ValueError, match=match):
        normalize(points, modes)


def test_normalize_rejects_a_bare_string_of_modes():
    with pytest.raises(TypeError, match="'max'"):
        normalize([[1.0]], "max")


@pytest.mark.parametrize(
    "a, b, modes, expected",
    [
        ([1, 1], [2, 2], None, True),
        ([1, 2], [2, 2], None, True),  # equal in one, better in the other
        ([2, 2], [2, 2], None, False),  # equal rows never dominate
        ([1, 3], [2, 2], None, False),  # trade-off
        ([2, 2], [1, 1], None, False),
        ([0.9, 0.5], [0.8, 0.5], ["max", "max"], True),
        ([0.9, 0.5], [0.8, 0.5], ["min", "max"], False),
        ([0.8, 0.5], [0.9, 0.5], ["min", "max"], True),
        ([NAN, 0.0], [1.0, 1.0], None, False),
        ([1.0, 1.0], [NAN, 2.0], None, False),
    ],
)
def test_dominates(a, b, modes, expected):
    assert dominates(a, b, modes) is expected


def test_dominates_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="equal length"):
        dominates([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------- non-dominated sort
def test_sort_staircase_with_dominated_points_minimised():
    # Front 0 is the staircase (1,3),(2,2),(3,1); (2,3) and (3,3) lie behind it; (4,4) behind all.
    points = [[1, 3], [2, 2], [3, 1], [2, 3], [3, 3], [4, 4]]
    assert _fronts(points, ["min", "min"]) == [[0, 1, 2], [3], [4], [5]]


def test_sort_mixed_directions_accuracy_max_latency_min():
    # (accuracy, latency): row 2 is faster and more accurate than row 0; row 1 is the slowest
    # but most accurate, so rows 1 and 2 form the front and row 0 is dominated by row 2.
    points = [[0.80, 10.0], [0.95, 30.0], [0.85, 8.0]]
    assert _fronts(points, ["max", "min"]) == [[1, 2], [0]]
    # The same numbers read as both-minimised give another answer, so modes matter.
    assert _fronts(points, ["min", "min"]) == [[0, 2], [1]]


def test_sort_duplicates_share_a_front():
    points = [[1, 1], [1, 1], [2, 2], [2, 2]]
    assert _fronts(points, ["min", "min"]) == [[0, 1], [2, 3]]


def test_sort_ties_in_one_objective():
    # Same accuracy, different sparsity: the sparser one dominates.
    points = [[0.9, 0.5], [0.9, 0.7], [0.8, 0.7]]
    assert _fronts(points, ["max", "max"]) == [[1], [0, 2]]


def test_sort_nan_rows_go_last_in_one_front():
    points = [[NAN, 0.9], [0.1, 0.1], [0.5, NAN], [0.2, 0.2]]
    assert _fronts(points, ["max", "max"]) == [[3], [1], [0, 2]]


def test_sort_single_point_and_empty():
    assert _fronts([[3.0, 4.0]], ["min", "max"]) == [[0]]
    assert non_dominated_sort(np.zeros((0, 2)), ["min", "min"]) == []


def test_sort_single_objective_is_a_plain_ordering():
    assert _fronts([[3.0], [1.0], [2.0], [1.0]], ["min"]) == [[1, 3], [2], [0]]
    assert _fronts([[3.0], [1.0], [2.0]], ["max"]) == [[0], [2], [1]]


def test_sort_agrees_with_optunas_ranks_on_random_points():
    multi = pytest.importorskip("optuna.study._multi_objective")
    if not hasattr(multi, "_fast_non_domination_rank"):
        pytest.skip("optuna no longer has _fast_non_domination_rank to compare with")
    rng = np.random.default_rng(0)
    # Rounded so that duplicates and ties occur.
    points = np.round(rng.random((60, 3)), 1)
    ours = np.empty(60, dtype=int)
    for rank, front in enumerate(non_dominated_sort(points, ["min"] * 3)):
        ours[front] = rank
    np.testing.assert_array_equal(ours, multi._fast_non_domination_rank(points))


# ---------------------------------------------------------------------------- pareto_front
def test_pareto_front_excludes_dominated_and_nan_rows():
    points = [[0.9, 0.5], [0.8, 0.4], [0.7, 0.9], [NAN, 0.99], [0.7, 0.9]]
    np.testing.assert_array_equal(pareto_front(points, ["max", "max"]), [0, 2, 4])


def test_pareto_front_all_nan_is_empty():
    assert pareto_front([[NAN, 1.0]], ["min", "min"]).tolist() == []


def test_pareto_front_one_point():
    assert pareto_front([[0.5, 0.5]], ["max", "min"]).tolist() == [0]


# ---------------------------------------------------------------------------- crowding
def test_crowding_distance_by_hand():
    # Four points on x + y = 4, in scrambled order.
    points = np.array([[3.0, 1.0], [0.0, 4.0], [1.0, 3.0], [4.0, 0.0]])
    # First three: x spans 0..3, y spans 1..4.  Interior row 2 (1, 3): x-neighbours 0 and 3
    # give 3/3, y-neighbours 1 and 4 give 3/3 -> 2.0.  Rows 0 and 1 are ends: inf.
    d = crowding_distance(points[:3])
    assert np.isinf(d[0]) and np.isinf(d[1])
    assert d[2] == pytest.approx(2.0)
    # All four: ranges 4.  Row 0 (3,1): x-neighbours 1 and 4 -> 3/4; y-neighbours 0 and 3 -> 3/4.
    # Row 2 (1,3): x-neighbours 0 and 3 -> 3/4; y-neighbours 1 and 4 -> 3/4.
    d = crowding_distance(points)
    np.testing.assert_allclose(d, [1.5, np.inf, 1.5, np.inf])


def test_crowding_distance_small_sets_are_all_inf():
    assert np.isinf(crowding_distance([[1.0, 2.0], [2.0, 1.0]])).all()
    assert np.isinf(crowding_distance([[1.0, 2.0]])).all()


def test_crowding_distance_zero_range_objective_adds_nothing():
    # Objective 1 is constant; only objective 0 spreads the points.
    d = crowding_distance([[0.0, 5.0], [1.0, 5.0], [4.0, 5.0]])
    # Row 1: (4 - 0) / 4 = 1.0 from objective 0; objective 1 has zero range.  But the constant
    # objective still marks its first and last (stable order: rows 0 and 2) as boundaries.
    assert d[1] == pytest.approx(1.0)
    assert np.isinf(d[0]) and np.isinf(d[2])


def test_crowding_distance_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        crowding_distance([[NAN, 1.0], [0.0, 1.0], [1.0, 0.0]])


def test_sort_by_rank_and_crowding_orders_fronts_then_spread():
    points = np.array(
        [
            [2.0, 2.0],  # 0: dominated by row 3 -> front 1
            [0.0, 4.0],  # 1: front 0, boundary
            [4.0, 0.0],  # 2: front 0, boundary
            [1.0, 1.5],  # 3: front 0, interior, wide gaps
            [1.1, 1.4],  # 4: front 0, interior, close to row 3
            [NAN, 0.0],  # 5: NaN -> last
        ]
    )
    order = sort_by_rank_and_crowding(points, ["min", "min"])
    # Row 3: x-neighbours 0 and 1.1 -> 1.1/4; y-neighbours 1.4 and 4 -> 2.6/4; total 0.925.
    # Row 4: x-neighbours 1.0 and 4 -> 3/4; y-neighbours 0 and 1.5 -> 1.5/4; total 1.125.
    assert order.tolist() == [1, 2, 4, 3, 0, 5]


def test_sort_by_rank_and_crowding_ties_keep_input_order():
    assert sort_by_rank_and_crowding([[1.0, 0.0], [0.0, 1.0]], ["min", "min"]).tolist() == [0, 1]
    assert sort_by_rank_and_crowding([[0.0, 1.0], [1.0, 0.0]], ["min", "min"]).tolist() == [0, 1]
    assert sort_by_rank_and_crowding(np.zeros((0, 2)), ["min", "min"]).tolist() == []


# ---------------------------------------------------------------------------- hypervolume
def test_hypervolume_of_a_staircase_by_hand():
    # Boxes [1,4]x[3,4], [2,4]x[2,4], [3,4]x[1,4]: union = 3 + 2 + 1 unit slabs = 6.
    points = [[1, 3], [2, 2], [3, 1]]
    assert hypervolume_2d(points, ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_ignores_dominated_duplicate_nan_and_outside_points():
    points = [
        [1, 3],
        [2, 2],
        [3, 1],
        [2, 3],  # dominated
        [2, 2],  # duplicate
        [NAN, 0],  # NaN
        [0, 5],  # beyond the reference in objective 1
        [4, 0],  # on the reference in objective 0: zero width
    ]
    assert hypervolume_2d(points, ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_maximised_objectives():
    # (accuracy, sparsity) both maximised, reference (0, 0):
    # (0.9, 0.5) and (0.6, 0.8): 0.9*0.5 + 0.6*(0.8-0.5) = 0.45 + 0.18 = 0.63.
    points = [[0.9, 0.5], [0.6, 0.8], [0.5, 0.5]]
    assert hypervolume_2d(points, ["max", "max"], [0.0, 0.0]) == pytest.approx(0.63)


def test_hypervolume_mixed_directions():
    # accuracy max, latency min, reference (accuracy 0.5, latency 10 ms):
    # (0.9, 6) -> 0.4*4 = 1.6 box; (0.7, 2) adds (0.7-0.5)*(6-2) = 0.8; total 2.4.
    points = [[0.9, 6.0], [0.7, 2.0]]
    assert hypervolume_2d(points, ["max", "min"], [0.5, 10.0]) == pytest.approx(2.4)


def test_hypervolume_one_point_and_none():
    assert hypervolume_2d([[1.0, 2.0]], ["min", "min"], [3.0, 3.0]) == pytest.approx(2.0)
    assert hypervolume_2d([[5.0, 5.0]], ["min", "min"], [3.0, 3.0]) == 0.0
    assert hypervolume_2d(np.zeros((0, 2)), ["min", "min"], [3.0, 3.0]) == 0.0


def test_hypervolume_agrees_with_optuna_on_random_points():
    wfg = pytest.importorskip("optuna._hypervolume.wfg")
    rng = np.random.default_rng(1)
    points = rng.random((40, 2))
    expected = wfg.compute_hypervolume(points, np.array([1.1, 1.2]))
    assert hypervolume_2d(points, ["min", "min"], [1.1, 1.2]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "points, reference, match",
    [
        ([[1.0, 2.0, 3.0]], [4.0, 4.0], "k=2"),
        ([[1.0, 2.0]], [4.0], "reference"),
        ([[1.0, 2.0]], [4.0, NAN], "reference"),
    ],
)
def test_hypervolume_validation(points, reference, match):
    modes = ["min"] * len(points[0])
    with pytest.raises(ValueError, match=match):
        hypervolume_2d(points, modes, reference)


# ---------------------------------------------------------------------------- find_pareto_front
def test_find_pareto_front_bundles_front_ranks_and_hypervolume():
    points = np.array([[0.9, 0.5], [0.8, 0.4], [0.6, 0.8], [NAN, 0.9]])
    front = find_pareto_front(points, ["max", "max"], reference=[0.0, 0.0])
    assert isinstance(front, ParetoFront)
    assert front.indices.tolist() == [0, 2]
    np.testing.assert_array_equal(front.points, points[[0, 2]])
    assert front.ranks.tolist() == [0, 1, 0, 2]
    assert front.hypervolume == pytest.approx(0.63)
    assert find_pareto_front(points, ["max", "max"]).hypervolume is None


def test_find_pareto_front_reference_needs_two_objectives():
    with pytest.raises(ValueError, match="k=2"):
        find_pareto_front([[1.0, 2.0, 3.0]], ["min"] * 3, reference=[1.0, 1.0, 1.0])
