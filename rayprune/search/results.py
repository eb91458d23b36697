"""The search directory's results store: ``results.csv``, the front (``pareto.csv/.json``) and
the reader that ``rayprune pareto`` and ``export`` use.  No Ray, Optuna or torch import here:
reading a finished search stays fast."""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import numpy as np

from rayprune.errors import SpecError
from rayprune.fidelity import reached_full_budget

__all__ = ["collect_rows", "write_pareto", "load_search_dir", "relative_to_search_dir", "resolve_in_search_dir", "reached_full_budget", "Criteria",
           "constraint_violations", "CONSTRAINT_KEYS", "VERDICTS", "front_report"]

#: ``objective.constraints`` keys -> the result key each one bounds.
CONSTRAINT_KEYS = {"min_retained": "retained", "max_parameters": "parameters", "max_latency_ms": "latency_ms"}

#: A trial's verdict: ``ok`` (may be on the front), ``collapsed`` (not clearly above the floor or
#: below ``objective.min_metric/min_retained``), ``infeasible`` (violates a constraint),
#: ``failed`` (errored, non-finite, or far below its target sparsity).
VERDICTS = ("ok", "collapsed", "failed", "infeasible")

def constraint_violations(result: Mapping, constraints: Mapping | None) -> dict[str, float]:
    """How far ``result`` violates each configured constraint, relative to its bound: ``> 0``
    violated, ``<= 0`` met (Optuna's convention, also used by the front and MO-ASHA).

    A constraint whose measurement is missing from ``result`` is left out (``latency_ms`` and
    ``parameters`` are measured at a trial's last evaluation only).
    """
    out = {}
    for name, bound in (constraints or {}).items():
        key = CONSTRAINT_KEYS.get(name)
        if key is None or bound is None:
            continue
        try:
            value = float(result.get(key))
        except (TypeError, ValueError):
            continue
        if not np.isfinite(value):
            out[name] = 1.0  # unmeasurable: treated as violated
            continue
        bound = float(bound)
        scale = abs(bound) or 1.0
        out[name] = (bound - value) / scale if name.startswith("min_") else (value - bound) / scale
    return out


@dataclass(frozen=True)
class Criteria:
    """What a finished trial must meet to be a front member (its verdict ``ok``).

    Attributes:
        metric: the objective metric.
        floor: the best constant predictor's ``metric`` on the eval split
            (:func:`rayprune.metrics.constant_floor`); also the hypervolume's reference point.
        eval_examples: size of the eval split (for the metric's standard error).
        reference_metric: the dense reference's ``metric`` (None: no reference).
        min_metric / min_retained: ``objective.min_metric`` / ``objective.min_retained``.
        constraints: ``objective.constraints`` (``min_retained``, ``max_parameters``,
            ``max_latency_ms``; None = unset).
    """

    metric: str
    floor: float
    eval_examples: int
    reference_metric: float | None = None
    min_metric: float | None = None
    min_retained: float | None = None
    constraints: Mapping = field(default_factory=dict)
    floor_rule: str = "a constant predictor"

    def verdict(self, row: Mapping) -> tuple[str, str]:
        """(verdict, reason) of one results row (a trial's last report)."""
        if row["status"] in ("error", "failed"):
            return "failed", str(row.get("error") or "the trial raised an error")
        value = _float(row.get(self.metric))
        if not np.isfinite(value) or not np.isfinite(_float(row.get("sparsity"))):
            return "failed", f"non-finite {self.metric} or sparsity in the last report"
        above, margin = self.clearly_above_floor(value)
        if not above:
            return "collapsed", (f"{self.metric} {value:.4f} is not clearly above the floor {self.floor:.4f} "
                                 f"({self.floor_rule}; standard error {margin:.4f})")
        if self.min_metric is not None and value < self.min_metric:
            return "collapsed", f"{self.metric} {value:.4f} is below objective.min_metric {self.min_metric}"
        retained = _float(row.get("retained"))
        if self.min_retained is not None and np.isfinite(retained) and retained < self.min_retained:
            return "collapsed", f"retained {retained:.4f} is below objective.min_retained {self.min_retained}"
        violated = {k: v for k, v in constraint_violations(row, self.constraints).items() if v > 0}
        if violated:
            return "infeasible", "violates " + ", ".join(
                f"{k} {self.constraints[k]} ({CONSTRAINT_KEYS[k]} {_float(row.get(CONSTRAINT_KEYS[k])):.4g})"
                for k in violated)
        return "ok", ""

    def clearly_above_floor(self, value: float) -> tuple[bool, float]:
        """(whether ``value`` of the metric is clearly above the floor, the margin it must clear):
        more than one standard error of ``value`` on the eval split above it.  The rule of a
        trial's ``collapsed`` verdict, and of the dense reference's check before any trial
        (:func:`rayprune.search.criteria.reference_below_floor`)."""
        from rayprune.metrics import standard_error

        value = _float(value)
        margin = standard_error(self.metric, value, self.eval_examples) if self.eval_examples else 0.0
        return bool(np.isfinite(value) and value > self.floor + margin), margin

    def describe(self) -> dict:
        """The criteria as written to ``pareto.json``."""
        return {"floor": self.floor, "reference_metric": self.reference_metric, "min_metric": self.min_metric,
                "min_retained": self.min_retained,
                "constraints": {k: v for k, v in dict(self.constraints).items() if v is not None},
                "eval_examples": self.eval_examples, "floor_rule": self.floor_rule}


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _is_trial_failure(error) -> bool:
    """Whether a trial's error is :class:`rayprune.training.loop.TrialFailed` (a diverged or
    under-pruned trial) rather than a crash.  Ray wraps it, so the name is matched."""
    return error is not None and "TrialFailed" in f"{type(error).__name__} {error}"


