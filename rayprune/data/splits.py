"""Carving an eval split out of the training rows by group, for data that ships one file.

SQuAD's train file cannot be had offline (only the dev file is), and many users have one labelled
file: ``data.eval_fraction`` takes the eval split out of ``train_files`` instead of ``eval_files``.
Rows that share a ``data.group_field`` value (a SQuAD article ``title``, a document id, a speaker)
all land on the same side, so no paragraph, document or speaker is in both; without a group field
each row is its own group.  Seeded by ``data.seed`` and deterministic: the same files and options
give the same split on every machine, and the rule is stated in the CLI's start lines and on the
parent run (:func:`describe_carve`).

Written by hand: ``datasets.Dataset.train_test_split`` splits rows, not groups.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

__all__ = ["eval_mask_by_group", "describe_carve", "STREAM_CARVE"]

#: The random stream of the carve (others: subsampling and the selection split, data/labels.py).
STREAM_CARVE = 3


def eval_mask_by_group(group_keys: Sequence[Hashable], fraction: float, seed: int, *, where: str,
                       group_field: str | None) -> np.ndarray:
    """Which rows go to the eval split: ``round(fraction * groups)`` whole groups (at least one,
    and at least one left for training), chosen by a seeded permutation of the groups in order
    of first appearance.

    Args:
        group_keys: one key per row (``None`` rows each form their own group).
        fraction: share of the groups for eval, in (0, 1).
        seed: ``data.seed``.
        where: the files, for the error message.
        group_field: the grouping column, for the error message.

    Returns:
        a boolean ``(n,)`` mask, True = eval.

    Raises:
        ValueError: fewer than two groups (one side would be empty).
    """
    keys = [("row", i) if k is None else ("key", k) for i, k in enumerate(group_keys)]
    order: dict = {}
    for k in keys:
        order.setdefault(k, len(order))
    n_groups = len(order)
    unit = f"distinct '{group_field}' values" if group_field else "rows"
    if n_groups < 2:
        raise ValueError(f"{where}: data.eval_fraction needs at least 2 {unit} to split into train and eval, "
                         f"found {n_groups}")
    n_eval = min(max(1, int(round(fraction * n_groups))), n_groups - 1)
    chosen = np.random.default_rng([seed, STREAM_CARVE]).permutation(n_groups)[:n_eval]
    eval_groups = np.zeros(n_groups, dtype=bool)
    eval_groups[chosen] = True
    return np.fromiter((eval_groups[order[k]] for k in keys), dtype=bool, count=len(keys))


def describe_carve(mask: np.ndarray, group_keys: Sequence[Hashable], fraction: float, seed: int,
                   group_field: str | None) -> str:
    """One line for the CLI and the parent run: how the eval split was carved."""
    groups_eval = {k for k, m in zip(group_keys, mask) if m and k is not None}
    groups_all = {k for k in group_keys if k is not None}
    by = (f"{len(groups_eval)} of {len(groups_all)} groups by '{group_field}'" if group_field
          else "rows at random")
    return (f"eval carved from train_files: {by} (eval_fraction {fraction:g}, seed {seed}); "
            f"{int((~mask).sum())} train rows / {int(mask.sum())} eval rows, no group on both sides")
