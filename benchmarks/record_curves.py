"""Record a learning-curve table: one FIFO grid search with rayprune on real trials, every
evaluation kept, written as Parquet for ``rayprune search --replay``.

    flock /tmp/rayprune-heavy.lock timeout 1500 .venv/bin/python benchmarks/record_curves.py

The grid (methods x target sparsities x learning rates) is run as one ``rayprune`` search:
the whole grid as ``points_to_evaluate``, ``num_samples`` = its size, the ``fifo`` scheduler,
so every configuration runs its full budget through the same driver, Tuner and tracking as any
search.  The rows are read back from Ray's storage (each trial's ``result.json``), not from the
driver's memory.  Trials here save no checkpoints: a checkpoint of MiniLM with its optimizer
state is ~270 MB, and a replay never resumes a trial.

The dense reference (a dense fine-tune at the same budget, best of the grid's learning rates,
on the driver before the search) and the floor (the best constant predictor's metric on the
eval split) go into the table's metadata: the hypervolume reference point is the floor.

The defaults fit a 2-CPU machine in ~15 minutes by shortening the trials, not the grid: 1,000
train sentences (900 after the selection split), 200 eval sentences, sequence length 24, 40 steps
of batch 16, an evaluation every 10 steps.  One PLATON trial of 64 steps at sequence length 32
took 85 s on one thread of the shared 2-core machine (load 4), so 90 such trials would not fit.
``--limit N`` runs only the first N grid points (to time a trial).

``--schedule-start/--schedule-end`` fix every trial's sparsity ramp (a one-value grid dimension,
so a replay space names it too); the second table in ``benchmarks/curves`` was recorded with

    .venv/bin/python benchmarks/record_curves.py --steps 80 --eval-interval 8 --schedule-start 0.05 \
        --schedule-end 0.25 --name sst2_minilm_long --out benchmarks/curves/sst2_minilm_long.parquet

(~40 minutes on 2 CPUs): trials that fine-tune 60 steps at their target after the ramp.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_GLUE = ROOT.parent / "shared" / "data" / "glue"
DEFAULT_METHODS = ["magnitude", "movement", "soft_movement", "seven", "platon", "mgpp"]
DEFAULT_SPARSITIES = [0.5, 0.65, 0.8, 0.9, 0.95]
DEFAULT_LEARNING_RATES = [1e-4, 2e-4, 4e-4]


def recording_trainable(config: dict, *, settings, data) -> None:
    """The live trial (:func:`rayprune.training.loop.run_training`) reporting every evaluation
    through ``tune.report``, without checkpoints (see the module docstring)."""
    from ray import tune

    from rayprune.training.config import TrialConfig
    from rayprune.training.loop import run_training

    run_training(TrialConfig.from_flat(config, settings), settings, data,
                 report=lambda metrics, _writer: tune.report(metrics))


def space_document(args, grid: list[dict]) -> dict:
    """The search-space file of the recording (written beside the table's sidecar)."""
    return {
        "name": args.name,
        "model": args.model,
        "data": {"task": "sst2", "max_train_samples": args.max_train, "max_eval_samples": args.max_eval,
                 "max_seq_length": args.max_seq_length, "seed": 0},
        "objective": {"metric": "accuracy"},
        "training": {"steps": args.steps, "batch_size": args.batch_size, "eval_interval": args.eval_interval,
                     "eval_batch_size": 128, "seed": 0, "threads_per_trial": 1},
        "budget": {"num_samples": len(grid), "max_concurrent": args.max_concurrent},
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"algorithm": "random", "seed": 0},
        "space": {key: {"choice": values} for key, values in grid_axes(args).items()},
        "points_to_evaluate": grid,
    }


def grid_axes(args) -> dict[str, list]:
    """The grid's dimensions: method x target x learning rate, and the schedule's ramp when it is
    fixed on the command line (one value each: every trial of the table shares it)."""
    axes = {"method": args.methods, "target_sparsity": args.sparsities, "learning_rate": args.learning_rates}
    if args.schedule_start is not None:
        axes["schedule.start"] = [args.schedule_start]
    if args.schedule_end is not None:
        axes["schedule.end"] = [args.schedule_end]
    return axes


