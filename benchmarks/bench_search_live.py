"""Does the replay's ordering of search strategies hold on live trials?  (issue 10, item 5)

    flock /tmp/rayprune-heavy.lock timeout 1800 .venv/bin/python benchmarks/bench_search_live.py --out ../bench_out/live

Runs each strategy twice at the same trial-step budget and the same Optuna seed: once live
(real trials: the recorded table's model, task, data settings and grid, trained by
:func:`rayprune.training.loop.run_training` through the real driver) and once replayed from the
table (:mod:`bench_search`'s replay run).  Both are scored the same way, against the table's
front: the hypervolume of the full-budget trials finished so far (reference point = the table's
floor and sparsity 0) after each report, against trial-steps consumed.  The live trials use the
table's data settings (same split seed, train/eval sizes, sequence length, steps, batch), so
their curves are the table's up to CPU nondeterminism; what the live run adds is real timing
(concurrent trials interleave as they really do) and real scheduling.

Default: (a) ``tpe_mo_asha`` against (c) ``random_fifo``, 20 % of the table's trial-steps each
(~6 minutes of live trials per strategy on 2 CPUs).  Writes ``DIR/live.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_search as replayed  # noqa: E402
from record_curves import DEFAULT_GLUE, recording_trainable  # noqa: E402


def live_document(table, name: str, algorithm: str, scheduler: str, seed: int, *, num_samples: int,
                  max_concurrent: int, grace_period: int, reduction_factor: float) -> dict:
    """The replay space of :func:`bench_search.space_document` with the recording's data and
    trial settings, so the live trials are the table's trials."""
    document = replayed.space_document(table, name, algorithm, scheduler, seed, num_samples=num_samples,
                                       max_concurrent=max_concurrent, grace_period=grace_period,
                                       reduction_factor=reduction_factor)
    info, settings = table.meta["data_info"], table.meta["settings"]
    document["data"] = {"task": info["task"], "max_train_samples": info["train_examples"] + info["selection_examples"],
                        "max_eval_samples": info["eval_examples"], "max_seq_length": info["max_seq_length"], "seed": 0}
    document["training"] = {"steps": settings["steps"], "batch_size": settings["batch_size"],
                            "eval_interval": settings["eval_interval"], "eval_batch_size": settings["eval_batch_size"],
                            "seed": settings["seed"], "threads_per_trial": 1}
    document["resources"] = {"cpu": 1}
    document["reference"] = "none"  # the table's reference and floor score both runs
    return document


