"""Orchestration overhead: N identical trials through `rayprune search` vs a plain Python loop.

    python benchmarks/bench_overhead.py --trials 3 --steps 150

Both sides run the same configuration (GMP to 80% on the bundled MiniLM, demo task), one trial
at a time with the same thread count, so the difference is what Ray Tune + Optuna + MLflow +
checkpointing add.  The plain loop runs before and after the search and the search is compared
with their mean (a shared VM's speed drifts by more than the overhead measured).  Reported as a ratio measured in one run, with a breakdown of where the
search's extra time goes (read from the trials' own timers and the driver's phases).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def space(args, name: str) -> dict:
    return {
        "name": name,
        "model": args.model,
        "data": {"task": "demo", "max_train_samples": 2000, "max_eval_samples": 300, "max_seq_length": args.seq},
        # No dense reference: the plain loop trains none, so it would count as overhead.
        "reference": "none",
        "objective": {"metric": "accuracy"},
        "training": {"steps": args.steps, "batch_size": args.batch_size, "eval_interval": args.eval_interval,
                     "learning_rate": 1e-4, "threads_per_trial": args.threads},
        "budget": {"num_samples": args.trials, "max_concurrent": 1},
        "resources": {"cpu": args.threads},
        "scheduler": {"kind": "fifo"},
        "search": {"skip_duplicates": False},  # N trials of one configuration, as the loop runs them
        "space": {"method": "magnitude", "target_sparsity": 0.8},
    }


def add_space_arguments(parser: argparse.ArgumentParser, *, trials: int, steps: int) -> None:
    """The options :func:`space` reads (also used by profile_trial_cpu.py)."""
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--trials", type=int, default=trials)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--eval-interval", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_space_arguments(parser, trials=3, steps=150)
    parser.add_argument("--no-second-loop", action="store_true",
                        help="one plain loop before the search only (faster; no drift correction)")
    parser.add_argument("--out")
    args = parser.parse_args()

    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.config import parse_spec
    from rayprune.training import TrialConfig, run_training

    work = Path(tempfile.mkdtemp(prefix="rayprune-bench-"))
    spec = parse_spec(space(args, "overhead"), path=str(work / "space.yaml"))

    def plain_loop(tag: str) -> tuple[float, float, list[float]]:
        """Tokenise once, then N x run_training (model load included); (total s, prepare s, trial s)."""
        t0 = time.perf_counter()
        prepared = prepare_search(spec, output=work / tag)
        t_prepare = time.perf_counter() - t0
        trials = []
        for _ in range(args.trials):
            t = time.perf_counter()
            config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.8}, prepared.settings)
            run_training(config, prepared.settings, prepared.data)
            trials.append(time.perf_counter() - t)
        return time.perf_counter() - t0, t_prepare, trials

    # Loop, search, loop: the search is compared with the mean of the loops run before and after
    # it, so a drift of the machine's speed during the run (neighbours on a shared VM) cancels.
    # Untimed: the first preparation imports transformers' model code and tokenises (~3 s),
    # which whichever side ran first would otherwise pay alone.
    prepare_search(spec, output=work / "warmup")
    loop_before, t_prepare_loop, loop_trials = plain_loop("loop")

    # --- the same trials through rayprune search (Ray in-process, SQLite MLflow) ---
    t0 = time.perf_counter()
    prepared = prepare_search(spec, output=work / "search")
    t_prepare = time.perf_counter() - t0
    t1 = time.perf_counter()
    summary = run_search(prepared, verbose=0)
    search_total = time.perf_counter() - t0
    t_run = time.perf_counter() - t1

    loop_after, _, loop_after_trials = (0.0, 0.0, []) if args.no_second_loop else plain_loop("loop2")
    loop_total = loop_before if args.no_second_loop else (loop_before + loop_after) / 2

    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(Path(summary["search_dir"]) / "ray" / "tune"))
    in_trial = [t.last_result["seconds"] for t in analysis.trials]
    wall_trial = [t.last_result["time_total_s"] for t in analysis.trials]
    result = {
        "trials": args.trials, "steps": args.steps, "threads": args.threads,
        "loop_total_s": loop_total, "loop_before_s": loop_before, "loop_after_s": loop_after,
        "search_total_s": search_total,
        "ratio_search_over_loop": search_total / loop_total,
        "overhead_fraction": search_total / loop_total - 1.0,
        "loop_trial_s": loop_trials, "loop_after_trial_s": loop_after_trials,
        "search_in_trial_training_s": in_trial,
        "search_trial_wall_s": wall_trial, "search_prepare_s": t_prepare, "loop_prepare_s": t_prepare_loop,
        "search_run_s": t_run,
        "search_outside_trials_s": t_run - sum(wall_trial),
    }
    print(json.dumps(result, indent=1))
    print(f"\nsearch / loop wall-clock = {result['ratio_search_over_loop']:.3f} "
          f"(loop before {loop_before:.1f} s, after {loop_after:.1f} s) "
          f"(overhead {100 * result['overhead_fraction']:.1f}% for {args.trials} trials of "
          f"~{sum(loop_trials) / len(loop_trials):.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    import ray

    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