def dense_reference(prepared, learning_rates: list[float], log=print) -> dict:
    """Dense fine-tunes at the trials' budget, one per learning rate; the best is the reference."""
    from rayprune.training.config import TrialConfig
    from rayprune.training.loop import run_training

    settings = dataclasses.replace(prepared.settings, threads=os.cpu_count() or 1)
    runs = {}
    for lr in learning_rates:
        t0 = time.perf_counter()
        config = TrialConfig.from_flat({"learning_rate": lr}, settings)
        _, _, metrics = run_training(config, settings, prepared.data)
        runs[str(lr)] = {settings.metric: metrics[settings.metric], "seconds": time.perf_counter() - t0}
        log(f"dense lr={lr:g}: {settings.metric} {metrics[settings.metric]:.4f} ({runs[str(lr)]['seconds']:.0f} s)")
    best = max(runs, key=lambda k: runs[k][settings.metric])
    return {"metric": runs[best][settings.metric], "learning_rate": float(best), "runs": runs}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ray
    import torch

    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table_rows(reports: list[dict], grid: list[dict], metrics: list[str], reference: float) -> list[dict]:
    """One row per evaluation, in grid order, from the trials' Ray results."""
    from rayprune.search.replay import config_key

    index = {config_key(point): i for i, point in enumerate(grid)}
    rows = []
    for report in reports:
        config = report["config"]
        key = config_key(config)
        metric_values = {m: report.get(m) for m in metrics}
        primary = metric_values[metrics[0]]
        rows.append({
            "config_id": index[key], "config": json.dumps(config, sort_keys=True),
            "method": config["method"], "target_sparsity": float(config["target_sparsity"]),
            "learning_rate": float(config["learning_rate"]), "report": int(report["training_iteration"]),
            "step": int(report["step"]), "budget_fraction": float(report["budget_fraction"]),
            "sparsity": float(report["sparsity"]), "sparsity_encoder": float(report["sparsity_encoder"]),
            "retained": float(primary) / reference if reference else None,
            "train_loss": float(report["train_loss"]), "seconds": float(report["seconds"]),
            "error": report["error"],
            **metric_values,
        })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--sparsities", nargs="+", type=float, default=DEFAULT_SPARSITIES)
    parser.add_argument("--learning-rates", nargs="+", type=float, default=DEFAULT_LEARNING_RATES)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-interval", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--max-eval", type=int, default=200)
    parser.add_argument("--max-seq-length", type=int, default=24)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--schedule-start", type=float,
                        help="fix the sparsity ramp's start (fraction of training) for every trial; "
                             "default: each method's own")
    parser.add_argument("--schedule-end", type=float,
                        help="fix the ramp's end: a table whose trials fine-tune long after the ramp")
    parser.add_argument("--name", default="sst2_minilm")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "curves" / "sst2_minilm.parquet"))
    parser.add_argument("--work", help="search output directory, kept (default: a temporary one, removed)")
    parser.add_argument("--limit", type=int, help="run only the first N grid points (timing)")
    args = parser.parse_args(argv)

    import numpy as np
    import yaml

    from rayprune.config import load_spec
    from rayprune.metrics import constant_floor
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.search.replay import read_trial_reports, write_curve_table

    started = time.time()
    axes = grid_axes(args)
    grid = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    run_grid = grid[: args.limit] if args.limit else grid
    work = Path(args.work or tempfile.mkdtemp(prefix="rayprune-record-"))
    work.mkdir(parents=True, exist_ok=True)
    document = space_document(args, grid)
    document["points_to_evaluate"] = run_grid
    document["budget"]["num_samples"] = len(run_grid)
    space_file = work / "record_space.yaml"
    space_file.write_text(yaml.safe_dump(document, sort_keys=False))
    prepared = prepare_search(load_spec(space_file), output=work / "runs", data_dir=args.data_dir)
    metric = prepared.settings.metric
    floor = float(constant_floor(metric, np.asarray(prepared.data.eval.labels),
                                 is_regression=prepared.data.is_regression))
    print(f"floor ({metric} of the best constant predictor): {floor:.4f}")
    reference_file = work / "reference.json"  # a rerun into the same --work reuses it
    if reference_file.exists():
        reference = json.loads(reference_file.read_text())
    else:
        reference = dense_reference(prepared, args.learning_rates)
        reference_file.write_text(json.dumps(reference))
    import ray

    # Our own runtime: without an address, ray.init() joins any cluster already started on the machine.
    ray.init(address="local", num_cpus=args.max_concurrent, include_dashboard=False, log_to_driver=False)
    t_search = time.time()
    summary = run_search(prepared, trainable=recording_trainable, verbose=1)
    search_seconds = time.time() - t_search
    reports = read_trial_reports(prepared.search_dir / "ray" / "tune")
    metrics = list(prepared.data_info["metrics"])
    rows = table_rows(reports, grid, metrics, reference["metric"])
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python",
                                                 "benchmarks/record_curves.py", *(argv or sys.argv[1:])])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    meta = {
        "metric": metric, "metrics": metrics, "floor": floor, "reference": reference["metric"],
        "reference_runs": reference, "objectives": [[metric, "max"], ["sparsity", "max"]],
        "settings": {k: v for k, v in dataclasses.asdict(prepared.settings).items()
                     if k in ("model", "steps", "batch_size", "eval_batch_size", "eval_interval",
                              "learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm", "seed")},
        "data_info": {k: v for k, v in prepared.data_info.items() if k != "data_dir"},
        "grid": axes,
        "trials": len(run_grid), "errored_trials": summary["errors"],
        "search_seconds": round(search_seconds, 1), "total_seconds": round(time.time() - started, 1),
        "max_concurrent": args.max_concurrent, "command": command, "commit": commit,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
    }
    out = write_curve_table(rows, args.out, meta)
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    print(f"{len(rows)} evaluations of {len(run_grid)} trials ({summary['errors']} errored) -> {out} "
          f"({out.stat().st_size / 1e3:.0f} kB), sidecar {sidecar}; search {search_seconds:.0f} s")
    if not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
