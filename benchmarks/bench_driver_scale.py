"""How does the search driver scale with the number of trials?  Replayed searches of N trials
(default 100, 300 and 1,000), each in a fresh driver process; per N: wall seconds, seconds per
trial, the driver's peak RSS and where the driver's time went.

    flock /tmp/rayprune-heavy.lock .venv/bin/python benchmarks/bench_driver_scale.py --out ../bench_out/driver_scale
    flock /tmp/rayprune-heavy.lock .venv/bin/python benchmarks/bench_driver_scale.py --trials 20 40 --out /tmp/ds

Every search is :func:`rayprune.search.driver.run_search` with
:func:`rayprune.search.replay.replay_trainable` on the recorded table (what ``rayprune search
--replay`` runs): random sampler and FIFO, so all N trials run their full budget; replay time
scale 0 (no waits), so what is measured is the driver and Ray, not the recorded durations;
``max_concurrent`` 2; the default MLflow store (SQLite in the search directory); and
``live_front=True``, the CLI's default: after every trial that ends, the front, results.csv,
pareto.json and the MLflow parent (note, tags, artifacts) are refreshed, within the driver's
refresh budget (``LIVE_REFRESH_SHARE`` of its time; ``refreshes`` counts those that ran).

Each N runs in its own subprocess, so its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``, read in
that process when the search has ended) is that search's driver alone.  ``RUSAGE_CHILDREN`` is no
measure of Ray: the trials run in Ray worker processes that the raylet starts (not children of
the driver), and the Ray services the driver does start (GCS, raylet, ...) are reaped, if at all,
only at ``ray.shutdown``; it is recorded for completeness only (``children_maxrss_mb``), as
the largest reaped descendant.

Time is split by wrapping, in the child, the driver-side code paths (each timer counts its
outermost calls only):

* ``callbacks``: all of rayprune's Tune callback (per trial start, result, end),
* ``live_refresh``: the ``on_trial_end`` refresh after each ended trial (building the ended
  trials' results, ``collect_rows``, ``write_pareto``), of which ``write_pareto`` (verdicts,
  front, results.csv, pareto.csv/.json), ``plots`` (``plot_front``, at most every 30 s) and
  ``log_pareto`` (the tracker's share of it),
* ``mlflow``: every record sent to MLflow (``SearchTracker._apply``), ``tracking_state``: saving the
  tracker's state (``SearchTracker._save``, which rewrites ``tracking.json`` when the search-level
  part changed, and ``_record_trial_change``, which appends to ``tracking_trials.jsonl``),
* ``searcher``: Optuna's suggest and tell (``OptunaSearch.suggest/on_trial_complete``, SQLite
  study storage).

The timers overlap (``mlflow`` holds the records that ``callbacks`` and ``log_pareto`` send);
the wall time between trial ends less ``callbacks`` and ``searcher`` is Ray's own loop.

Each live timer is also reported for the first and the last quarter of the trials, per trial:
a per-trial cost that grows with the number of trials already ended shows up there.  The
final front (written once after ``Tuner.fit``) is reported apart (``final_front_s``).
``--refresh-every-trial`` lifts the driver's live-refresh budget
(``rayprune.search.driver.LIVE_REFRESH_SHARE``), so every trial end refreshes, as before the budget
existed: the same run with and without it shows what the budget saves.  ``--profile`` also runs
each child under cProfile (``DIR/n<N>/profile.pstats`` and the top
functions by cumulative time in ``DIR/n<N>/profile.txt``); profiled timings are inflated.
``--out DIR`` writes ``DIR/summary.json`` (and one ``DIR/n<N>/`` per search: its search
directory, the driver's log, ``result.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_TABLE = ROOT / "benchmarks" / "curves" / "sst2_minilm.parquet"
#: Live timers reported per quarter of the trials (their share of the time between trial ends).
LIVE_TIMERS = ("callbacks", "live_refresh", "write_pareto", "plots", "log_pareto", "mlflow", "tracking_state",
               "searcher")


def _rss_mb() -> float:
    """The current resident set of this process (MB), from /proc."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