def live_order(reports: list[dict]) -> list[dict]:
    """Live reports in the order they happened: Ray's ``timestamp`` (whole seconds), then the
    trial's own clock; stored as ``replayed_at`` for :func:`bench_search.trajectory`."""
    ordered = sorted(reports, key=lambda r: (int(r["timestamp"]), float(r.get("time_total_s", 0.0))))
    return [{**r, "replayed_at": i} for i, r in enumerate(ordered)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=str(HERE / "curves" / "sst2_minilm.parquet"))
    parser.add_argument("--data-dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--strategies", nargs="+", default=["tpe_mo_asha", "random_fifo"],
                        choices=list(replayed.STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-fraction", type=float, default=0.2)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--grace-period", type=int, default=2)
    parser.add_argument("--reduction-factor", type=float, default=2.0)
    parser.add_argument("--out", default=str(ROOT.parent / "bench_out" / "live"))
    args = parser.parse_args(argv)

    import ray
    import yaml

    from rayprune.config import load_spec
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.search.replay import prepare_replay, read_curve_table, read_trial_reports, replay_trainable

    out = Path(args.out).resolve()
    (out / "spaces").mkdir(parents=True, exist_ok=True)
    table = read_curve_table(args.table)
    criteria = replayed._criteria(table)
    total_steps = table.total_trial_steps()
    table_hv = replayed.hypervolume(replayed.front_points(list(table.final().values()), criteria), criteria.floor)
    budget = int(round(args.budget_fraction * total_steps))
    grace_steps = args.grace_period * int(table.meta["settings"]["eval_interval"])
    num_samples = int(math.ceil(budget / grace_steps)) + args.max_concurrent
    print(f"budget {budget} trial-steps ({args.budget_fraction:.0%} of the table's {total_steps}); "
          f"table hypervolume {table_hv:.4f} from floor {criteria.floor:.3f}", flush=True)
    ray.init(address="local", num_cpus=args.max_concurrent, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    results: dict[str, dict] = {}
    for name in args.strategies:
        algorithm, scheduler = replayed.STRATEGIES[name]
        options = dict(num_samples=num_samples, max_concurrent=args.max_concurrent,
                       grace_period=args.grace_period, reduction_factor=args.reduction_factor)
        runs = {}
        for mode in ("replay", "live"):
            run_name = f"{name}_{mode}_s{args.seed}"
            space_file = out / "spaces" / f"{run_name}.yaml"
            make = replayed.space_document if mode == "replay" else live_document
            space_file.write_text(yaml.safe_dump(make(table, run_name, algorithm, scheduler, args.seed, **options),
                                                 sort_keys=False))
            t0 = time.time()
            if mode == "replay":
                prepared = prepare_replay(load_spec(space_file), args.table, output=out / "runs", time_scale=0.0005)
                run_search(prepared, trainable=replay_trainable, stop=replayed._stopper(budget),
                           tracking_uri=tracking_uri, verbose=0, log=lambda *a: None, live_front=False)
                reports = read_trial_reports(prepared.search_dir / "ray" / "tune")
            else:
                prepared = prepare_search(load_spec(space_file), output=out / "runs", data_dir=args.data_dir,
                                          log=lambda *a: None)
                run_search(prepared, trainable=recording_trainable, stop=replayed._stopper(budget),
                           tracking_uri=tracking_uri, verbose=0, log=lambda *a: None, live_front=False)
                reports = live_order(read_trial_reports(prepared.search_dir / "ray" / "tune"))
            run = replayed.trajectory(reports, criteria, table_hv)
            run["seconds"] = round(time.time() - t0, 1)
            run["final_hv_fraction"] = replayed.value_at(run, budget)
            reached = replayed.steps_to(run, replayed.TARGET_FRACTION, budget)
            run["steps_to_95_fraction"] = None if reached is None else reached / total_steps
            runs[mode] = run
            print(f"{run_name:<26} {run['trials']:>3} trials ({run['full_budget_trials']:>2} full), hv "
                  f"{run['final_hv_fraction']:.3f} of the table's, 95% at "
                  f"{'-' if reached is None else f'{reached / total_steps:.3f}'}, front {run['front_size']} "
                  f"({run['front_high_sparsity']} above 80%), {run['seconds']:.0f} s", flush=True)
        results[name] = runs
    order = {mode: sorted(results, key=lambda n: -results[n][mode]["final_hv_fraction"]) for mode in ("replay", "live")}
    summary = {"budget_trial_steps": budget, "budget_fraction": args.budget_fraction, "seed": args.seed,
               "table": str(Path(args.table).resolve()), "table_hypervolume": table_hv,
               "ordering": order, "same_ordering": order["replay"] == order["live"],
               "command": " ".join([".venv/bin/python", "benchmarks/bench_search_live.py", *(argv or sys.argv[1:])]),
               "strategies": {n: {m: {k: v for k, v in r.items() if k not in ("steps", "hv_fraction")}
                                  for m, r in runs.items()} for n, runs in results.items()}}
    (out / "live.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "live_curves.json").write_text(json.dumps(results) + "\n")
    print(f"\nordering by final hypervolume: replay {order['replay']}, live {order['live']} "
          f"({'same' if summary['same_ordering'] else 'different'}); {out / 'live.json'}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