def _error_reason(error) -> str:
    """The error's own last line (Ray's wrapper puts the traceback first)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def _trial_config(result) -> dict:
    """The trial's config.  Ray's ``Result.config`` comes from the last reported metrics, so a
    trial that failed before its first report (a loss that is NaN at step 3) has none there;
    its ``params.json`` in the trial directory (on whatever filesystem the storage is) has it."""
    if result.config:
        return result.config
    filesystem = getattr(result, "filesystem", None)
    if filesystem is not None and result.path:
        try:
            with filesystem.open_input_stream(f"{result.path}/params.json") as stream:
                return json.loads(stream.read())
        except (OSError, ValueError):
            pass
    return {}


#: pyarrow filesystem type -> the URI scheme that names it (Ray gives a checkpoint's path
#: inside its filesystem, without the scheme).
_REMOTE_SCHEMES = {"s3": "s3", "gcs": "gs", "abfs": "abfs", "hdfs": "hdfs"}


def checkpoint_location(checkpoint) -> str:
    """Where a trial's checkpoint is, as ``rayprune export`` opens it: a local path, or a URI
    (``s3://bucket/...``) when Ray's storage is a bucket; "" without a checkpoint."""
    if checkpoint is None:
        return ""
    scheme = _REMOTE_SCHEMES.get(getattr(checkpoint.filesystem, "type_name", "local"))
    return f"{scheme}://{checkpoint.path}" if scheme else checkpoint.path


def collect_rows(results, settings) -> list[dict]:
    """One row per trial from a ResultGrid: last metrics, config, checkpoint, status."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        config = _trial_config(result)
        trial_id = metrics.get("trial_id") or Path(result.path).name
        checkpoint = checkpoint_location(result.checkpoint)
        if result.error is not None:
            status = "failed" if _is_trial_failure(result.error) else "error"
        else:
            status = "complete" if reached_full_budget(metrics.get("budget_fraction", 0.0)) else "stopped"
        rows.append({
            "trial_id": trial_id,
            "method": config.get("method"),
            "target_sparsity": config.get("target_sparsity"),
            settings.metric: metrics.get(settings.metric, float("nan")),
            "sparsity": metrics.get("sparsity", float("nan")),
            "sparsity_encoder": metrics.get("sparsity_encoder", float("nan")),
            "budget_fraction": metrics.get("budget_fraction", 0.0),
            "status": status,
            "error": _error_reason(result.error) if result.error is not None else "",
            **{key: metrics[key] for key in ("retained", "parameters", "latency_ms") if key in metrics},
            "checkpoint": checkpoint,
            "config": json.dumps(config, sort_keys=True, default=str),
        })
    return rows


def write_pareto(search_dir: Path, rows: list[dict], *, metric: str, criteria: Criteria | None = None,
                 tracker=None, plots: bool = True) -> dict:
    """Judge every trial, compute the front over full-budget ``ok`` trials, write the results and
    pareto tables, plots, ``pareto.json``; log them.

    Every row gets ``verdict``/``verdict_reason`` (:class:`Criteria`) and ``pareto``.
    ``pareto.csv`` lists the front, then every full-budget trial kept off it by its verdict
    (``collapsed``/``infeasible``, ``pareto`` false, with the reason), so a reader sees which
    trials did not count and why.  The hypervolume is measured from the floor (and
    sparsity 0), so a front of chance-level models has none.  Without ``criteria`` (a search
    directory written before the floor existed) the floor is the metric's worst value.
    ``plots=False`` skips drawing ``pareto.png``/``pareto.html`` (about a second and a few MB
    of artifact each time): the live refresh after each trial draws them only now and then.
    """
    from rayprune.pareto import hypervolume_2d, pareto_front

    search_dir = Path(search_dir)
    criteria = criteria or Criteria(metric=metric, floor=_worst_value(metric), eval_examples=0)
    for r in rows:
        r["verdict"], r["verdict_reason"] = criteria.verdict(r)
    complete = [r for r in rows if r["status"] == "complete"
                and all(np.isfinite(_float(r[k])) for k in (metric, "sparsity"))]

    def front_of(candidates: list[dict]) -> list[dict]:
        if not candidates:
            return []
        points = np.array([[float(r[metric]), float(r["sparsity"])] for r in candidates])
        return [candidates[i] for i in pareto_front(points, ["max", "max"])]

    front_rows = sorted(front_of([r for r in complete if r["verdict"] == "ok"]), key=lambda r: float(r["sparsity"]))
    front_ids = {r["trial_id"] for r in front_rows}
    excluded = sorted((r for r in complete if r["verdict"] != "ok"), key=lambda r: float(r["sparsity"]))
    reference_point = [criteria.floor, 0.0]
    hv = 0.0
    if front_rows:
        points = np.array([[float(r[metric]), float(r["sparsity"])] for r in front_rows])
        hv = float(hypervolume_2d(points, ["max", "max"], reference_point))
    for r in rows:
        r["pareto"] = r["trial_id"] in front_ids

    def stored(rs: list[dict]) -> list[dict]:
        # Checkpoints under the search directory are written relative to it (load_search_dir
        # resolves them), so a copied or moved directory exports from its own files.
        return [{**r, "checkpoint": relative_to_search_dir(r["checkpoint"], search_dir)} if r.get("checkpoint")
                else r for r in rs]

    _write_csv(search_dir / "results.csv", stored(rows))
    _write_csv(search_dir / "pareto.csv", stored(front_rows + excluded))
    png = html = None
    if plots:
        from rayprune.search.plots import plot_front

        png, html = plot_front(search_dir, rows, front_rows, metric, floor=criteria.floor,
                               reference=criteria.reference_metric)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    constrained = {k: v for k, v in dict(criteria.constraints).items() if v is not None}
    met = sum(1 for r in complete if not any(v > 0 for v in constraint_violations(r, constrained).values()))
    (search_dir / "pareto.json").write_text(json.dumps(
        {"metric": metric, "hypervolume": hv,
         "hypervolume_reference_point": {metric: reference_point[0], "sparsity": reference_point[1]},
         **criteria.describe(), "verdicts": counts, "statuses": {s: sum(r["status"] == s for r in rows) for s in
                                                                 ("complete", "stopped", "error", "failed", "interrupted")},
         "constraints_met": met if constrained else None, "full_budget_trials": len(complete),
         "front": stored(front_rows), "excluded": stored(excluded)},
        indent=1, default=str))
    if tracker is not None:
        tracker.log_pareto(front_rows, rows, metric=metric, hypervolume=hv,
                           figure_png=png, figure_html=html, table_csv=search_dir / "pareto.csv")
    return {"rows": rows, "front": front_rows, "excluded": excluded, "hypervolume": hv,
            "criteria": criteria.describe(), "verdicts": counts, "search_dir": str(search_dir)}


def front_report(pareto: Mapping) -> list[str]:
    """Lines the CLI prints under the front (``rayprune search`` and ``rayprune pareto``), from
    ``pareto.json``: the reference and floor, the constraints and how many full-budget trials
    met them, the trials kept off the front and why, and the count of each verdict."""
    metric = pareto["metric"]
    lines = []
    for row in pareto.get("excluded", []):
        lines.append(f"{row['trial_id']:<14} {str(row['method']):<14} {float(row['target_sparsity']):>7.3f} "
                     f"{float(row['sparsity']):>9.4f} {float(row[metric]):>22.4f}  {row['verdict'].upper()}: "
                     f"{row['verdict_reason']}")
    if lines:
        lines.insert(0, "kept off the front by their verdict:")
    reference = pareto.get("reference_metric")
    lines.append(f"dense reference {metric}: " + (f"{reference:.4f}" if reference is not None else "none"))
    lines.append(f"floor {metric}: {pareto.get('floor', float('nan')):.4f} "
                 f"({pareto.get('floor_rule', 'a constant predictor')}; the hypervolume is measured from it)")
    bounds = {k: pareto.get(k) for k in ("min_metric", "min_retained") if pareto.get(k) is not None}
    if bounds:
        lines.append("objective bounds: " + ", ".join(f"{k} {v}" for k, v in bounds.items()))
    constraints = pareto.get("constraints") or {}
    if constraints:
        lines.append("constraints: " + ", ".join(f"{k} {v}" for k, v in constraints.items())
                     + f"; met by {pareto.get('constraints_met')} of {pareto.get('full_budget_trials')} "
                       f"full-budget trials")
    verdicts = pareto.get("verdicts") or {}
    if verdicts:
        lines.append("verdicts: " + ", ".join(f"{n} {k}" for k, n in verdicts.items()))
    return lines


def _worst_value(metric: str) -> float:
    """The metric's worst possible value (correlations reach -1, the others 0)."""
    return -1.0 if metric in ("matthews_correlation", "pearson", "spearman") else 0.0


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["trial_id", "method", "target_sparsity"]
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def relative_to_search_dir(location: str, search_dir: Path) -> str:
    """``location`` relative to ``search_dir`` when it is a local path inside it (a checkpoint in
    the default Ray storage, the dense reference), else unchanged (a bucket URI, a shared mount
    given with ``--storage``, a hub id)."""
    if not location or "://" in location or not Path(location).is_absolute():
        return location
    try:
        return Path(location).relative_to(Path(search_dir).resolve()).as_posix()
    except ValueError:
        try:
            return Path(location).relative_to(Path(search_dir).absolute()).as_posix()
        except ValueError:
            return location


def resolve_in_search_dir(location: str, search_dir: Path) -> str:
    """The inverse of :func:`relative_to_search_dir`: a relative path is made absolute under
    ``search_dir`` (where the directory is now); absolute paths and URIs are kept."""
    if not location or "://" in location or Path(location).is_absolute():
        return location
    return str(Path(search_dir).resolve() / location)


def load_search_dir(search_dir: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """(search.json, results rows, front members) of a finished search directory; checkpoint
    paths stored relative to the directory come back absolute, under where it is now."""
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
            rows = list(csv.DictReader(fh))
        for row in rows:
            if row.get("checkpoint"):
                row["checkpoint"] = resolve_in_search_dir(row["checkpoint"], search_dir)
        return rows

    # pareto.csv also lists the trials kept off the front (``pareto`` False); older search
    # directories have no such column and hold only members.
    front = [r for r in read("pareto.csv") if r.get("pareto", "True") == "True"]
    return meta, read("results.csv"), front


@contextlib.contextmanager
def checkpoint_directory(search_dir, row: dict, meta: dict):
    """The trial's checkpoint as a local directory: its own path, or, when Ray's storage is a
    bucket (``--storage s3://...``), a temporary download (Ray's ``Checkpoint.to_directory``,
    through the same pyarrow filesystem and credentials the search used; the storage URI's
    query, e.g. ``?endpoint_override=...``, is applied to the checkpoint's URI too)."""
    location = row.get("checkpoint") or ""
    if "://" not in location:
        if not location or not Path(location).exists():
            raise SpecError(f"{search_dir}: trial {row['trial_id']} has no checkpoint at {location!r}")
        yield Path(location)
        return
    from ray.train import Checkpoint

    query = urlsplit(str(meta.get("ray_storage", ""))).query
    uri = f"{location}?{query}" if query and "?" not in location else location
    with tempfile.TemporaryDirectory(prefix="rayprune-export-") as tmp:
        try:
            Checkpoint(path=uri).to_directory(tmp)
        except Exception as err:  # missing object, no credentials, unreachable endpoint
            raise SpecError(f"{search_dir}: trial {row['trial_id']}: cannot download its checkpoint {location}: "
                            f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"
                            ) from None
        yield Path(tmp)