class Timers:
    """Seconds and calls per name; a wrapped function counts only its outermost call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        def timed(*args, **kwargs):
            if timers._depth.get(name, 0):
                return original(*args, **kwargs)
            timers._depth[name] = 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers._depth[name] = 0
                timers.seconds[name] = timers.seconds.get(name, 0.0) + time.perf_counter() - t0
                timers.calls[name] = timers.calls.get(name, 0) + 1

        timed.__wrapped__ = original
        setattr(owner, attribute, timed)

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


# ----------------------------------------------------------------------------------------- child
def run_child(n: int, out: Path, *, table_path: str, max_concurrent: int, time_scale: float, seed: int,
              verbose: int, profile: bool, refresh_every_trial: bool = False) -> dict:
    """One replayed search of ``n`` trials in this process; returns (and writes) its measurements."""
    import ray
    import yaml

    from bench_search import space_document
    from rayprune.config import load_spec
    from rayprune.search import driver, plots
    from rayprune.search.replay import prepare_replay, read_curve_table, replay_trainable
    from rayprune.search.searcher import FidelityAwareOptunaSearch
    from rayprune.tracking.callback import MLflowTrackingCallback
    from rayprune.tracking.mlflow_tracker import SearchTracker

    out.mkdir(parents=True, exist_ok=True)
    table = read_curve_table(table_path)
    name = f"scale_n{n}"
    space_file = out / f"{name}.yaml"
    space_file.write_text(yaml.safe_dump(space_document(
        table, name, "random", "fifo", seed, num_samples=n, max_concurrent=max_concurrent, grace_period=1,
        reduction_factor=2.0, skip_duplicates=False), sort_keys=False))  # n trials on a 90-point grid

    if refresh_every_trial:  # no budget: the live refresh runs after every trial end
        driver.LIVE_REFRESH_SHARE = float("inf")
    timers = Timers()
    for method in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"):
        timers.wrap(MLflowTrackingCallback, method, "callbacks")
    timers.wrap(MLflowTrackingCallback, "_trial_ended", "live_refresh")
    timers.wrap(driver, "write_pareto", "write_pareto")
    timers.wrap(plots, "plot_front", "plots")
    timers.wrap(SearchTracker, "log_pareto", "log_pareto")
    timers.wrap(SearchTracker, "_apply", "mlflow")
    timers.wrap(SearchTracker, "_save", "tracking_state")
    timers.wrap(SearchTracker, "_record_trial_change", "tracking_state")
    timers.wrap(FidelityAwareOptunaSearch, "suggest", "searcher")
    timers.wrap(FidelityAwareOptunaSearch, "on_trial_complete", "searcher")

    # One mark per ended trial: time, RSS and the timers so far (the progress printed too).
    marks: list[dict] = []
    every = max(1, n // 10)
    end_of_fit: dict = {}
    start = [0.0]
    original_complete = MLflowTrackingCallback.on_trial_complete
    original_error = MLflowTrackingCallback.on_trial_error
    original_end = MLflowTrackingCallback.on_experiment_end

    def mark() -> None:
        elapsed = time.perf_counter() - start[0]
        marks.append({"t": elapsed, "rss_mb": _rss_mb(), "timers": timers.snapshot()})
        if len(marks) % every == 0 or len(marks) == n:
            print(f"  n={n}: {len(marks)}/{n} trials ended, {elapsed:.1f} s, RSS {marks[-1]['rss_mb']:.0f} MB",
                  file=sys.stderr, flush=True)

    def on_trial_complete(self, *args, **kwargs):
        original_complete(self, *args, **kwargs)
        mark()

    def on_trial_error(self, *args, **kwargs):
        original_error(self, *args, **kwargs)
        mark()

    def on_experiment_end(self, *args, **kwargs):
        end_of_fit.update(t=time.perf_counter() - start[0], timers=timers.snapshot(), calls=dict(timers.calls))
        return original_end(self, *args, **kwargs)

    MLflowTrackingCallback.on_trial_complete = on_trial_complete
    MLflowTrackingCallback.on_trial_error = on_trial_error
    MLflowTrackingCallback.on_experiment_end = on_experiment_end

    ray.init(address="local", num_cpus=max(2, max_concurrent), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    rss_after_init = _rss_mb()
    prepared = prepare_replay(load_spec(space_file), table_path, output=out / "runs", time_scale=time_scale)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    start[0] = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    summary = driver.run_search(prepared, trainable=replay_trainable, verbose=verbose, live_front=True,
                                log=lambda *a: print(*a, file=sys.stderr))
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - start[0]
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_end = _rss_mb()
    ray.shutdown()
    children_usage = resource.getrusage(resource.RUSAGE_CHILDREN)

    if profiler is not None:
        import io
        import pstats

        profiler.dump_stats(str(out / "profile.pstats"))
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)
        (out / "profile.txt").write_text(text.getvalue())

    totals = timers.snapshot()
    fit_timers = end_of_fit.get("timers", totals)
    result = {
        "trials": n, "trials_ended": len(marks), "front_size": len(summary["front"]),
        "errors": summary["errors"], "wall_s": wall, "fit_s": end_of_fit.get("t", wall),
        "s_per_trial": wall / n,
        # Until the first trial ended (Ray's workers starting, the first trial), and per trial after.
        "startup_s": marks[0]["t"] if marks else None,
        "steady_s_per_trial": (marks[-1]["t"] - marks[0]["t"]) / (len(marks) - 1) if len(marks) > 1 else None,
        "peak_rss_mb": self_usage.ru_maxrss / 1024,  # Linux: kilobytes
        "rss_after_ray_init_mb": rss_after_init, "rss_end_mb": rss_end,
        "children_maxrss_mb": children_usage.ru_maxrss / 1024,
        "driver_cpu_s": self_usage.ru_utime + self_usage.ru_stime,
        # Live (during Tuner.fit) seconds per timer, and the final front written after it.
        "live": {k: fit_timers.get(k, 0.0) for k in LIVE_TIMERS},
        "calls": dict(timers.calls),
        # Refreshes that ran during the search (the rest were skipped by the driver's budget).
        "live_refreshes": end_of_fit.get("calls", timers.calls).get("write_pareto", 0),
        "final_front_s": totals.get("write_pareto", 0.0) - fit_timers.get("write_pareto", 0.0),
        "quarters": _quarters(marks),
        "rss_per_trial_kb": _rss_slope(marks),
        "profiled": profile, "refresh_every_trial": refresh_every_trial,
        "search_dir": str(prepared.search_dir),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "marks.json").write_text(json.dumps(marks) + "\n")
    return result


def _quarters(marks: list[dict]) -> dict:
    """Per trial in the first and last quarter of the trial ends: seconds between ends, and each
    live timer's seconds."""
    n = len(marks)
    if n < 8:
        return {}

    def span(lo: int, hi: int) -> dict:
        a, b = marks[lo], marks[hi]
        count = hi - lo
        return {"s_per_trial": (b["t"] - a["t"]) / count,
                **{f"{k}_ms_per_trial": 1000 * (b["timers"].get(k, 0.0) - a["timers"].get(k, 0.0)) / count
                   for k in LIVE_TIMERS}}

    q = n // 4
    return {"first": span(0, q), "last": span(n - 1 - q, n - 1)}


