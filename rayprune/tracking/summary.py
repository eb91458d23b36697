"""What the MLflow UI shows of a search, as plain data: run names, rounded params, the tags a
results row gives its run, the front as a table and the parent run's note (markdown).

No MLflow import: :class:`~rayprune.tracking.mlflow_tracker.SearchTracker` sends what these
functions build.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

__all__ = ["run_name", "display_value", "display_params", "row_tags", "front_table", "trial_counts",
           "search_note", "runs_table_views", "compare_link", "STATUS_GUIDE", "VIEW_TAG_PREFIX", "TRIALS_VIEW",
           "FRONT_VIEW", "WORKFLOW_QUERY"]

#: MLflow 3's UI takes its layout from a global "GenAI | Model training" switch: this URL query,
#: else the browser's last click on the switch (``localStorage["mlflow.workflowType"]``), else
#: GenAI; the experiment's ``mlflow.experimentKind`` tag is not read (3.17 and 3.18).  Every link
#: rayprune prints or writes into a note carries it.
WORKFLOW_QUERY = "workflowType=machine_learning"
#: An experiment tag ``<prefix><key>`` holds a runs-table view that the link
#: ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens (MLflow's "share view": columns,
#: their order and widths, filter, sort).  MLflow leaves expanded parents out of a shared view,
#: so rayprune's views filter the parent run away: the trials are top-level rows.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
TRIALS_VIEW = "rayprune-trials"
FRONT_VIEW = "rayprune-front"

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


def row_tags(row: Mapping[str, Any], front_ids: set[str], *, metric: str | None = None,
             floor: float | None = None) -> dict[str, str]:
    """The tags a results row gives its trial's run: ``pareto``, ``collapsed``, ``stopped_early``,
    and ``verdict``/``verdict_reason`` when the row has a verdict (results-row contract).  The
    criteria give an ``ok`` verdict no reason; its ``verdict_reason`` says why it passed (with
    ``metric`` and ``floor``: the numbers), so every judged trial has one."""
    tags = {
        "pareto": _bool(row.get("trial_id") in front_ids),
        "collapsed": _bool(row.get("verdict") == "collapsed"),
        "stopped_early": _bool(row.get("status") == "stopped"),
    }
    if row.get("verdict"):
        tags["verdict"] = str(row["verdict"])
    reason = row.get("verdict_reason")
    if reason in (None, "") and row.get("verdict") == "ok":
        reason = _ok_reason(row, metric, floor)
    if reason not in (None, ""):
        tags["verdict_reason"] = str(reason)[:5000]
    return tags


def _ok_reason(row: Mapping[str, Any], metric: str | None, floor: float | None) -> str:
    """Why a trial passed the criteria, in the words of the failing verdicts' reasons."""
    value = _number(row.get(metric)) if metric else ""
    if value and floor is not None:
        reason = f"{metric} {value} is clearly above the floor {_number(floor)} and meets the objective's criteria"
    else:
        reason = "above the floor and meets the objective's criteria"
    if row.get("status") == "stopped":
        reason += f" at its last evaluation (stopped early, budget fraction {_number(row.get('budget_fraction'), 2)})"
    return reason


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


def runs_table_views(metric: str) -> dict[str, str]:
    """The runs-table views rayprune's links open, as ``{share key: experiment tag value}``:
    :data:`TRIALS_VIEW` (every trial and the dense reference, best ``metric`` first) and
    :data:`FRONT_VIEW` (the front, by sparsity), both with method, target, sparsity, the metric,
    ``retained``, the verdict and ``pareto`` as columns and the run name wide enough for the
    trial id.  The value is the JSON MLflow's "share view" writes (it also reads it uncompressed);
    column ids are MLflow's ``<type>.`<key>``` names."""
    columns = ["params.`method`", "params.`target_sparsity`", "metrics.`sparsity`", f"metrics.`{metric}`",
               "metrics.`retained`", "tags.`verdict`", "tags.`pareto`"]
    widths = {"attributes.`Run Name`": 250, "params.`method`": 100, "params.`target_sparsity`": 120,
              "metrics.`sparsity`": 100, f"metrics.`{metric}`": 110, "metrics.`retained`": 100,
              "tags.`verdict`": 100, "tags.`pareto`": 80}
    layout = {"selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns], "columnWidths": widths}
    return {
        TRIALS_VIEW: json.dumps({"searchFilter": "tags.`rayprune.role` != 'search'",
                                 "orderByKey": f"metrics.`{metric}`", "orderByAsc": False, **layout}),
        FRONT_VIEW: json.dumps({"searchFilter": "tags.`pareto` = 'true'", "orderByKey": "metrics.`sparsity`",
                                "orderByAsc": True, **layout}),
    }


def compare_link(experiment_id: str, run_ids: Sequence[str]) -> str:
    """A URL fragment of MLflow's Compare view of ``run_ids``, in the model-training layout (a
    Compare opened from the runs table's button drops :data:`WORKFLOW_QUERY` and shows GenAI's)."""
    from urllib.parse import quote

    return (f"#/compare-runs?runs={quote(json.dumps(list(run_ids)), safe='')}"
            f"&experiments={quote(json.dumps([str(experiment_id)]), safe='')}&{WORKFLOW_QUERY}")


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
                hypervolume_reference: Sequence[float] | None = None, running: bool = False,
                front_compare_link: str | None = None, data: Mapping[str, Any] | None = None) -> str:
    """The parent run's description (MLflow's run note, markdown): the reference, the floor, the
    constraints, the front as a table whose run names link to the child runs, the trial counts,
    and how to read the statuses.

    ``run_links`` maps trial ids to URL fragments of their runs (``#/experiments/1/runs/<id>``,
    relative so they work on any host the UI is served from); ``front_compare_link`` (a fragment
    too, :func:`compare_link`) opens the front in MLflow's Compare view.
    """
    lines = [f"## rayprune search `{name}`" + (" (running)" if running else ""), ""]
    data = data or {}
    if data.get("task"):  # the task and how its splits were made (search.json's data section)
        lines.append(f"- **Task**: {data['task']} ({data.get('task_type', 'classification')}), "
                     f"{data.get('train_examples', '?')} train / {data.get('eval_examples', '?')} eval rows")
        lines += [f"  - {note}" for note in data.get("notes") or ()]
    if reference_value is not None:
        model = f" ({reference_model})" if reference_model else ""
        ref = f"[{metric} {_number(reference_value)}]({reference_link})" if reference_link else \
            f"{metric} {_number(reference_value)}"
        lines.append(f"- **Dense reference**{model}: {ref}")
    else:
        lines.append("- **Dense reference**: none")
    if floor is not None:
        rule = data.get("floor_rule") or "best constant predictor on the eval split"
        lines.append(f"- **Floor** ({rule}): {metric} {_number(floor)}")
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
        if front_compare_link and len(front_rows) > 1:
            lines += ["", f"[Compare the front]({front_compare_link}) (parallel coordinates, scatter plot)"]
    else:
        lines.append("(empty: no trial has finished its full budget above the floor yet)")
    lines += ["", "Filter the runs table with `tags.pareto = 'true'` for the front, "
              "`tags.collapsed = 'true'` for collapsed trials.", "", f"**Statuses.** {STATUS_GUIDE}"]
    return "\n".join(lines)
