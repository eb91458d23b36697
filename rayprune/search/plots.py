"""Plots of a search's results: ``pareto.png`` (matplotlib) and ``pareto.html`` (plotly).

Every trial with finite values is drawn, marked by what it is: a full-budget ``ok`` trial, one
stopped early, one judged ``collapsed`` (not clearly above the floor), ``infeasible`` (violates a
constraint) or ``failed``; the front joins the members only.  The floor (the best constant
predictor) and the dense reference are horizontal lines.  Front members are labelled with their
run's name in MLflow (``<method>-s<target>-<trial id>``) and measured sparsity, so two points of
one method are told apart.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot_front", "point_label"]

# (label, marker) per kind of trial; the kind of a row is given by _kind.
_KINDS = {
    "complete": ("full-budget trials", "o"),
    "stopped": ("stopped early", "x"),
    "collapsed": ("collapsed (not above the floor)", "v"),
    "infeasible": ("infeasible (violates a constraint)", "s"),
    "failed": ("failed", "X"),
}


def _kind(row: dict) -> str:
    verdict = row.get("verdict", "ok")
    if verdict != "ok":
        return verdict
    return "complete" if row["status"] == "complete" else "stopped"


def _finite(row: dict, metric: str) -> bool:
    try:
        return math.isfinite(float(row["sparsity"])) and math.isfinite(float(row[metric]))
    except (TypeError, ValueError, KeyError):
        return False


def point_label(row: dict) -> str:
    """A front member's label: its run name and measured sparsity, e.g.
    ``seven-s0.97-29758aa5 (sparsity 0.970)``."""
    from rayprune.tracking.summary import run_name

    return f"{run_name(str(row['trial_id']), row)} (sparsity {float(row['sparsity']):.3f})"


def plot_front(search_dir: Path, rows: list[dict], front_rows: list[dict], metric: str, *,
               floor: float | None = None, reference: float | None = None):
    """pareto.png (matplotlib) and pareto.html (plotly, interactive) of sparsity vs metric."""
    png = search_dir / "pareto.png"
    html = search_dir / "pareto.html"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in rows if _finite(r, metric)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, (label, marker) in _KINDS.items():
        sel = [r for r in drawn if _kind(r) == kind]
        if sel:
            ax.scatter([float(r["sparsity"]) for r in sel], [float(r[metric]) for r in sel],
                       marker=marker, alpha=0.6, label=label)
    if front_rows:
        ax.plot([float(r["sparsity"]) for r in front_rows], [float(r[metric]) for r in front_rows],
                "r-o", label="Pareto front", drawstyle="steps-post")
        for i, r in enumerate(front_rows):
            # Alternate above and below the point: neighbours on a steep front do not overlap.
            ax.annotate(point_label(r), (float(r["sparsity"]), float(r[metric])), fontsize=6,
                        xytext=(4, 6 if i % 2 == 0 else -10), textcoords="offset points",
                        ha="right" if float(r["sparsity"]) > 0.6 else "left")
    if reference is not None:
        ax.axhline(reference, color="green", linestyle="-", linewidth=1, label=f"dense reference {reference:.3f}")
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label=f"floor {floor:.3f}")
    ax.set_xlabel("measured sparsity (prunable set)")
    ax.set_ylabel(metric)
    ax.set_title("rayprune: sparsity vs " + metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    try:
        import plotly.graph_objects as go
    except ImportError:
        return png, None
    figure = go.Figure()
    for kind, (label, _) in _KINDS.items():
        sel = [r for r in drawn if _kind(r) == kind]
        if sel:
            figure.add_trace(go.Scatter(
                x=[float(r["sparsity"]) for r in sel], y=[float(r[metric]) for r in sel], mode="markers",
                name=label, text=[f"{r['trial_id']} {r['method']} {r.get('verdict_reason', '')}" for r in sel]))
    figure.add_trace(go.Scatter(
        x=[float(r["sparsity"]) for r in front_rows], y=[float(r[metric]) for r in front_rows],
        mode="lines+markers", name="Pareto front", line_shape="hv",
        text=[point_label(r) for r in front_rows]))
    if reference is not None:
        figure.add_hline(y=reference, line_color="green", annotation_text=f"dense reference {reference:.3f}")
    if floor is not None:
        figure.add_hline(y=floor, line_dash="dash", line_color="grey", annotation_text=f"floor {floor:.3f}")
    # The legend goes below the plot: on the right, its long entries were cut at the page's edge.
    figure.update_layout(xaxis_title="measured sparsity", yaxis_title=metric, title="rayprune Pareto front",
                         legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
                         margin=dict(l=60, r=30, t=60, b=120))
    figure.write_html(str(html), include_plotlyjs=True)
    return png, html
