"""Pure Pareto maths on ``(n, k)`` arrays: dominance, non-dominated sort, crowding, hypervolume.

Rows are candidates (trials), columns are objectives.  Every function that compares rows takes
``modes``, one ``"min"`` or ``"max"`` per column, and works internally on the *normalised* array
(:func:`normalize`: ``max`` columns negated) so that lower is better everywhere.

Missing values: a row with a NaN in any column (a trial that never reported an objective, or
reported NaN) is worse than every row without one.  :func:`non_dominated_sort` puts all such rows
in one last front, :func:`pareto_front` never returns them and :func:`hypervolume_2d` ignores
them.  ``inf`` is an ordinary (very bad or very good) value.

Used by ``rayprune.search.schedulers`` (rung decisions of :class:`MultiObjectiveASHA`) and by the search
driver (the final front).  Nothing here logs or plots; callers do.  numpy, Optuna and Ray offer no
public non-dominated sort or hypervolume for plain arrays (Optuna's live in private modules),
hence this module.

Example::

    >>> import numpy as np
    >>> acc_sparsity = np.array([[0.90, 0.5], [0.80, 0.4], [0.70, 0.9]])
    >>> pareto_front(acc_sparsity, ["max", "max"]).tolist()
    [0, 2]
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "MODES",
    "ParetoFront",
    "normalize",
    "dominates",
    "non_dominated_sort",
    "pareto_front",
    "crowding_distance",
    "sort_by_rank_and_crowding",
    "hypervolume_2d",
    "find_pareto_front",
]

MODES = ("min", "max")


class ParetoFront(NamedTuple):
    """The first non-dominated front of a set of candidates.

    Attributes:
        indices: (m,) row indices of the input that are on the front, ascending.
        points: (m, k) their objective values, in the input's units and directions.
        ranks: (n,) front number of every input row (0 = on the front); rows with a NaN get
            the last rank.
        hypervolume: area dominated by the front up to ``reference`` (two objectives and a
            reference given), else ``None``.
    """

    indices: np.ndarray
    points: np.ndarray
    ranks: np.ndarray
    hypervolume: float | None


def _as_points(points, modes: Sequence[str] | None) -> np.ndarray:
    """Validate and return ``points`` as a float (n, k) array."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D (n, k) array, got shape {arr.shape}")
    if modes is not None:
        if isinstance(modes, str):
            raise TypeError(f"modes must be a sequence of 'min'/'max', got the string {modes!r}")
        modes = list(modes)
        if len(modes) != arr.shape[1]:
            raise ValueError(
                f"need one mode per objective: points have k={arr.shape[1]} columns, "
                f"got {len(modes)} modes {modes}"
            )
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"modes must each be one of {MODES}, got {bad}")
    return arr


def normalize(points, modes: Sequence[str]) -> np.ndarray:
    """Return a float copy of ``points`` with ``max`` columns negated, so lower is better.

    Args:
        points: (n, k) objective values.
        modes: ``"min"`` or ``"max"`` for each of the k columns.

    Returns:
        (n, k) float array to be minimised in every column.

    Raises:
        ValueError: ``points`` is not 2-D, or ``modes`` has the wrong length or an unknown mode.
    """
    arr = _as_points(points, modes).copy()
    flip = np.array([m == "max" for m in modes], dtype=bool)
    arr[:, flip] = -arr[:, flip]
    return arr


