"""Which search strategy finds the sparsity/accuracy front with the least compute?  Replayed on a
recorded learning-curve table through the real driver, many seeds per strategy.

    flock /tmp/rayprune-heavy.lock timeout 1500 .venv/bin/python benchmarks/bench_search.py --out ../bench_out/search

(~11 minutes on 2 CPUs with the defaults: 5 strategies x 10 seeds, grace 2, half the table's trial-steps each.)

Every strategy (sampler + scheduler) gets the same budget in trial-steps (optimizer steps summed
over its trials, a fraction of what running the whole table costs) and runs ``rayprune search
--replay`` semantics: :func:`rayprune.search.driver.run_search` with
:func:`rayprune.search.replay.replay_trainable`, so the Tuner, OptunaSearch with its fidelity
handling, the schedulers and the MLflow tracking are the live ones (the front and its plots are
written once per search, not after every trial: ``live_front=False``).  A Ray ``Stopper`` ends a
search when its trials have consumed the budget.

Measured per run, from the trials' reports in Ray's storage ordered by when they were replayed:
the hypervolume of the front of the full-budget trials finished so far (reference point = the
table's floor and sparsity 0; 100 % = the front of the whole table) against the trial-steps
consumed so far.  Per strategy: median and interquartile range over seeds, the trial-steps needed
to reach 95 %, and the share of the final front above 80 % sparsity.  ``--out DIR`` writes
``DIR/summary.json`` and ``DIR/hypervolume.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

#: strategy name -> (Optuna sampler, scheduler).
STRATEGIES = {
    "tpe_mo_asha": ("tpe", "mo_asha"),
    "tpe_asha": ("tpe", "asha"),
    "random_fifo": ("random", "fifo"),
    "nsga2_mo_asha": ("nsga2", "mo_asha"),
    "random_mo_asha": ("random", "mo_asha"),
}
HIGH_SPARSITY = 0.8
TARGET_FRACTION = 0.95


class TrialStepBudget:
    """Ray Tune stopper: end the search once its trials have consumed ``budget`` optimizer
    steps in total (each report adds the steps since that trial's previous report)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.consumed = 0
        self._last: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        step = int(result.get("step", 0))
        self.consumed += step - self._last.get(trial_id, 0)
        self._last[trial_id] = step
        return False

    def stop_all(self) -> bool:
        return self.consumed >= self.budget


def _stopper(budget: int):
    from ray.tune import Stopper

    class _Budget(TrialStepBudget, Stopper):
        pass

    return _Budget(budget)


def space_document(table, name: str, algorithm: str, scheduler: str, seed: int, *, num_samples: int,
                   max_concurrent: int, grace_period: int, reduction_factor: float,
                   population_size: int | None = None, skip_duplicates: bool = True) -> dict:
    """A replay space over the table's whole grid (``skip_duplicates=False``: repeated proposals
    run, so a search can have more trials than the grid has configurations)."""
    grid = table.meta["grid"]
    settings = table.meta["settings"]
    return {
        "name": name, "model": settings["model"],
        "data": {"task": table.meta["data_info"]["task"], "max_seq_length": table.meta["data_info"]["max_seq_length"]},
        "training": {"steps": settings["steps"], "eval_interval": settings["eval_interval"],
                     "batch_size": settings["batch_size"]},
        "budget": {"num_samples": num_samples, "max_concurrent": max_concurrent},
        "scheduler": {"kind": scheduler, "grace_period": grace_period, "reduction_factor": reduction_factor},
        "search": {"algorithm": algorithm, "seed": seed, "skip_duplicates": skip_duplicates,
                   **({"population_size": population_size} if population_size and algorithm == "nsga2" else {})},
        "space": {key: {"choice": list(values)} for key, values in grid.items()},
    }


def _criteria(table):
    from rayprune.search.results import Criteria

    return Criteria(metric=table.metric, floor=float(table.meta["floor"]),
                    eval_examples=int(table.meta["data_info"].get("eval_examples", 0)),
                    reference_metric=table.meta.get("reference"))


def front_points(finals: list[dict], criteria) -> np.ndarray:
    """(k, 2) metric/sparsity of the front of full-budget reports judged ok (the driver's rule)."""
    from rayprune.pareto import pareto_front

    ok = [r for r in finals if criteria.verdict({**r, "status": "complete"})[0] == "ok"]
    if not ok:
        return np.zeros((0, 2))
    points = np.array([[float(r[criteria.metric]), float(r["sparsity"])] for r in ok])
    return points[pareto_front(points, ["max", "max"])]


def hypervolume(points: np.ndarray, floor: float) -> float:
    from rayprune.pareto import hypervolume_2d

    return float(hypervolume_2d(points, ["max", "max"], [floor, 0.0])) if len(points) else 0.0


def trajectory(reports: list[dict], criteria, table_hv: float) -> dict:
    """Hypervolume fraction after each report, against the trial-steps consumed up to it, for one
    search's reports ordered by when they were replayed."""
    from rayprune.search.results import reached_full_budget

    reports = sorted(reports, key=lambda r: r["replayed_at"])
    last: dict[str, int] = {}
    finals: list[dict] = []
    steps, fractions = [0], [0.0]
    consumed = 0
    for r in reports:
        consumed += int(r["step"]) - last.get(r["trial_id"], 0)
        last[r["trial_id"]] = int(r["step"])
        if reached_full_budget(r["budget_fraction"]):
            finals.append(r)
        steps.append(consumed)
        fractions.append(hypervolume(front_points(finals, criteria), criteria.floor) / table_hv)
    front = front_points(finals, criteria)
    return {"steps": steps, "hv_fraction": fractions, "trials": len(last), "full_budget_trials": len(finals),
            "front_size": len(front),
            "high_sparsity_share": float(np.mean(front[:, 1] > HIGH_SPARSITY)) if len(front) else 0.0,
            "front_high_sparsity": int(np.sum(front[:, 1] > HIGH_SPARSITY)) if len(front) else 0}


def value_at(run: dict, budget: float) -> float:
    """The run's hypervolume fraction once ``budget`` trial-steps are consumed (a step function)."""
    index = np.searchsorted(np.asarray(run["steps"]), budget, side="right") - 1
    return float(run["hv_fraction"][max(index, 0)])


def steps_to(run: dict, fraction: float, budget: float) -> float | None:
    for steps, value in zip(run["steps"], run["hv_fraction"]):
        if steps > budget:
            break
        if value >= fraction - 1e-12:
            return float(steps)
    return None


def summarise(runs: list[dict], total_steps: int, budget: int) -> dict:
    """Median/IQR over seeds; a seed that never reached 95 % counts as infinitely late."""
    to95 = [steps_to(r, TARGET_FRACTION, budget) for r in runs]
    as_inf = np.array([math.inf if s is None else s for s in to95])
    median95 = float(np.median(as_inf))
    finals = np.array([value_at(r, budget) for r in runs])
    return {
        "steps_to_95_fraction": None if math.isinf(median95) else median95 / total_steps,
        "steps_to_95_fraction_per_seed": [None if s is None else s / total_steps for s in to95],
        "reached_95": int(sum(s is not None for s in to95)),
        "final_hv_fraction": float(np.median(finals)),
        "final_hv_fraction_iqr": [float(np.percentile(finals, 25)), float(np.percentile(finals, 75))],
        "high_sparsity_share": float(np.median([r["high_sparsity_share"] for r in runs])),
        "front_high_sparsity": float(np.median([r["front_high_sparsity"] for r in runs])),
        "trials": float(np.median([r["trials"] for r in runs])),
        "full_budget_trials": float(np.median([r["full_budget_trials"] for r in runs])),
        "seconds_per_run": float(np.median([r["seconds"] for r in runs])),
        "seeds": len(runs),
    }


def plot(curves: dict[str, list[dict]], total_steps: int, budget: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(0, budget, 200)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in curves.items():
        values = np.array([[value_at(r, x) for x in xs] for r in runs])
        median = np.median(values, axis=0)
        ax.plot(xs / total_steps, median, label=name)
        ax.fill_between(xs / total_steps, np.percentile(values, 25, axis=0), np.percentile(values, 75, axis=0),
                        alpha=0.2)
    ax.axhline(TARGET_FRACTION, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("trial-steps consumed (fraction of the whole table)")
    ax.set_ylabel("hypervolume (fraction of the table's front)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=str(ROOT / "benchmarks" / "curves" / "sst2_minilm.parquet"))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget-fraction", type=float, default=0.5,
                        help="trial-step budget of every run, as a fraction of the whole table's (0.5: "
                             "enough for random + FIFO's median to reach 95%%)")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--grace-period", type=int, default=2,
                        help="evaluations before the first rung (2: rayprune's default)")
    parser.add_argument("--reduction-factor", type=float, default=2.0)
    parser.add_argument("--population-size", type=int,
                        help="NSGA-II's generation size (default: Optuna's 50, i.e. random below 50 full trials)")
    parser.add_argument("--time-scale", type=float, default=0.0005,
                        help="replayed seconds per recorded second (interleaving of concurrent trials)")
    parser.add_argument("--max-redraws", type=int,
                        help="the searcher's MAX_REDRAWS (repeated proposals in a row before an untried "
                             "configuration is queued); default: rayprune's")
    parser.add_argument("--out", default=str(ROOT.parent / "bench_out" / "search"))
    args = parser.parse_args(argv)
    if args.max_redraws:
        import rayprune.search.searcher as searcher_module

        searcher_module.MAX_REDRAWS = args.max_redraws  # the searcher runs in this process (Tune's driver)

    import ray
    import yaml

    from rayprune.config import load_spec
    from rayprune.search.driver import run_search
    from rayprune.search.replay import prepare_replay, read_curve_table, read_trial_reports, replay_trainable

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    table = read_curve_table(args.table)
    criteria = _criteria(table)
    total_steps = table.total_trial_steps()
    table_front = front_points(list(table.final().values()), criteria)
    table_hv = hypervolume(table_front, criteria.floor)
    budget = int(round(args.budget_fraction * total_steps))
    steps_per_trial = table.steps
    grace_steps = args.grace_period * int(table.meta["settings"]["eval_interval"])
    # Enough trials that the budget, not num_samples, ends every run.
    num_samples = int(math.ceil(budget / grace_steps)) + args.max_concurrent
    print(f"table {args.table}: {len(table.curves)} configurations, {total_steps} trial-steps, front of "
          f"{len(table_front)} ({int(np.sum(table_front[:, 1] > HIGH_SPARSITY))} above {HIGH_SPARSITY:.0%} sparsity), "
          f"hypervolume {table_hv:.4f} from floor {criteria.floor:.4f}; budget {budget} trial-steps "
          f"({args.budget_fraction:.0%}) = {budget / steps_per_trial:.1f} full trials")
    ray.init(address="local", num_cpus=max(2, args.max_concurrent), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    runs: dict[str, list[dict]] = {name: [] for name in args.strategies}
    started = time.time()
    for seed in range(args.seeds):
        for name in args.strategies:
            algorithm, scheduler = STRATEGIES[name]
            run_name = f"{name}_s{seed}"
            space_file = out / "spaces" / f"{run_name}.yaml"
            space_file.parent.mkdir(exist_ok=True)
            space_file.write_text(yaml.safe_dump(space_document(
                table, run_name, algorithm, scheduler, seed, num_samples=num_samples,
                max_concurrent=args.max_concurrent, grace_period=args.grace_period,
                reduction_factor=args.reduction_factor, population_size=args.population_size), sort_keys=False))
            t0 = time.time()
            prepared = prepare_replay(load_spec(space_file), args.table, output=out / "runs",
                                      time_scale=args.time_scale)
            run_search(prepared, trainable=replay_trainable, stop=_stopper(budget), tracking_uri=tracking_uri,
                       verbose=0, log=lambda *a: None, live_front=False)
            reports = read_trial_reports(prepared.search_dir / "ray" / "tune")
            run = trajectory(reports, criteria, table_hv)
            run["seconds"] = time.time() - t0
            runs[name].append(run)
            reached = steps_to(run, TARGET_FRACTION, budget)
            print(f"{run_name:<22} {run['trials']:>4} trials ({run['full_budget_trials']:>3} full), "
                  f"hv {value_at(run, budget):.3f}, 95% at "
                  f"{'-' if reached is None else f'{reached / total_steps:.3f}'} of the table, "
                  f"{run['seconds']:.1f} s", flush=True)
    wall = time.time() - started
    summary = {name: summarise(r, total_steps, budget) for name, r in runs.items()}
    result = {
        "table": str(Path(args.table).resolve()), "table_trial_steps": total_steps, "table_hypervolume": table_hv,
        "table_front_size": len(table_front),
        "table_front_high_sparsity": int(np.sum(table_front[:, 1] > HIGH_SPARSITY)),
        "floor": criteria.floor, "reference": table.meta.get("reference"), "budget_trial_steps": budget,
        "budget_fraction": args.budget_fraction, "seeds": args.seeds, "max_concurrent": args.max_concurrent,
        "grace_period": args.grace_period, "reduction_factor": args.reduction_factor,
        "population_size": args.population_size, "max_redraws": args.max_redraws,
        "time_scale": args.time_scale, "wall_seconds": round(wall, 1),
        "command": " ".join([".venv/bin/python", "benchmarks/bench_search.py", *(argv or sys.argv[1:])]),
        "strategies": summary,
    }
    (out / "summary.json").write_text(json.dumps({**summary, "_benchmark": result}, indent=1) + "\n")
    (out / "runs.json").write_text(json.dumps(runs) + "\n")
    png = out / "hypervolume.png"
    plot(runs, total_steps, budget, png,
         f"{Path(args.table).name}: {args.seeds} seeds, median and IQR; grace {args.grace_period}, "
         f"rf {args.reduction_factor:g}, {args.max_concurrent} at once"
         + (f", NSGA-II population {args.population_size}" if args.population_size else ""))
    print(f"\n{'strategy':<16} {'to 95% (of table)':>18} {'reached':>8} {'final hv':>9} {'IQR':>13} "
          f"{'>80% share':>10} {'trials':>7}")
    for name, s in summary.items():
        to95 = "-" if s["steps_to_95_fraction"] is None else f"{s['steps_to_95_fraction']:.3f}"
        iqr = f"{s['final_hv_fraction_iqr'][0]:.3f}-{s['final_hv_fraction_iqr'][1]:.3f}"
        print(f"{name:<16} {to95:>18} {s['reached_95']:>5}/{s['seeds']:<2} {s['final_hv_fraction']:>9.3f} "
              f"{iqr:>13} {s['high_sparsity_share']:>10.2f} {s['trials']:>7.0f}")
    print(f"\n{out / 'summary.json'}, {png}; {wall:.0f} s")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
