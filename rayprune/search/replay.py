"""Replayed searches: a recorded learning-curve table stands in for training.

A curve table (``benchmarks/curves/*.parquet``, written by ``benchmarks/record_curves.py``) holds
every evaluation of every configuration of a grid search: the metric, the measured sparsity,
``retained``, the training loss, the step and the trial's own seconds.  ``rayprune search
--space F --replay TABLE`` runs the *same* driver as a live search (Tuner, OptunaSearch with its
fidelity handling, the schedulers, the tracking, the front) but with :func:`replay_trainable`,
which reports a configuration's recorded evaluations one by one instead of training.  Each
report waits its recorded duration times ``time_scale`` so that concurrent trials interleave as
they did live.  That makes comparing search settings (sampler, scheduler, grace period,
reduction factor) cost seconds instead of CPU-hours.

The table is the budget: the trials' step count, evaluation interval, metric, dense reference
and floor come from it, so a replay loads no model and no data (no preflight, no torch import
here).  The space must be a grid of the table: every searched value a ``choice`` whose every
combination was recorded; :func:`check_grid` raises one :class:`SpecError` naming the first
missing grid point before any trial starts.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rayprune.config import SearchSpec
from rayprune.config.grid import canonical_value, config_key, grid_points
from rayprune.errors import SpecError

__all__ = [
    "CurveTable", "ReplayData", "write_curve_table", "read_curve_table", "read_trial_reports",
    "config_key", "check_grid", "grid_points", "prepare_replay", "replay_trainable",
    "ReplayedTrialFailed", "DEFAULT_TIME_SCALE",
]

#: Recorded seconds -> replayed seconds.  A 30 s trial replays in 0.3 s.
DEFAULT_TIME_SCALE = 0.01

_META_KEY = b"rayprune.curves"
# Columns every table has, besides the metric columns named in its metadata.
_BASE_COLUMNS = ("config_id", "config", "method", "target_sparsity", "learning_rate", "report", "step",
                 "budget_fraction", "sparsity", "sparsity_encoder", "retained", "train_loss", "seconds", "error")
# Row keys that describe the row (its config, its place), not what the trial reported.
_NOT_REPORTED = ("config", "config_id", "report", "error", "method", "learning_rate")


@dataclass
class CurveTable:
    """A curve table in memory: metadata and, per grid point, its reports in order.

    Attributes:
        meta: what the table was recorded with: ``metric``, ``metrics``, ``floor``,
            ``reference`` (the dense model's metric), ``settings`` (steps, eval_interval, ...),
            ``data_info``, ``command``, ``machine``.
        curves: config key (:func:`config_key`) -> list of report dicts, in order.
        configs: config key -> the flat config it was recorded with.
    """

    meta: dict
    curves: dict[str, list[dict]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.meta["metric"]

    @property
    def num_reports(self) -> int:
        """Reports of a configuration that ran its full budget."""
        return max((len(c) for c in self.curves.values()), default=0)

    @property
    def steps(self) -> int:
        return int(self.meta["settings"]["steps"])

    def final(self) -> dict[str, dict]:
        """config key -> its last report (the full-budget result)."""
        return {k: c[-1] for k, c in self.curves.items() if c}

    def total_trial_steps(self) -> int:
        """Optimizer steps of running every configuration of the table to its end."""
        return sum(int(c[-1]["step"]) for c in self.curves.values() if c)


def write_curve_table(rows: list[dict], path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write report rows (one per evaluation, :data:`_BASE_COLUMNS` plus the metric columns
    ``meta["metrics"]``) as Parquet with ``meta`` in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(_BASE_COLUMNS) + [m for m in meta["metrics"] if m not in _BASE_COLUMNS]
    missing = [c for c in ("metric", "metrics", "floor", "reference", "settings") if c not in meta]
    if missing:
        raise ValueError(f"curve table metadata needs {missing}")
    rows = sorted(rows, key=lambda r: (int(r["config_id"]), int(r["report"])))
    data = {c: [r.get(c) for r in rows] for c in columns}
    table = pa.table(data).replace_schema_metadata({_META_KEY: json.dumps(dict(meta), default=str).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def read_curve_table(path: str | Path) -> CurveTable:
    """Read a table written by :func:`write_curve_table`, checking its metadata and columns
    once, up front (:func:`_check_meta`, :func:`_check_columns`): a replay of a table that lacks
    what its trials report would otherwise fail in every trial, or as a traceback here.

    Raises:
        SpecError: the file is missing, a directory, not a Parquet file, or not a complete
            rayprune curve table (the metadata or column at fault named).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        tables = sorted(p.name for p in path.glob("*.parquet"))
        inside = f"; it holds {', '.join(tables)}" if tables else ""
        raise SpecError(f"{path}: a directory, not a replay table; --replay takes a curve table file "
                        f"(benchmarks/curves/*.parquet){inside}")
    if not path.is_file():
        raise SpecError(f"{path}: replay table not found")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a non-Parquet file
        raise SpecError(f"{path}: not a Parquet curve table ({err})") from None
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise SpecError(f"{path}: a Parquet file without rayprune curve metadata "
                        f"(write it with benchmarks/record_curves.py)")
    meta = _check_meta(path, raw)
    _check_columns(path, table, meta)
    curves = CurveTable(meta=meta)
    for row in table.to_pylist():
        config = _row_config(path, row)
        key = config_key(config)
        curves.configs.setdefault(key, config)
        curves.curves.setdefault(key, []).append(row)
    for reports in curves.curves.values():
        reports.sort(key=lambda r: r["report"])
    return curves


def _check_meta(path: Path, raw: bytes) -> dict:
    """The table's metadata as a dict, with what a replay reads from it: ``metric``,
    ``metrics``, ``floor``, ``reference``, ``settings.steps`` / ``eval_interval``.

    Raises:
        SpecError: naming the metadata key (``rayprune.curves`` in the Parquet schema) at fault.
    """
    where = f"{path}: curve metadata (rayprune.curves)"
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise SpecError(f"{where}: not valid JSON ({err}); write the table with benchmarks/record_curves.py") from None
    if not isinstance(meta, dict):
        raise SpecError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in ("metric", "metrics", "floor", "reference", "settings") if k not in meta]
    if missing:
        raise SpecError(f"{where}: missing {missing} (a table written by write_curve_table has them)")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    metric, metrics, settings = meta["metric"], meta["metrics"], meta["settings"]
    if not isinstance(metric, str) or not metric:
        raise SpecError(f"{where}: metric: expected a metric name, got {metric!r}")
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise SpecError(f"{where}: metrics: expected a list of metric names, got {metrics!r}")
    if not number(meta["floor"]):
        raise SpecError(f"{where}: floor: expected a finite number, got {meta['floor']!r}")
    if meta["reference"] is not None and not number(meta["reference"]):
        raise SpecError(f"{where}: reference: expected a finite number or null, got {meta['reference']!r}")
    if not isinstance(settings, dict):
        raise SpecError(f"{where}: settings: expected an object, got {type(settings).__name__}")
    for key in ("steps", "eval_interval"):
        value = settings.get(key)
        if key == "steps" or value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{where}: settings.{key}: expected an integer >= 1, got {value!r}")
    if "data_info" in meta and not isinstance(meta["data_info"], dict):
        raise SpecError(f"{where}: data_info: expected an object, got {type(meta['data_info']).__name__}")
    return meta


