"""Plots of a search's results: ``pareto.png`` (matplotlib) and ``pareto.html`` (plotly)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_front"]


def plot_front(search_dir: Path, rows: list[dict], front_rows: list[dict], metric: str):
    """pareto.png (matplotlib) and pareto.html (plotly, interactive) of sparsity vs metric."""
    png = search_dir / "pareto.png"
    html = search_dir / "pareto.html"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for status, marker, alpha in (("complete", "o", 0.6), ("stopped", "x", 0.4)):
        sel = [r for r in rows if r["status"] == status]
        if sel:
            ax.scatter([float(r["sparsity"]) for r in sel], [float(r[metric]) for r in sel],
                       marker=marker, alpha=alpha, label=f"{status} trials")
    if front_rows:
        ax.plot([float(r["sparsity"]) for r in front_rows], [float(r[metric]) for r in front_rows],
                "r-o", label="Pareto front", drawstyle="steps-post")
        for r in front_rows:
            ax.annotate(str(r["method"]), (float(r["sparsity"]), float(r[metric])), fontsize=7)
    ax.set_xlabel("measured sparsity (prunable set)")
    ax.set_ylabel(metric)
    ax.set_title("rayprune: sparsity vs " + metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    try:
        import plotly.graph_objects as go

        figure = go.Figure()
        for status in ("complete", "stopped"):
            sel = [r for r in rows if r["status"] == status]
            figure.add_trace(go.Scatter(
                x=[float(r["sparsity"]) for r in sel], y=[float(r[metric]) for r in sel], mode="markers",
                name=f"{status} trials", text=[f"{r['trial_id']} {r['method']}" for r in sel]))
        figure.add_trace(go.Scatter(
            x=[float(r["sparsity"]) for r in front_rows], y=[float(r[metric]) for r in front_rows],
            mode="lines+markers", name="Pareto front", line_shape="hv",
            text=[f"{r['trial_id']} {r['method']}" for r in front_rows]))
        figure.update_layout(xaxis_title="measured sparsity", yaxis_title=metric,
                             title="rayprune Pareto front")
        figure.write_html(str(html), include_plotlyjs=True)
    except ImportError:
        html = None
    return png, html
