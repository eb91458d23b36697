"""The search driver: SearchSpec -> preflight -> Tuner(OptunaSearch, ASHA) -> Pareto front.

Runs on the driver: it tokenises the task once and ships it to trials through Ray's object store
(``tune.with_parameters``), trains the shared teacher if a method needs one, owns the MLflow
tracking (trials never open the store), and writes the search directory::

    <output>/<name>/
      search.json      settings + data info (read by `rayprune pareto/export/train`)
      ray/             Ray Tune storage (trial results and checkpoints)
      mlflow.db        default MLflow store (absolute sqlite URI), mlartifacts/ beside it
      results.csv      one row per trial (last report)
      pareto.csv/.png/.html   the front over trials that ran their full budget
      teacher/         the dense teacher, when one was needed
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from rayprune.search_space import SearchSpec, SpecError, define_by_run
from rayprune.trial import TrialSettings

__all__ = ["prepare_search", "run_search", "PreparedSearch", "collect_rows", "write_pareto", "load_search_dir"]


@dataclass
class PreparedSearch:
    spec: SearchSpec
    settings: TrialSettings
    data: Any  # TokenizedTask
    search_dir: Path
    data_info: dict


def _data_spec(spec: SearchSpec):
    from rayprune.data import DataSpec

    fields = {f.name for f in dataclasses.fields(DataSpec)}
    kwargs = {k: v for k, v in spec.data.items() if k in fields}
    try:
        return DataSpec(**kwargs)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{spec.path}: data: {err}") from None


def prepare_search(spec: SearchSpec, *, output: str | Path = "rayprune_runs", data_dir: str | None = None,
                   log=print) -> PreparedSearch:
    """Preflight: the model, tokenizer and dataset resolve, the metric exists; tokenise once.

    Raises:
        SpecError: anything the user must fix, naming the file and key.
    """
    from rayprune.data import load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer, resolve_model_path

    try:
        task = load_task(_data_spec(spec), data_dir=data_dir)
    except SpecError:
        raise
    except (ValueError, FileNotFoundError) as err:
        raise SpecError(f"{spec.path}: data: {err}") from None
    metric = spec.metric or task.metrics[0]
    if metric not in task.metrics:
        raise SpecError(f"{spec.path}: objective.metric: {metric!r} is not a metric of task "
                        f"{task.name!r}; allowed: {list(task.metrics)}")
    spec.metric = metric  # the objective defaults to the task's primary metric
    model_name = spec.model
    local = Path(os.path.expanduser(model_name))
    if not model_name.startswith("bundled:") and local.exists():
        model_name = str(local.resolve())  # trials run in their own directories
    try:
        _, tokenizer = load_model_and_tokenizer(model_name, num_labels=task.num_labels, is_regression=task.is_regression)
    except ValueError as err:
        raise SpecError(f"{spec.path}: model: {err}") from None
    data = tokenize_task(task, tokenizer, max_seq_length=int(spec.data.get("max_seq_length", 128)))
    training = spec.training
    steps = training["steps"]
    if steps is None:
        steps = max(1, int(math.ceil(training["epochs"] * len(data.train) / training["batch_size"])))
    settings = TrialSettings(
        model=model_name, metric=metric, steps=int(steps), batch_size=training["batch_size"],
        eval_batch_size=training["eval_batch_size"], eval_interval=min(training["eval_interval"], int(steps)),
        learning_rate=training["learning_rate"], weight_decay=training["weight_decay"],
        warmup_ratio=training["warmup_ratio"], max_grad_norm=training["max_grad_norm"],
        seed=training["seed"],
        # Fixed thread count: `rayprune train` on an exported config then reproduces the trial.
        threads=training["threads_per_trial"] or max(1, int(spec.cpu)),
    )
    search_dir = (Path(output) / spec.name).resolve()
    data_info = {
        "task": task.name, "num_labels": task.num_labels, "is_regression": task.is_regression,
        "metrics": list(task.metrics), "train_examples": len(data.train),
        "selection_examples": len(data.selection), "eval_examples": len(data.eval),
        "max_seq_length": int(spec.data.get("max_seq_length", 128)), "data_dir": data_dir,
    }
    return PreparedSearch(spec, settings, data, search_dir, data_info)


class FidelityAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna PRUNED for trials stopped before their full budget.

    Ray's OptunaSearch reports scheduler-stopped trials COMPLETE with their partial-budget values
    (ECOSYSTEM.md pain 2), which would mix rung-1 accuracies at low sparsity into TPE's model and
    into ``study.best_trials``.  A trial's last result carries ``budget_fraction``; below 1 it was
    stopped early.
    """

    def on_trial_complete(self, trial_id, result=None, error=False):
        if (not error and result and trial_id in self._ot_trials
                and trial_id not in self._completed_trials
                and float(result.get("budget_fraction", 1.0)) < 1.0 - 1e-9):
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def _searcher(spec: SearchSpec):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=spec.seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=spec.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=spec.seed),
    }
    names = [m for m, _ in spec.objectives]
    modes = [d for _, d in spec.objectives]
    searcher = FidelityAwareOptunaSearch(
        space=define_by_run(spec), metric=names, mode=modes, sampler=samplers[spec.algorithm](),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)


def _scheduler(spec: SearchSpec, settings: TrialSettings):
    from rayprune.schedulers import create_scheduler

    return create_scheduler(
        spec.scheduler["kind"], objectives=spec.objectives, time_attr="training_iteration",
        max_t=settings.num_evals, grace_period=min(int(spec.scheduler["grace_period"]), settings.num_evals),
        reduction_factor=float(spec.scheduler["reduction_factor"]),
    )