def _check_columns(path: Path, table, meta: dict) -> None:
    """Every column :func:`write_curve_table` writes is there (the metric ones included), and
    the ones each replayed report needs a value from are numbers.

    Raises:
        SpecError: naming the missing or mistyped columns and the columns the table has.
    """
    import pyarrow as pa

    required = dict.fromkeys([*_BASE_COLUMNS, meta["metric"], *meta["metrics"]])
    missing = [c for c in required if c not in set(table.column_names)]
    if missing:
        raise SpecError(f"{path}: the replay table lacks the column(s) {missing} (its metric and what every "
                        f"report replays; benchmarks/record_curves.py writes them); it has {table.column_names}")
    for column in ("report", "step", "seconds", "sparsity", meta["metric"]):
        kind = table.schema.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise SpecError(f"{path}: column {column!r}: expected numbers, got {kind}")
    kind = table.schema.field("config").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise SpecError(f"{path}: column 'config': expected JSON strings, got {kind}")
    for column in ("config", "report", "seconds"):
        if table.column(column).null_count:
            raise SpecError(f"{path}: column {column!r}: {table.column(column).null_count} empty value(s)")


def _row_config(path: Path, row: dict) -> dict:
    """A row's flat config (its ``config`` column, a JSON object)."""
    try:
        config = json.loads(row["config"])
    except ValueError as err:
        config = err
    if not isinstance(config, dict):
        raise SpecError(f"{path}: column 'config' of config_id {row.get('config_id')} report {row.get('report')}: "
                        f"expected a JSON object of the trial's config, got {row['config'][:100]!r}")
    return config