def dominates(a, b, modes: Sequence[str] | None = None) -> bool:
    """Whether ``a`` Pareto-dominates ``b``: no worse in every objective, better in one.

    Args:
        a, b: (k,) objective vectors.
        modes: direction per objective; ``None`` means all are minimised.

    Any comparison with NaN is false, so a vector with a NaN neither dominates nor is dominated
    here (the sort functions rank such rows last instead).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be 1-D vectors of equal length, got shapes {a.shape} and {b.shape}"
        )
    pair = np.stack([a, b])  # (2, k)
    if modes is not None:
        pair = normalize(pair, modes)
    return bool(np.all(pair[0] <= pair[1]) and np.any(pair[0] < pair[1]))


def _domination_matrix(minimised: np.ndarray) -> np.ndarray:
    """(n, n) bool matrix, ``[i, j]`` = row i dominates row j (all columns minimised)."""
    le = np.all(minimised[:, None, :] <= minimised[None, :, :], axis=2)  # (n, n)
    lt = np.any(minimised[:, None, :] < minimised[None, :, :], axis=2)  # (n, n)
    return le & lt


def non_dominated_sort(points, modes: Sequence[str]) -> list[np.ndarray]:
    """Split the rows into successive non-dominated fronts (NSGA-II's fast sort).

    Front 0 holds the rows no other row dominates; front 1 those dominated only by front 0;
    and so on.  Duplicated rows share a front.  Rows with a NaN form one extra, last front.

    Args:
        points: (n, k) objective values.
        modes: ``"min"`` or ``"max"`` for each column.

    Returns:
        list of index arrays (ascending within a front), best front first; empty for n = 0.
        Every row index appears exactly once.
    """
    minimised = normalize(points, modes)
    has_nan = np.isnan(minimised).any(axis=1)
    finite = np.flatnonzero(~has_nan)
    fronts: list[np.ndarray] = []
    if finite.size:
        dom = _domination_matrix(minimised[finite])  # (f, f)
        # How many not-yet-assigned rows dominate each row; peeling a front decrements it.
        dominated_by = dom.sum(axis=0)
        remaining = np.ones(finite.size, dtype=bool)
        while remaining.any():
            current = remaining & (dominated_by == 0)
            fronts.append(finite[current])
            remaining &= ~current
            dominated_by = dominated_by - dom[current].sum(axis=0)
    if has_nan.any():
        fronts.append(np.flatnonzero(has_nan))
    return fronts


def pareto_front(points, modes: Sequence[str]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows; rows with a NaN are never on the front.

    Args:
        points: (n, k) objective values.
        modes: ``"min"`` or ``"max"`` for each column.
    """
    minimised = normalize(points, modes)
    finite = np.flatnonzero(~np.isnan(minimised).any(axis=1))
    if finite.size == 0:
        return np.zeros(0, dtype=np.intp)
    dom = _domination_matrix(minimised[finite])
    return finite[~dom.any(axis=0)]


def crowding_distance(points) -> np.ndarray:
    """NSGA-II crowding distance of each row of *one front*: larger = more isolated.

    For each objective the rows are sorted (stable, so ties keep input order); the first and last
    get ``inf`` and an inner row adds the gap between its two neighbours divided by the
    objective's range.  An objective with zero or infinite range adds nothing to inner rows.
    The value does not depend on the objectives' directions, so no ``modes`` are needed.

    Args:
        points: (n, k) objective values without NaN.

    Returns:
        (n,) float array; all ``inf`` when n <= 2.

    Raises:
        ValueError: ``points`` contains NaN (rank such rows separately, see module docstring).
    """
    arr = _as_points(points, None)
    if np.isnan(arr).any():
        raise ValueError("crowding_distance needs points without NaN; got a NaN entry")
    n, k = arr.shape
    distance = np.zeros(n, dtype=float)
    if n <= 2:
        distance[:] = np.inf
        return distance
    for j in range(k):
        order = np.argsort(arr[:, j], kind="stable")
        values = arr[order, j]  # (n,) ascending
        distance[order[0]] = distance[order[-1]] = np.inf
        span = values[-1] - values[0]
        if span > 0 and np.isfinite(span):
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def sort_by_rank_and_crowding(points, modes: Sequence[str]) -> np.ndarray:
    """All row indices, best first: by front, then by decreasing crowding distance.

    This is NSGA-II's selection order (and MO-ASHA's rung order).  Ties (equal rank and equal
    crowding, e.g. two boundary rows) keep input order, so callers decide who wins a tie by
    the order of the rows they pass.  Rows with a NaN come last, in input order.

    Args:
        points: (n, k) objective values.
        modes: ``"min"`` or ``"max"`` for each column.

    Returns:
        (n,) permutation of ``range(n)``.
    """
    minimised = normalize(points, modes)
    ordered = []
    for front in non_dominated_sort(minimised, ["min"] * minimised.shape[1]):
        rows = minimised[front]
        if np.isnan(rows).any():  # the NaN front: no meaningful distance, keep input order
            ordered.append(front)
            continue
        crowd = crowding_distance(rows)
        # Negate so larger distance sorts first; stable keeps input order among ties.
        ordered.append(front[np.argsort(-crowd, kind="stable")])
    if not ordered:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate(ordered)


def hypervolume_2d(points, modes: Sequence[str], reference) -> float:
    """Exact area dominated by ``points`` and bounded by ``reference`` (two objectives).

    The reference is a point worse than every point of interest in both objectives (e.g.
    accuracy 0 and sparsity 0 when both are maximised).  Rows that do not strictly beat the
    reference in both objectives, and rows with a NaN, add nothing.  Dominated rows add nothing
    either, so the value is that of the Pareto front.

    Args:
        points: (n, 2) objective values.
        modes: ``"min"`` or ``"max"`` for each of the two columns.
        reference: (2,) reference point, in the same units and directions as ``points``.

    Returns:
        the area (0.0 for no contributing row).

    Raises:
        ValueError: not two objectives, or a reference of the wrong shape or with NaN.
    """
    arr = _as_points(points, modes)
    if arr.shape[1] != 2:
        raise ValueError(f"hypervolume_2d needs k=2 objectives, got k={arr.shape[1]}")
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (2,) or np.isnan(ref).any():
        raise ValueError(f"reference must be 2 numbers without NaN, got reference={reference!r}")
    minimised = normalize(arr, modes)
    ref = normalize(ref[None, :], modes)[0]
    inside = ~np.isnan(minimised).any(axis=1) & np.all(minimised < ref, axis=1)
    pts = minimised[inside]
    if pts.size == 0:
        return 0.0
    # Sweep along objective 0 (ties: better objective 1 first); every point that improves on
    # the best objective-1 value so far adds one horizontal slab of the staircase.
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    area, ceiling = 0.0, ref[1]
    for x, y in pts:
        if y < ceiling:
            area += (ref[0] - x) * (ceiling - y)
            ceiling = y
    return float(area)


def find_pareto_front(points, modes: Sequence[str], *, reference=None) -> ParetoFront:
    """Front, ranks and (for two objectives with a ``reference``) hypervolume in one call.

    Args:
        points: (n, k) objective values.
        modes: ``"min"`` or ``"max"`` for each column.
        reference: optional reference point for :func:`hypervolume_2d` (k = 2 only).

    Raises:
        ValueError: a ``reference`` is given with k != 2 (plus :func:`normalize`'s checks).
    """
    arr = _as_points(points, modes)
    if reference is not None and arr.shape[1] != 2:
        raise ValueError(f"a hypervolume reference needs k=2 objectives, got k={arr.shape[1]}")
    ranks = np.zeros(arr.shape[0], dtype=np.intp)
    for rank, front in enumerate(non_dominated_sort(arr, modes)):
        ranks[front] = rank
    indices = pareto_front(arr, modes)
    volume = hypervolume_2d(arr, modes, reference) if reference is not None else None
    return ParetoFront(indices=indices, points=arr[indices], ranks=ranks, hypervolume=volume)