def reuse_actors(spec: SearchSpec) -> bool:
    """Whether Ray may run the next trial in a finished trial's worker process.

    Yes for CPU-only searches: a new worker re-imports torch and transformers (~5 s on a 2-core
    machine, ~7 % of a 70 s trial: benchmarks/bench_overhead.py), and a function trainable's
    thread has ended (or is parked in ``tune.report`` when ASHA stops it) before Ray reuses the
    process.  No when trials hold GPUs: memory that a finished trial leaves in the CUDA caching
    allocator would be inherited by the next (ECOSYSTEM.md pain 10), so each trial gets a fresh
    process.
    """
    return not spec.gpu


def run_search(prepared: PreparedSearch, *, tracking_uri: str | None = None, address: str | None = None,
               resume: bool = False, verbose: int = 1, log=print) -> dict:
    """Run the search; return a summary (rows, front, hypervolume, paths)."""
    import ray
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner

    from rayprune.methods import get_method
    from rayprune.teacher import ensure_teacher
    from rayprune.tracking import MLflowTrackingCallback, SearchTracker, default_tracking_uri
    from rayprune.trial import tune_trainable

    spec, settings, search_dir = prepared.spec, prepared.settings, prepared.search_dir
    search_dir.mkdir(parents=True, exist_ok=True)
    meta_file = search_dir / "search.json"
    if meta_file.exists() and not resume:
        old = json.loads(meta_file.read_text())
        if old.get("spec_hash") != spec.raw_hash:
            raise SpecError(f"{search_dir} already holds a search from a different space file; "
                            f"use another `name:` or --output, or --resume with the same file")
    if resume and meta_file.exists():
        old = json.loads(meta_file.read_text())
        if old.get("spec_hash") != spec.raw_hash:
            raise SpecError(f"{spec.path}: the space changed since the search started; "
                            f"Ray Tune cannot restore a search into a different space")

    if any(get_method(m).needs_teacher for m in spec.methods()):
        settings = dataclasses.replace(settings, teacher_dir=ensure_teacher(
            search_dir, settings, prepared.data, model=spec.teacher.get("model"),
            steps=spec.teacher.get("steps"), learning_rate=spec.teacher.get("learning_rate"), log=log))

    meta = {
        "spec_hash": spec.raw_hash, "spec": spec.to_dict(), "settings": dataclasses.asdict(settings),
        "data": prepared.data_info, "objectives": spec.objectives,
    }
    meta_file.write_text(json.dumps(meta, indent=1, default=str))
    if Path(spec.path).is_file():
        shutil.copyfile(spec.path, search_dir / "space.yaml")

    tracking_uri = tracking_uri or default_tracking_uri(search_dir)
    metric_names = {settings.metric, "sparsity", "sparsity_encoder"} | set(prepared.data_info["metrics"])
    tracker = SearchTracker(tracking_uri, spec.name, search_dir, metric_names=metric_names,
                            tags={"rayprune.space": spec.path, "rayprune.model": spec.model})
    tracker.log_search_params({
        "model": spec.model, "task": prepared.data_info["task"], "metric": settings.metric,
        "steps_per_trial": settings.steps, "num_samples": spec.num_samples,
        "max_concurrent": spec.max_concurrent, "scheduler": spec.scheduler["kind"],
        "algorithm": spec.algorithm, "methods": ",".join(spec.methods()),
    })

    # Ray's new output engine ignores our live table (CLIReporter); use the classic one.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")
               if k in os.environ}
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose > 1,
                 runtime_env={"env_vars": env} if env else None, configure_logging=verbose > 1)

    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, settings=settings, data=prepared.data),
        {"cpu": spec.cpu, "gpu": spec.gpu},
    )
    storage = str((search_dir / "ray").resolve())
    callbacks = [MLflowTrackingCallback(tracker)]
    from ray.tune import CLIReporter

    reporter = CLIReporter(
        metric_columns={settings.metric: settings.metric, "sparsity": "sparsity", "step": "step"},
        parameter_columns={"method": "method", "target_sparsity": "target"},
        max_report_frequency=20, sort_by_metric=False,
    )
    run_config = RunConfig(
        name="tune", storage_path=storage, callbacks=callbacks,
        checkpoint_config=CheckpointConfig(num_to_keep=max(1, int(spec.training["checkpoint_keep"]))),
        failure_config=FailureConfig(max_failures=0, fail_fast=False),
        progress_reporter=reporter, verbose=verbose,
    )
    experiment_path = os.path.join(storage, "tune")
    try:
        if resume and Tuner.can_restore(experiment_path):
            tuner = Tuner.restore(experiment_path, trainable=trainable, resume_errored=True)
        else:
            tuner = Tuner(
                trainable,
                tune_config=TuneConfig(search_alg=_searcher(spec), scheduler=_scheduler(spec, settings),
                                       num_samples=spec.num_samples, reuse_actors=reuse_actors(spec)),
                run_config=run_config,
            )
        results = tuner.fit()
    except BaseException:
        tracker.finish("FAILED")
        raise
    rows = collect_rows(results, settings)
    # Ray returns normally after Ctrl-C (it saves the experiment state for Tuner.restore); the
    # front written then covers the trials that finished so far.
    interrupted = bool(tracker.unfinished_trials) or tracker.trials_seen < spec.num_samples
    unfinished = set(tracker.unfinished_trials)
    for row in rows:
        if row["trial_id"] in unfinished:
            row["status"] = "interrupted"
    summary = write_pareto(search_dir, rows, metric=settings.metric, tracker=tracker)
    tracker.finish("KILLED" if interrupted else "FINISHED")
    summary["errors"] = results.num_errors
    summary["interrupted"] = interrupted
    return summary


def collect_rows(results, settings: TrialSettings) -> list[dict]:
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
                "complete" if metrics.get("budget_fraction", 0.0) >= 1 - 1e-9 else "stopped"),
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
