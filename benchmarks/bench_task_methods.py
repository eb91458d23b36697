"""Every method at 80% and 90% sparsity beside the dense reference and the floor, on any task.

    python benchmarks/bench_task_methods.py --space search_spaces/squad.yaml --out bench_out/squad_methods.json
    python benchmarks/bench_task_methods.py --space search_spaces/ner_btc.yaml --out bench_out/ner_methods.json

The data, the model, the budget (``training.steps``, batch, learning rate, max_seq_length) and the
eval split come from the space file, loaded by the same preflight a search runs
(:func:`rayprune.search.preflight.prepare_search`), so the table is measured on exactly what the
search sees.  Each method runs with its paper's defaults (its Options and ``schedule_defaults``);
``--set KEY=VALUE`` overrides a value for every run.  Prints and saves one row per run with the
task's primary metric, ``retained`` (metric / the dense run's) and whether it is clearly above the
floor (the search's own verdict rule: more than one standard error above it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import yaml

DEFAULT_METHODS = "magnitude,movement,soft_movement,platon,mgpp,pins,seven,rpp,grain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", required=True, help="a search-space file (its data, model and training budget)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--sparsities", default="0.8,0.9")
    parser.add_argument("--steps", type=int, help="override training.steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out")
    args = parser.parse_args()

    import tempfile

    from rayprune.config import load_spec
    from rayprune.search.preflight import prepare_search
    from rayprune.training import TrialConfig, run_training

    spec = load_spec(args.space)
    t0 = time.perf_counter()
    prepared = prepare_search(spec, output=tempfile.mkdtemp(prefix="bench-task-"), data_dir=args.data_dir)
    prep_seconds = time.perf_counter() - t0
    settings, data = prepared.settings, prepared.data
    steps = args.steps or settings.steps
    settings = dataclasses.replace(settings, steps=steps, eval_interval=steps)
    metric, task = settings.metric, data.task
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    floor = task.floor(metric, data)
    n_eval = task.eval_size(data.eval)
    print(f"{data.name} ({task.kind}): {len(data.train)} train rows, {n_eval} eval units; "
          f"floor {metric}={floor:.4f} ({task.floor_description()}); data prepared in {prep_seconds:.1f} s")

    def run(flat: dict) -> dict:
        config = TrialConfig.from_flat({"learning_rate": settings.learning_rate, **overrides, **flat}, settings)
        started = time.perf_counter()
        _, _, metrics = run_training(config, settings, data)
        value = float(metrics[metric])
        margin = task.standard_error(metric, value, n_eval)
        return {"method": flat.get("method") or "dense", "target_sparsity": flat.get("target_sparsity", 0.0),
                metric: value, **{m: float(metrics[m]) for m in task.metrics if m != metric},
                "sparsity": float(metrics["sparsity"]), "sparsity_encoder": float(metrics["sparsity_encoder"]),
                "above_floor": bool(value > floor + margin), "seconds": time.perf_counter() - started}

    rows = [run({})]
    dense = rows[0][metric]
    _print(rows[-1], metric, dense)
    for method in args.methods.split(","):
        for s in (float(x) for x in args.sparsities.split(",")):
            try:
                rows.append(run({"method": method, "target_sparsity": s}))
            except Exception as err:  # noqa: BLE001 - a failed method is a row, not the end of the table
                rows.append({"method": method, "target_sparsity": s, "error": f"{type(err).__name__}: {err}"})
            _print(rows[-1], metric, dense)
            if args.out:
                _save(args.out, rows, data, settings, floor, metric, prep_seconds)
    if args.out:
        _save(args.out, rows, data, settings, floor, metric, prep_seconds)


def _print(row: dict, metric: str, dense: float) -> None:
    if "error" in row:
        print(f"{row['method']:<14} {row['target_sparsity']:>5.2f}  error: {row['error']}")
        return
    print(f"{row['method']:<14} {row['target_sparsity']:>5.2f}  {metric} {row[metric]:.4f}  retained "
          f"{row[metric] / dense:.3f}  sparsity {row['sparsity']:.3f}  "
          f"{'ok' if row['above_floor'] else 'NOT above the floor'}  {row['seconds']:.0f} s", flush=True)


def _save(out: str, rows: list, data, settings, floor: float, metric: str, prep_seconds: float) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({
        "task": data.name, "task_type": data.task.kind, "metric": metric, "floor": floor,
        "floor_rule": data.task.floor_description(), "train_rows": len(data.train),
        "eval_units": data.task.eval_size(data.eval), "steps": settings.steps, "batch_size": settings.batch_size,
        "model": settings.model, "prep_seconds": prep_seconds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
