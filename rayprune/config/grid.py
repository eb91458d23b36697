"""A space's configurations as grid points: the key that identifies one, and every one a space of
``choice`` values can propose.

Two users: a replayed search (:mod:`rayprune.search.replay`) checks that its space is a grid of
the recorded table, and the searcher (:mod:`rayprune.search.searcher`) recognises a proposal
that repeats a configuration already tried, and knows when a finite space has none left.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Mapping

from rayprune.config.fields import split_key
from rayprune.config.space import Distribution
from rayprune.errors import SpecError

__all__ = ["canonical_value", "config_key", "grid_points", "grid_size", "finite_grid"]


def canonical_value(value: Any) -> Any:
    """A value as it identifies a grid point: floats rounded to 12 significant digits, so that
    ``1e-4`` from a YAML file and ``0.0001`` read back from JSON are the same point."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def config_key(config: Mapping[str, Any]) -> str:
    """The grid point of a flat trial config (the keys a space defines, rounded floats)."""
    return json.dumps({k: canonical_value(v) for k, v in sorted(config.items())}, sort_keys=True)


def _method_values(space: Mapping[str, Any]) -> tuple:
    method = space["method"]
    return method.args if isinstance(method, Distribution) else (method,)


def _options_for(space: Mapping[str, Any], method: str, methods: set) -> tuple[list[str], list[tuple]]:
    """The keys a trial of ``method`` gets and each key's values (method-scoped options only for
    their own method, as :class:`~rayprune.config.space.DefineByRun` suggests them)."""
    keys, options = [], []
    for key, value in space.items():
        if key == "method":
            continue
        scope, _ = split_key(key)
        if scope in methods and scope != method:
            continue
        keys.append(key)
        options.append(tuple(value.args) if isinstance(value, Distribution) else (value,))
    return keys, options


def grid_points(spec) -> list[dict]:
    """Every flat config the space of ``spec`` (a :class:`~rayprune.config.SearchSpec`) can
    propose, when each searched value is a ``choice``.

    Raises:
        SpecError: a searched value is a range, which no grid can cover.
    """
    from rayprune.methods import available_methods

    for key, value in spec.space.items():
        if isinstance(value, Distribution) and value.kind != "choice":
            raise SpecError(f"{spec.path}: space.{key}: a replayed search needs {{choice: [...]}} over the "
                            f"table's grid, got {value.describe()}")
    methods = set(available_methods())
    points = []
    for method in _method_values(spec.space):
        keys, options = _options_for(spec.space, method, methods)
        for combo in itertools.product(*options):
            points.append({"method": method, **dict(zip(keys, combo))})
    return points


def grid_size(spec, limit: int = 100_000) -> int | None:
    """How many configurations the space can propose, or None when they are unbounded (a
    ``uniform``/``loguniform``/``int`` range) or more than ``limit`` (then a search does not run
    out of new configurations in practice).  Counted, not enumerated."""
    from rayprune.methods import available_methods

    if any(isinstance(v, Distribution) and v.kind != "choice" for v in spec.space.values()):
        return None
    methods = set(available_methods())
    size = sum(math.prod(len(o) for o in _options_for(spec.space, m, methods)[1])
               for m in _method_values(spec.space))
    return None if size > limit else size


def finite_grid(spec, limit: int = 100_000) -> dict[str, dict] | None:
    """Every configuration the space can propose, by :func:`config_key`, or None where
    :func:`grid_size` is None."""
    if grid_size(spec, limit) is None:
        return None
    return {config_key(point): point for point in grid_points(spec)}