def read_trial_reports(experiment_dir: str | Path) -> list[dict]:
    """Every report of every trial of a Ray Tune experiment directory, from the trials'
    ``result.json`` (one JSON object per report) and ``params.json`` (the config).

    Each row is the reported dict plus ``config`` (the flat config), ``trial_dir`` and ``error``
    (the last line of the trial's ``error.txt`` when it raised, else None).
    """
    rows = []
    for trial_dir in sorted(p for p in Path(experiment_dir).iterdir() if p.is_dir()):
        result_file, params_file = trial_dir / "result.json", trial_dir / "params.json"
        if not result_file.is_file() or not params_file.is_file():
            continue
        config = json.loads(params_file.read_text())
        error = None
        if (trial_dir / "error.txt").is_file():
            lines = [line.strip() for line in (trial_dir / "error.txt").read_text().splitlines() if line.strip()]
            error = lines[-1][:500] if lines else "error"
        for line in result_file.read_text().splitlines():
            if line.strip():
                report = json.loads(line)
                report.pop("config", None)
                rows.append({**report, "config": config, "trial_dir": trial_dir.name, "error": error})
    return rows


# ---------------------------------------------------------------------------------- the grid
def check_grid(spec: SearchSpec, table: CurveTable, table_path: str | Path) -> None:
    """Raise one :class:`SpecError` naming the first grid point of ``spec`` that ``table`` did
    not record (with the values the table has for each key); return if all are recorded."""
    for point in grid_points(spec):
        if config_key(point) in table.curves:
            continue
        recorded: dict[str, set] = {}
        for config in table.configs.values():
            for k, v in config.items():
                recorded.setdefault(k, set()).add(canonical_value(v))
        known = "; ".join(f"{k} in {sorted(v, key=str)}" for k, v in sorted(recorded.items()))
        unknown = sorted(set(point) - set(recorded))
        hint = f"keys the table does not have: {unknown}" if unknown else f"the table has {known}"
        shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise SpecError(f"{spec.path}: space: grid point {{{shown}}} is not in the replay table "
                        f"{table_path} ({hint})")


# ---------------------------------------------------------------------------------- the run
class ReplayedTrialFailed(RuntimeError):
    """A recorded trial that failed live (``TrialFailed``: diverged or under-pruned) fails again
    after its recorded reports, with the recorded reason; the results treat it as failed."""


@dataclass
class ReplayData:
    """What a replayed trial receives through Ray's object store instead of a tokenised task,
    and what the driver judges replayed trials by (the recorded floor and reference)."""

    curves: dict[str, list[dict]]
    metric: str
    floor: float
    reference_metric: float | None
    eval_examples: int
    time_scale: float = DEFAULT_TIME_SCALE

    def criteria(self, spec: SearchSpec, settings):
        """(trial settings, :class:`~rayprune.search.results.Criteria`) of a replayed search:
        the table's floor and reference, the space's ``objective`` bounds and constraints."""
        import dataclasses

        from rayprune.search.criteria import objective_options
        from rayprune.search.results import Criteria

        objective = objective_options(spec)
        criteria = Criteria(metric=self.metric, floor=self.floor, eval_examples=self.eval_examples,
                            reference_metric=self.reference_metric, min_metric=objective["min_metric"],
                            min_retained=objective["min_retained"], constraints=objective["constraints"])
        settings = dataclasses.replace(settings, reference_metric=self.reference_metric,
                                       constraints=dict(objective["constraints"]))
        return settings, criteria


