"""What the MLflow UI shows of a search, as plain data: run names, rounded params, the tags a
results row gives its run, the front as a table and the parent run's note (markdown).

No MLflow import: :class:`~rayprune.tracking.mlflow_tracker.SearchTracker` sends what these
functions build.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["run_name", "display_value", "display_params", "row_tags", "front_table", "trial_counts",
           "search_note", "STATUS_GUIDE"]

#: How MLflow's run statuses read for a rayprune search (the note repeats it; so does the README).
STATUS_GUIDE = (
    "FINISHED: ran its full budget. KILLED with `stopped_early=true`: stopped by the scheduler "
    "(ASHA) at a lower budget because others were better at that point; it did not crash, and its "
    "metrics are those of its last evaluation. KILLED with `interrupted=true`: cut off by Ctrl-C, "
    "continues on `--resume`. FAILED: raised an error or diverged (see `verdict_reason`). "
    "`collapsed=true`: finished, but not clearly above the floor; never on the front."
)


def display_value(value: Any) -> str:
    """A param as the runs table shows it: floats to 4 significant digits (the exact value is
    in the run's ``config.yaml``), the rest as text (MLflow's 6000-character limit)."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)[:6000]


def display_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Flat, comparable param names (``method``, ``target_sparsity``, ``magnitude.selection``...)
    with :func:`display_value` values, sorted by name."""
    return {str(k): display_value(v) for k, v in sorted(config.items())}


def run_name(trial_id: str, config: Mapping[str, Any]) -> str:
    """``<method>-s<target>-<trial id>``, e.g. ``magnitude-s0.80-3f2a1b0c``: the runs table says
    what a trial is without opening it."""
    method = str(config.get("method") or "trial")
    target = config.get("target_sparsity")
    try:
        return f"{method}-s{float(target):.2f}-{trial_id}"
    except (TypeError, ValueError):
        return f"{method}-{trial_id}"


def _bool(value: Any) -> str:
    return "true" if value else "false"


def row_tags(row: Mapping[str, Any], front_ids: set[str]) -> dict[str, str]:
    """The tags a results row gives its trial's run: ``pareto``, ``collapsed``, ``stopped_early``,
    and ``verdict``/``verdict_reason`` when the row has them (results-row contract)."""
    tags = {
        "pareto": _bool(row.get("trial_id") in front_ids),
        "collapsed": _bool(row.get("verdict") == "collapsed"),
        "stopped_early": _bool(row.get("status") == "stopped"),
    }
    if row.get("verdict"):
        tags["verdict"] = str(row["verdict"])
    if row.get("verdict_reason") not in (None, ""):
        tags["verdict_reason"] = str(row["verdict_reason"])[:5000]
    return tags


def _number(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return "" if math.isnan(number) else f"{number:.{digits}f}"


def _front_columns(metric: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = ["run", "method", "target_sparsity", "sparsity", metric]
    if any(r.get("retained") not in (None, "") for r in rows):
        columns.append("retained")
    return columns


def front_table(front_rows: Sequence[Mapping[str, Any]], metric: str,
                run_names: Mapping[str, str]) -> dict[str, list]:
    """The front in MLflow's table-artifact layout (``{"columns": [...], "data": [[...]]}``, what
    ``log_table`` writes), sorted by sparsity; numbers rounded to 4 decimals."""
    columns = _front_columns(metric, front_rows)
    data = []
    for row in front_rows:
        values = []
        for column in columns:
            if column == "run":
                values.append(run_names.get(row["trial_id"], row["trial_id"]))
            elif column == "method":
                values.append(row.get("method"))
            else:
                try:
                    values.append(round(float(row.get(column)), 4))
                except (TypeError, ValueError):
                    values.append(None)
        data.append(values)
    return {"columns": columns, "data": data}


def trial_counts(all_rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each trial counted once: ``failed`` (an error or a ``failed`` verdict), ``collapsed``
    (finished, not clearly above the floor), ``infeasible`` (a constraint not met), ``stopped``
    (stopped early by the scheduler), ``interrupted`` (cut off by Ctrl-C), else ``completed``
    (its full budget, verdict ok)."""
    counts = {"trials": len(all_rows), "completed": 0, "stopped": 0, "collapsed": 0, "failed": 0,
              "infeasible": 0, "interrupted": 0}
    for row in all_rows:
        status, verdict = row.get("status"), row.get("verdict")
        if status in ("error", "failed") or verdict == "failed":
            counts["failed"] += 1
        elif verdict in ("collapsed", "infeasible"):
            counts[verdict] += 1
        elif status in ("stopped", "interrupted"):
            counts[status] += 1
        else:
            counts["completed"] += 1
    return counts


