"""The search driver: PreparedSearch -> Tuner(OptunaSearch, ASHA) -> Pareto front.

Runs on the driver: it ships the tokenised task to trials through Ray's object store
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

import dataclasses
import json
import os
import shutil
from pathlib import Path

from rayprune.config import SearchSpec
from rayprune.errors import SpecError
from rayprune.search.preflight import PreparedSearch
from rayprune.search.results import collect_rows, write_pareto
from rayprune.training.config import TrialSettings

__all__ = ["run_search", "reuse_actors"]


def _scheduler(spec: SearchSpec, settings: TrialSettings):
    from rayprune.search.schedulers import create_scheduler

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
    from rayprune.search.searcher import create_searcher
    from rayprune.training.teacher import ensure_teacher
    from rayprune.tracking.callback import MLflowTrackingCallback
    from rayprune.tracking.mlflow_tracker import SearchTracker, default_tracking_uri
    from rayprune.training.trainable import tune_trainable

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
                tune_config=TuneConfig(search_alg=create_searcher(spec), scheduler=_scheduler(spec, settings),
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
