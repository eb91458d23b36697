"""The search directory's results store: ``results.csv``, the front (``pareto.csv/.json``) and
the reader that ``rayprune pareto`` and ``export`` use.  No Ray, Optuna or torch import here:
reading a finished search stays fast."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rayprune.errors import SpecError

__all__ = ["collect_rows", "write_pareto", "load_search_dir", "reached_full_budget"]

# A trial's ``budget_fraction`` is step / total steps, a float: it ran its full budget when the
# fraction is 1 up to rounding.
_FULL_BUDGET_TOLERANCE = 1e-9


def reached_full_budget(budget_fraction) -> bool:
    """Whether a trial whose last report had this ``budget_fraction`` ran its full budget (the
    one rule the searcher, the tracker and the front share)."""
    try:
        return float(budget_fraction) >= 1.0 - _FULL_BUDGET_TOLERANCE
    except (TypeError, ValueError):
        return False


def collect_rows(results, settings) -> list[dict]:
    """One row per trial from a ResultGrid: last metrics, config, checkpoint, status."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        checkpoint = result.checkpoint.path if result.checkpoint is not None else ""
        rows.append({
            "trial_id": trial_id,
            "method": result.config.get("method"),
            "target_sparsity": result.config.get("target_sparsity"),
            settings.metric: metrics.get(settings.metric, float("nan")),
            "sparsity": metrics.get("sparsity", float("nan")),
            "sparsity_encoder": metrics.get("sparsity_encoder", float("nan")),
            "budget_fraction": metrics.get("budget_fraction", 0.0),
            "status": "error" if result.error else (
                "complete" if reached_full_budget(metrics.get("budget_fraction", 0.0)) else "stopped"),
            "checkpoint": checkpoint,
            "config": json.dumps(result.config, sort_keys=True, default=str),
        })
    return rows


def write_pareto(search_dir: Path, rows: list[dict], *, metric: str, tracker=None) -> dict:
    """Compute the front over full-budget trials; write results/pareto tables, plots; log them."""
    from rayprune.pareto import hypervolume_2d, pareto_front

    search_dir = Path(search_dir)
    _write_csv(search_dir / "results.csv", rows)
    complete = [r for r in rows if r["status"] == "complete"
                and all(np.isfinite(float(r[k])) for k in (metric, "sparsity"))]
    front_rows: list[dict] = []
    hv = 0.0
    if complete:
        points = np.array([[float(r[metric]), float(r["sparsity"])] for r in complete])
        idx = pareto_front(points, ["max", "max"])
        front_rows = sorted((complete[i] for i in idx), key=lambda r: float(r["sparsity"]))
        ref = _reference_point(metric)
        hv = float(hypervolume_2d(points[idx], ["max", "max"], ref))
    for r in rows:
        r["pareto"] = any(r["trial_id"] == f["trial_id"] for f in front_rows)
    _write_csv(search_dir / "pareto.csv", front_rows)
    from rayprune.search.plots import plot_front

    png, html = plot_front(search_dir, rows, front_rows, metric)
    (search_dir / "pareto.json").write_text(json.dumps(
        {"metric": metric, "hypervolume": hv, "front": front_rows}, indent=1, default=str))
    if tracker is not None:
        tracker.log_pareto(front_rows, complete, metric=metric, hypervolume=hv,
                           figure_png=png, figure_html=html, table_csv=search_dir / "pareto.csv")
    return {"rows": rows, "front": front_rows, "hypervolume": hv, "search_dir": str(search_dir)}


def _reference_point(metric: str) -> list[float]:
    """Hypervolume reference (worst values) in the objectives' own units: metric floor, sparsity 0."""
    floor = -1.0 if metric in ("matthews_correlation", "pearson", "spearman") else 0.0
    return [floor, 0.0]


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["trial_id", "method", "target_sparsity"]
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def load_search_dir(search_dir: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """(search.json, results rows, pareto rows) of a finished search directory."""
    search_dir = Path(search_dir)
    meta_file = search_dir / "search.json"
    if not meta_file.exists():
        raise SpecError(f"{search_dir}: not a rayprune search directory (no search.json)")
    meta = json.loads(meta_file.read_text())

    def read(name):
        path = search_dir / name
        if not path.exists():
            return []
        with open(path) as fh:
            return list(csv.DictReader(fh))

    return meta, read("results.csv"), read("pareto.csv")
