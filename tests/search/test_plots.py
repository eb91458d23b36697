"""pareto.png / pareto.html: front members are told apart by run name and sparsity."""

from __future__ import annotations

import json
import re

from rayprune.search.plots import plot_front, point_label


def _row(trial_id, target, sparsity, accuracy):
    return {"trial_id": trial_id, "method": "seven", "target_sparsity": target, "sparsity": sparsity,
            "accuracy": accuracy, "status": "complete", "verdict": "ok", "verdict_reason": ""}


def test_front_points_carry_their_run_name_and_sparsity_and_the_legend_sits_below(tmp_path):
    front = [_row("ae6b90ab", 0.5, 0.5, 0.95), _row("29758aa5", 0.97, 0.9702, 0.92), _row("cf7625aa", 0.99, 0.99, 0.61)]
    assert point_label(front[1]) == "seven-s0.97-29758aa5 (sparsity 0.970)"
    png, html = plot_front(tmp_path, front, front, "accuracy", floor=0.5, reference=0.96)
    assert png.stat().st_size > 0
    text = html.read_text()
    for row in front:
        assert point_label(row) in text
    layout = json.loads(re.search(r'"legend":(\{[^}]*\})', text).group(1))
    assert layout["orientation"] == "h" and layout["y"] < 0  # below the plot, not cut at the right edge