def _rss_slope(marks: list[dict]) -> float | None:
    """Least-squares RSS growth per ended trial (kB), over the second half of the trials (after
    imports and the first plots settle)."""
    half = marks[len(marks) // 2:]
    if len(half) < 4:
        return None
    import numpy as np

    x = np.arange(len(half), dtype=float)
    y = np.array([m["rss_mb"] for m in half])
    return float(np.polyfit(x, y, 1)[0] * 1024)


# ---------------------------------------------------------------------------------------- parent
def print_table(results: list[dict]) -> None:
    print("\n| trials | wall s | s/trial | to 1st end s | s/trial after | peak RSS MB | RSS kB/trial | refreshes "
          "| live refresh s | of it write_pareto s | plots s | log_pareto s | MLflow s | tracker state s | searcher s "
          "| final front s |")
    print("|---:" * 16 + "|")
    for r in results:
        live = r["live"]
        slope = r["rss_per_trial_kb"]
        print(f"| {r['trials']} | {r['wall_s']:.1f} | {r['s_per_trial']:.3f} | {r['startup_s']:.1f} | "
              f"{r['steady_s_per_trial']:.3f} | {r['peak_rss_mb']:.0f} | "
              f"{'-' if slope is None else f'{slope:.0f}'} | {r.get('live_refreshes', '-')} | "
              f"{live['live_refresh']:.1f} | {live['write_pareto']:.1f} | "
              f"{live['plots']:.1f} | {live['log_pareto']:.1f} | {live['mlflow']:.1f} | "
              f"{live['tracking_state']:.1f} | {live['searcher']:.1f} | {r['final_front_s']:.2f} |")
    quartered = [r for r in results if r["quarters"]]
    if quartered:
        print("\nper trial, first vs last quarter of the trials (ms; s/trial is the time between trial ends):\n")
        print("| trials | s/trial first | s/trial last | live refresh ms first | last | write_pareto first | last "
              "| log_pareto first | last | MLflow first | last | tracker state first | last |")
        print("|---:" * 13 + "|")
        for r in quartered:
            f, last = r["quarters"]["first"], r["quarters"]["last"]
            cells = [f"{f['s_per_trial']:.3f}", f"{last['s_per_trial']:.3f}"]
            for k in ("live_refresh", "write_pareto", "log_pareto", "mlflow", "tracking_state"):
                cells += [f"{f[k + '_ms_per_trial']:.1f}", f"{last[k + '_ms_per_trial']:.1f}"]
            print(f"| {r['trials']} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--table", default=str(DEFAULT_TABLE))
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=0.0,
                        help="replayed seconds per recorded second (0: no waits, the driver is measured)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, help="Ray's progress output (the CLI's default 1), "
                                                                "into DIR/n<N>/driver.log")
    parser.add_argument("--profile", action="store_true", help="run each search under cProfile")
    parser.add_argument("--refresh-every-trial", action="store_true",
                        help="lift the driver's live-refresh budget (LIVE_REFRESH_SHARE): refresh after every "
                             "trial end, as before the budget existed")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per search before it is killed")
    parser.add_argument("--out", default=str(ROOT.parent / "bench_out" / "driver_scale"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()

    if args.child is not None:
        run_child(args.child, out, table_path=args.table, max_concurrent=args.max_concurrent,
                  time_scale=args.time_scale, seed=args.seed, verbose=args.verbose, profile=args.profile,
                  refresh_every_trial=args.refresh_every_trial)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.time()
    for n in args.trials:
        child_out = out / f"n{n}"
        if child_out.exists():  # a fresh search directory: a finished one is not run again
            import shutil

            shutil.rmtree(child_out)
        child_out.mkdir(parents=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--out", str(child_out),
                   "--table", args.table, "--max-concurrent", str(args.max_concurrent),
                   "--time-scale", str(args.time_scale), "--seed", str(args.seed), "--verbose", str(args.verbose)]
        if args.profile:
            command.append("--profile")
        if args.refresh_every_trial:
            command.append("--refresh-every-trial")
        print(f"n={n}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        with open(child_out / "driver.log", "w") as log:
            try:
                rc = subprocess.run(command, stdout=log, timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                print(f"n={n}: killed after {args.timeout:g} s", file=sys.stderr)
                continue
        if rc != 0 or not (child_out / "result.json").exists():
            print(f"n={n}: the search failed (exit {rc}); see {child_out / 'driver.log'}", file=sys.stderr)
            continue
        r = json.loads((child_out / "result.json").read_text())
        results.append(r)
        print(f"n={n}: {r['wall_s']:.1f} s, {r['s_per_trial']:.3f} s/trial, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"live refresh {r['live']['live_refresh']:.1f} s, MLflow {r['live']['mlflow']:.1f} s",
              file=sys.stderr, flush=True)
    print_table(results)
    summary = {
        "command": " ".join([".venv/bin/python", "benchmarks/bench_driver_scale.py", *(argv or sys.argv[1:])]),
        "table": str(Path(args.table).resolve()), "max_concurrent": args.max_concurrent,
        "time_scale": args.time_scale, "sampler": "random", "scheduler": "fifo", "live_front": True,
        "verbose": args.verbose, "profiled": args.profile, "refresh_every_trial": args.refresh_every_trial, "wall_seconds": round(time.time() - started, 1),
        "results": results,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{out / 'summary.json'}")
    return 0 if len(results) == len(args.trials) else 1


if __name__ == "__main__":
    sys.exit(main())