def search_note(*, name: str, metric: str, front_rows: Sequence[Mapping[str, Any]],
                all_rows: Sequence[Mapping[str, Any]], hypervolume: float, run_links: Mapping[str, str],
                run_names: Mapping[str, str], reference_value: float | None = None,
                reference_model: str | None = None, reference_link: str | None = None,
                floor: float | None = None, constraints: Mapping[str, Any] | None = None,
                hypervolume_reference: Sequence[float] | None = None, running: bool = False) -> str:
    """The parent run's description (MLflow's run note, markdown): the reference, the floor, the
    constraints, the front as a table whose run names link to the child runs, the trial counts,
    and how to read the statuses.

    ``run_links`` maps trial ids to URL fragments of their runs (``#/experiments/1/runs/<id>``,
    relative so they work on any host the UI is served from).
    """
    lines = [f"## rayprune search `{name}`" + (" (running)" if running else ""), ""]
    if reference_value is not None:
        model = f" ({reference_model})" if reference_model else ""
        ref = f"[{metric} {_number(reference_value)}]({reference_link})" if reference_link else \
            f"{metric} {_number(reference_value)}"
        lines.append(f"- **Dense reference**{model}: {ref}")
    else:
        lines.append("- **Dense reference**: none")
    if floor is not None:
        lines.append(f"- **Floor** (best constant predictor on the eval split): {metric} {_number(floor)}")
    active = {k: v for k, v in (constraints or {}).items() if v is not None}
    if active:
        feasible = sum(1 for r in all_rows if r.get("status") == "complete" and r.get("verdict") != "infeasible")
        lines.append("- **Constraints**: " + ", ".join(f"`{k}` {v}" for k, v in active.items())
                     + f" ({feasible} finished trials meet them)")
    else:
        lines.append("- **Constraints**: none")
    c = trial_counts(all_rows)
    counts = (f"- **Trials**: {c['trials']} — {c['completed']} completed, {c['stopped']} stopped early, "
              f"{c['collapsed']} collapsed, {c['failed']} failed")
    if c["infeasible"]:
        counts += f", {c['infeasible']} infeasible"
    if c["interrupted"]:
        counts += f", {c['interrupted']} interrupted"
    lines += [counts, ""]
    where = ""
    if hypervolume_reference is not None:
        where = " (reference point: " + ", ".join(_number(v) for v in hypervolume_reference) + ")"
    lines.append(f"### Pareto front: {len(front_rows)} trials, hypervolume {_number(hypervolume)}{where}")
    lines.append("")
    if front_rows:
        columns = _front_columns(metric, front_rows)
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in front_rows:
            cells = []
            for column in columns:
                if column == "run":
                    label = run_names.get(row["trial_id"], row["trial_id"])
                    link = run_links.get(row["trial_id"])
                    cells.append(f"[{label}]({link})" if link else label)
                elif column == "method":
                    cells.append(str(row.get("method")))
                else:
                    cells.append(_number(row.get(column), 3 if column == "target_sparsity" else 4))
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("(empty: no trial has finished its full budget above the floor yet)")
    lines += ["", "Filter the runs table with `tags.pareto = 'true'` for the front, "
              "`tags.collapsed = 'true'` for collapsed trials.", "", f"**Statuses.** {STATUS_GUIDE}"]
    return "\n".join(lines)
