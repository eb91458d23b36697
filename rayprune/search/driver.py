"""The search driver: PreparedSearch -> Tuner(OptunaSearch, ASHA) -> Pareto front.

Runs on the driver: it ships the tokenised task to trials through Ray's object store
(``tune.with_parameters``), trains the dense reference (also the teacher of distilling trials)
and computes the floor (:mod:`rayprune.search.criteria`), owns the MLflow tracking (trials never open the store), and writes the search directory::

    <output>/<name>/
      search.json      settings + data info (read by `rayprune pareto/export/train`)
      driver.lock      held by the live driver (one driver per search directory)
      ray/             Ray Tune storage (trial results and checkpoints), unless --storage /
                       `storage:` puts it at <storage>/<name> (a bucket or a shared mount)
      mlflow.db        default MLflow store (absolute sqlite URI), mlartifacts/ beside it
      optuna.db        the Optuna study (named after the search; `optuna-dashboard sqlite:///<dir>/optuna.db`)
      results.csv      one row per trial (last report)
      pareto.csv/.png/.html/.json   the front over full-budget trials judged ok, and why others are not
      reference/       the dense reference (and teacher), unless `reference: none`
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from rayprune.config import SearchSpec
from rayprune.errors import SpecError
from rayprune.search.preflight import PreparedSearch
from rayprune.search.results import collect_rows, relative_to_search_dir, write_pareto
from rayprune.training.config import TrialSettings

# Seconds between two redraws of the live front's plots (the front table, hypervolume and note
# are refreshed after every trial the refresh budget allows).
LIVE_PLOT_INTERVAL_S = 30.0
# The live refresh's budget: at most this share of the driver's wall time, with up to
# LIVE_REFRESH_BURST_S of refreshes at once (trials that end together).  A refresh reads every
# ended trial, so its cost grows with the trials ended; unbounded, a search of many short
# trials spent driver time growing with the square of its trials (benchmarks/bench_driver_scale.py).
# Trials of real length refresh after every one; the final front is always written.
LIVE_REFRESH_SHARE = 0.05
LIVE_REFRESH_BURST_S = 5.0

__all__ = ["run_search", "reuse_actors", "LiveFrontRefresh", "parent_tags"]


class LiveFrontRefresh:
    """The live MLflow view of a running search: after a trial ends, the front, its hypervolume
    and the parent's note are rewritten from the trials ended so far (``write(ended_results,
    plots)``).

    The plots (the costly part: matplotlib, plotly's HTML and a few MB of artifact) are redrawn
    at most every LIVE_PLOT_INTERVAL_S, so a search of many short trials does not spend its
    driver time drawing; the final front always gets them.  A refresh reads every ended trial,
    so refreshes run within a budget of LIVE_REFRESH_SHARE of the wall time (up to
    LIVE_REFRESH_BURST_S at once): a trial end that finds the budget spent is skipped, and a
    later one refreshes with what has ended by then.
    """

    def __init__(self, write, *, clock=time.monotonic):
        self._write, self._clock = write, clock
        self._last_plot = float("-inf")
        self._budget, self._budget_at = LIVE_REFRESH_BURST_S, clock()

    def __call__(self, ended_results: list) -> None:
        now = self._clock()
        self._budget = min(LIVE_REFRESH_BURST_S, self._budget + LIVE_REFRESH_SHARE * (now - self._budget_at))
        self._budget_at = now
        if self._budget <= 0:
            return
        plots = now - self._last_plot >= LIVE_PLOT_INTERVAL_S
        if plots:
            self._last_plot = now
        try:
            self._write(ended_results, plots)
        finally:
            self._budget -= self._clock() - now


def _scheduler(spec: SearchSpec, settings: TrialSettings):
    from rayprune.search.schedulers import create_scheduler

    return create_scheduler(
        spec.scheduler.kind, objectives=spec.objectives, time_attr="training_iteration",
        max_t=settings.num_evals, grace_period=min(spec.scheduler.grace_period, settings.num_evals),
        reduction_factor=spec.scheduler.reduction_factor, constraints=settings.constraints,
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


def run_search(prepared: PreparedSearch, *, resume: bool = False, log=print, **options) -> dict:
    """Run the search holding its directory's lock; return a summary (rows, front, hypervolume, paths).

    Before anything runs, refuses (:class:`~rayprune.errors.SpecError`) a directory another live
    driver holds, a finished search run again without ``resume``, and a resume whose space
    changed (:mod:`rayprune.search.lock`).  Options are :func:`_run_search`'s; ``storage``
    defaults to the space file's ``storage:``.  A ``tracking_uri`` or ``storage`` that is refused
    is refused before the lock, so it leaves no ``driver.lock`` (nor search directory) behind.
    """
    from rayprune.search.lock import SearchDirLock, check_start
    from rayprune.search.storage import resolve_storage
    from rayprune.tracking.uris import check_tracking_uri

    spec = prepared.spec
    if options.get("tracking_uri"):
        check_tracking_uri(options["tracking_uri"])
    resolve_storage(options.get("storage") or getattr(spec, "storage", None), prepared.search_dir, spec.name)
    with SearchDirLock(prepared.search_dir) as lock:
        if lock.taken_over:
            log(f"taking over {lock.path}: its driver (PID {lock.taken_over.get('pid')} on "
                f"{lock.taken_over.get('host')}) is gone")
        check_start(prepared.search_dir, spec.to_dict(), spec.raw_hash, spec.path, resume=resume)
        if options.get("storage") is None:
            options["storage"] = getattr(spec, "storage", None)
        return _run_search(prepared, resume=resume, log=log, **options)


def _run_search(prepared: PreparedSearch, *, storage: str | None = None, tracking_uri: str | None = None,
                address: str | None = None, resume: bool = False, verbose: int = 1, log=print, trainable=None,
                stop=None, live_front: bool = True) -> dict:
    """Run the search; return a summary (rows, front, hypervolume, paths).

    Args:
        trainable: the Ray function trainable, called as ``trainable(config, settings=...,
            data=prepared.data)``.  Default: the live one (:func:`rayprune.training.trainable.tune_trainable`),
            for which a dense teacher is trained first when a method distils.  A replayed search
            (:mod:`rayprune.search.replay`) passes its own, so replay and live runs share this path.
        stop: a Ray Tune ``Stopper`` (``RunConfig(stop=...)``), e.g. a trial-step budget.
        live_front: refresh the front, its plots and the MLflow parent after every trial that
            ends (~0.1 s each, plus the plots every LIVE_PLOT_INTERVAL_S), within a budget of
            LIVE_REFRESH_SHARE of the driver's time: when trials end faster than that allows,
            a trial end skips the refresh and a later one (or the final front) catches up.
            False writes them once at the end: what a benchmark replaying thousands of trials
            wants (benchmarks/bench_search.py).
    """
    import ray
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner

    from rayprune.search.failures import RetryReporter, install_retry_policy, max_retries
    from rayprune.search.lock import check_resume_files_trusted
    from rayprune.search.storage import check_reachable_by_all_nodes, is_ray_client, resolve_storage
    from rayprune.search.searcher import create_searcher, repeats_skipped, space_exhausted
    from rayprune.search.criteria import establish_criteria
    from rayprune.tracking.callback import MLflowTrackingCallback
    from rayprune.tracking.mlflow_tracker import SearchTracker, create_store_in_background, default_tracking_uri
    from rayprune.training.trainable import tune_trainable
    from rayprune.search.trial_workers import trial_worker_env

    spec, settings, search_dir = prepared.spec, prepared.settings, prepared.search_dir
    search_dir.mkdir(parents=True, exist_ok=True)
    meta_file = search_dir / "search.json"

    # Tracking (issue 11): a dead or wrong --tracking-uri is reported within seconds, before Ray
    # starts; MLflow calls get short timeouts, and what MLflow cannot take is journaled in the
    # search directory (rayprune.tracking.mlflow_tracker), so tracking never stalls the trials.
    from rayprune.tracking.uris import check_tracking_uri, configure_tracking_timeouts

    configure_tracking_timeouts()
    if tracking_uri:
        check_tracking_uri(tracking_uri)
    tracking_uri = tracking_uri or default_tracking_uri(search_dir)
    store_creation = create_store_in_background(tracking_uri)  # overlaps ray.init (bench_overhead.py)

    # Ray's new output engine ignores our live table (CLIReporter); use the classic one.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        # No address: a new in-process instance ("local"), as the CLI documents.  Ray's own
        # default would attach to whatever cluster /tmp/ray last recorded, even a dead one.
        _connect_ray(address or os.environ.get("RAY_ADDRESS") or "local", log=log, log_to_driver=verbose > 1,
                     runtime_env={"env_vars": trial_worker_env()}, configure_logging=verbose > 1)
    # Before the teacher or any trial: every node must reach the storage, and a resume must
    # not unpickle state that someone else could have written.
    ray_storage = resolve_storage(storage, search_dir, spec.name)
    check_reachable_by_all_nodes(ray_storage)
    experiment_path = ray_storage.experiment_path
    restore = resume and Tuner.can_restore(experiment_path)
    if restore and ray_storage.local_path is not None:
        check_resume_files_trusted(ray_storage.local_path, Path(experiment_path))
    elif restore:
        log(f"resuming from {experiment_path}: Ray unpickles its state, so whoever can write there "
            f"can run code in this driver")

    live = trainable is None
    from rayprune.search.replay import ReplayData

    if isinstance(prepared.data, ReplayData):  # the table recorded the floor and the reference
        settings, criteria, reference = *prepared.data.criteria(spec, settings), None
    else:
        settings, criteria, reference = establish_criteria(prepared, settings, train_reference=live, log=log)

    meta = {
        "spec_hash": spec.raw_hash, "spec": spec.to_dict(), "settings": dataclasses.asdict(settings),
        "data": prepared.data_info, "objectives": spec.objectives, "criteria": criteria.describe(),
        "ray_storage": relative_to_search_dir(ray_storage.experiment_path, search_dir),
    }
    meta_file.write_text(json.dumps(meta, indent=1, default=str))
    if Path(spec.path).is_file():
        shutil.copyfile(spec.path, search_dir / "space.yaml")

    if store_creation is not None:
        store_creation.join()
    metric_names = {settings.metric, "sparsity", "sparsity_encoder"} | set(prepared.data_info["metrics"])
    tracker = SearchTracker(tracking_uri, spec.name, search_dir, metric_names=metric_names,
                            tags=parent_tags(spec, criteria))
    tracker.log_search_params({
        "model": spec.model, "task": prepared.data_info["task"], "metric": settings.metric,
        "steps_per_trial": settings.steps, "num_samples": spec.num_samples,
        "max_concurrent": spec.max_concurrent, "scheduler": spec.scheduler.kind,
        "algorithm": spec.algorithm, "skip_duplicates": spec.search.skip_duplicates,
        "methods": ",".join(spec.methods()),
    })
    # The dense reference as a child run tagged role=reference, reference_<metric> and the floor on
    # the parent (the MLflow tracker gains log_reference with the tracking work of issue 9).
    log_reference = getattr(tracker, "log_reference", None)
    if log_reference is not None:
        log_reference(reference.metrics if reference is not None else None, metric=settings.metric,
                      floor=criteria.floor, info=_reference_info(reference, criteria, search_dir))

    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable if live else trainable, settings=settings, data=prepared.data),
        {"cpu": spec.cpu, "gpu": spec.gpu},
    )
    install_retry_policy()

    live_refresh = LiveFrontRefresh(
        lambda ended_results, plots: write_pareto(search_dir, collect_rows(ended_results, settings),
                                                  metric=settings.metric, criteria=criteria, tracker=tracker,
                                                  plots=plots))

    callbacks = [MLflowTrackingCallback(tracker, on_trial_end=live_refresh if live_front else None),
                 RetryReporter(log)]
    from ray.tune import CLIReporter

    reporter = CLIReporter(
        metric_columns={settings.metric: settings.metric, "sparsity": "sparsity", "step": "step"},
        parameter_columns={"method": "method", "target_sparsity": "target"},
        max_report_frequency=20, sort_by_metric=False,
    )
    run_config = RunConfig(
        name=ray_storage.experiment_name, storage_path=ray_storage.storage_path, callbacks=callbacks,
        checkpoint_config=CheckpointConfig(num_to_keep=max(1, spec.training.checkpoint_keep)),
        # Retries for trials whose node or worker died; own-fault errors are not retried.
        failure_config=FailureConfig(max_failures=max_retries(spec), fail_fast=False),
        progress_reporter=reporter, verbose=verbose, stop=stop,
    )
    import contextlib

    from rayprune.search.storage import restoring_into
    from rayprune.tracking.base import restoring_tracker

    restoring = contextlib.ExitStack()
    if restore:  # the directory may have been copied or moved since Ray pickled its state
        restoring.enter_context(restoring_into(search_dir))
        restoring.enter_context(restoring_tracker(tracker))
    try:
        if restore:
            # Unfinished trials (cut off by Ctrl-C or a dead driver) continue from their last
            # checkpoint.  Errored trials stay errored: an own-fault error (NaN, an exception in
            # the method: rayprune.search.failures.is_own_fault) would fail again the same way
            # from the same checkpoint, and a trial whose node died was already retried within
            # the run (FailureConfig(max_failures=failure.max_retries)) until it had no retries
            # left.  Ray's flags cannot tell the two apart, so neither is resumed nor restarted.
            tuner = Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
        else:
            tuner = Tuner(
                trainable,
                tune_config=TuneConfig(search_alg=create_searcher(spec, constraints=settings.constraints,
                                                                        search_dir=search_dir),
                                       scheduler=_scheduler(spec, settings),
                                       num_samples=spec.num_samples, reuse_actors=reuse_actors(spec)),
                run_config=run_config,
            )
        results = tuner.fit()
    except BaseException:
        tracker.finish("FAILED")
        raise
    finally:
        restoring.close()
    if is_ray_client():
        tracker.adopt_remote_progress()  # the callbacks ran on the head, with their own tracker
    rows = collect_rows(results, settings)
    # Ray returns normally after Ctrl-C (it saves the experiment state for Tuner.restore); the
    # front written then covers the trials that finished so far.  A finite space whose every
    # configuration was tried ends before num_samples (the searcher trains none twice): done.
    exhausted = space_exhausted(spec, tracker.trials_seen)
    interrupted = bool(tracker.unfinished_trials) or (tracker.trials_seen < spec.num_samples and not exhausted)
    unfinished = set(tracker.unfinished_trials)
    for row in rows:
        if row["trial_id"] in unfinished:
            row["status"] = "interrupted"
    summary = write_pareto(search_dir, rows, metric=settings.metric, criteria=criteria, tracker=tracker)
    if not isinstance(prepared.data, ReplayData):  # replayed curves have no model to ask
        from rayprune.search.samples import log_prediction_samples

        log_prediction_samples(tracker, summary["front"], settings, prepared.data, search_dir, log=log)
    # finish() replays what an outage kept back; what is still pending waits for `rayprune sync`.
    summary["tracking_pending"] = tracker.finish("KILLED" if interrupted else "FINISHED")
    summary["errors"] = results.num_errors
    summary["interrupted"] = interrupted
    summary["reference"] = _reference_info(reference, criteria, search_dir)
    summary["space_exhausted"] = exhausted
    summary["repeats_skipped"] = repeats_skipped(search_dir, spec.name)
    return summary


#: Attempts at a Ray Client connection whose per-client server died at start (below).
RAY_CLIENT_ATTEMPTS = 3


def _connect_ray(address: str, *, log=print, **options) -> None:
    """``ray.init`` at ``address``; a cluster that cannot be reached is the user's to fix, so it
    is a :class:`SpecError` naming the address and what to check, not Ray's traceback.

    Ray Client (``ray://``): the head's proxy forks one server per client, and in Ray 2.60 that
    fork intermittently crashes in gRPC (ray-project/ray#63202: "Initialization failure from
    server", the server's logs empty; 2 of our first 4 connections on a 2-core machine), so that
    failure is retried a few times before it is reported."""
    import ray

    _check_port_answers(address)
    for attempt in range(1, RAY_CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, include_dashboard=False, **options)
            return
        except ConnectionAbortedError as err:
            if not address.startswith("ray://") or attempt == RAY_CLIENT_ATTEMPTS or \
                    "Initialization failure from server" not in str(err):
                return _connection_error(address, err)
            log(f"Ray Client: the head's server for this client failed to start (attempt {attempt} of "
                f"{RAY_CLIENT_ATTEMPTS}; a known Ray bug, ray-project/ray#63202); connecting again")
            ray.shutdown()
        except (ConnectionError, TimeoutError, ModuleNotFoundError, ValueError) as err:
            return _connection_error(address, err)


def _connection_error(address: str, err: Exception) -> None:
    """Re-raise ``err`` of ``ray.init(address)`` as a :class:`SpecError` naming the address and
    what to check; a local instance that failed to start is not the user's to fix: re-raised."""
    if address == "local" and not isinstance(err, ModuleNotFoundError):
        raise err
    client = address.startswith("ray://")
    if client and (isinstance(err, ModuleNotFoundError) or "ray[client]" in str(err)):
        raise SpecError(f"--address {address}: Ray Client needs the ray[client] extra "
                        f"(pip install 'rayprune[client]')") from None
    first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else "no answer"
    hint = ("the head's Ray Client server (`ray start --head --ray-client-server-port`, 10001 by default)"
            if client else "the head's GCS port (`ray start --head --port`, 6379 by default)")
    raise SpecError(f"--address {address}: cannot connect to the Ray cluster ({type(err).__name__}: {first_line}); "
                    f"{hint} must be reachable from here, and with token authentication RAY_AUTH_TOKEN or "
                    f"RAY_AUTH_TOKEN_PATH must hold the cluster's token (docs/cluster.md)") from None


def _check_port_answers(address: str, timeout_s: float = 5.0) -> None:
    """Refuse, within seconds, a ``HOST:PORT`` or ``ray://HOST:PORT`` that nothing listens on:
    ``ray.init`` on a dead GCS address retries for minutes before it gives up."""
    import socket

    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if address in ("local", "auto") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        what = "Ray Client server" if address.startswith("ray://") else "Ray head (GCS)"
        raise SpecError(f"--address {address}: no {what} answers at {host}:{port} ({err.strerror or err}); "
                        f"start the cluster first (`ray start --head`), or check the host, the port and the "
                        f"firewall (docs/cluster.md)") from None


def parent_tags(spec: SearchSpec, criteria) -> dict[str, str]:
    """The tags of the search's MLflow parent run: the space file, the model and, when the dense
    reference is not clearly above the floor (a live search gets that far only with
    ``reference.require_above_floor: false``; a replay as its table recorded),
    ``rayprune.reference_below_floor`` saying what was measured."""
    from rayprune.search.criteria import reference_below_floor

    tags = {"rayprune.space": spec.path, "rayprune.model": spec.model}
    below_floor = reference_below_floor(criteria)
    if below_floor:
        tags["rayprune.reference_below_floor"] = below_floor + "; the search ran anyway"
    return tags


def _reference_info(reference, criteria, search_dir) -> dict:
    """The reference and floor as the tracker, ``search.json`` readers and the CLI show them.
    A reference trained into the search directory is named relative to it (``reference``), so
    a copied or moved directory does not name the old place."""
    from rayprune.search.criteria import reference_below_floor

    if reference is None:
        return {"floor": criteria.floor, "reference": "none"}
    info = {"floor": criteria.floor, "reference": relative_to_search_dir(reference.path, search_dir),
            "reference_metric": criteria.reference_metric,
            "reference_trained": reference.trained, "reference_steps": reference.steps}
    below_floor = reference_below_floor(criteria)
    if below_floor:  # the search ran anyway (reference.require_above_floor: false)
        info["reference_below_floor"] = below_floor
    return info