def replay_trainable(config: dict, *, settings, data: ReplayData) -> None:
    """Ray Tune function trainable that reports ``config``'s recorded evaluations in order,
    each after its recorded duration times ``data.time_scale``.

    Each report is the recorded row's metrics (the metric, ``sparsity``, ``retained``,
    ``train_loss``, ``step``, ``budget_fraction``, ``seconds``, ...), so the schedulers, the
    searcher, the tracking and the front see what they saw live.
    """
    from ray import tune

    reports = data.curves.get(config_key(config))
    if reports is None:  # check_grid runs before any trial; this is a table/space mismatch bug
        raise KeyError(f"config {config!r} is not in the replay table")
    previous = 0.0
    for row in reports:
        seconds = float(row["seconds"])
        delay = max(0.0, seconds - previous) * data.time_scale
        previous = seconds
        if delay > 0:
            time.sleep(delay)
        metrics = {k: v for k, v in row.items() if k not in _NOT_REPORTED and v is not None}
        metrics["replayed"] = True
        metrics["replayed_at"] = time.time()  # orders reports across trials (benchmarks/bench_search.py)
        tune.report(metrics)
    error = reports[-1].get("error") if reports else None
    if error:
        raise ReplayedTrialFailed(error)


def prepare_replay(spec: SearchSpec, table_path: str | Path, *, output: str | Path = "rayprune_runs",
                   time_scale: float = DEFAULT_TIME_SCALE):
    """The replay's counterpart of :func:`rayprune.search.preflight.prepare_search`: settings
    and data info from the table, the grid checked; no model, tokenizer or dataset is loaded.

    Raises:
        SpecError: the table is unreadable, the space's metric or step count differ from the
            table's, or a grid point of the space is not in the table.
    """
    from rayprune.search.preflight import PreparedSearch
    from rayprune.training.config import TrialSettings

    table = read_curve_table(table_path)
    metric = table.metric
    if spec.metric and spec.metric != metric:
        raise SpecError(f"{spec.path}: objective.metric: {spec.metric!r}, but the replay table {table_path} "
                        f"recorded {metric!r}; allowed: [{metric!r}]")
    recorded = table.meta["settings"]
    steps = getattr(spec.training, "steps", None)
    if steps is not None and int(steps) != int(recorded["steps"]):
        raise SpecError(f"{spec.path}: training.steps: {steps}, but the replay table "
                        f"{table_path} recorded {recorded['steps']}-step trials; allowed: [{recorded['steps']}]")
    if not math.isfinite(time_scale) or time_scale < 0:
        raise SpecError(f"replay time scale must be a finite number >= 0, got {time_scale}")
    check_grid(spec, table, table_path)
    spec.metric = metric
    fields = {"model", "steps", "batch_size", "eval_batch_size", "eval_interval", "learning_rate",
              "weight_decay", "warmup_ratio", "max_grad_norm", "seed"}
    settings = TrialSettings(metric=metric, **{k: v for k, v in recorded.items() if k in fields})
    data_info = {**table.meta.get("data_info", {}), "metrics": list(table.meta["metrics"]),
                 "replay_table": str(Path(table_path).resolve()), "floor": table.meta["floor"],
                 "reference": table.meta["reference"]}
    data = ReplayData(curves=dict(table.curves), metric=metric, floor=float(table.meta["floor"]),
                      reference_metric=table.meta.get("reference"),
                      eval_examples=int(table.meta.get("data_info", {}).get("eval_examples", 0)),
                      time_scale=time_scale)
    search_dir = (Path(output) / spec.name).resolve()
    return PreparedSearch(spec, settings, data, search_dir, data_info)
