"""Command line: argument parsing only; the work is in the modules it calls.

    rayprune search --space search_spaces/quickstart.yaml [--data-dir DIR] [--dry-run]
    rayprune methods
    rayprune schema
    rayprune pareto <search-dir>
    rayprune export <search-dir> --out DIR [--top K]
    rayprune train --config config.yaml [--out DIR]
    rayprune ui <search-dir>

User mistakes (bad YAML, unknown keys, missing data) print one ``error:`` line and exit 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

__all__ = ["main"]


def _offline_defaults() -> None:
    # Bundled models and local data work offline; hub access stays possible when online.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def cmd_methods(args) -> int:
    from rayprune.methods import available_methods, get_method

    for name in available_methods():
        cls = get_method(name)
        print(f"{name:14s} {cls.description}")
        extras = []
        if cls.needs_teacher:
            extras.append("needs a dense teacher (trained once per search)")
        if cls.structured:
            extras.append("structured: exports physically smaller matrices")
        extras.append(f"scope: {cls.default_scope}")
        if cls.schedule_defaults:
            extras.append("schedule: " + ", ".join(f"{k}={v}" for k, v in cls.schedule_defaults.items()))
        print(f"{'':14s} ({'; '.join(extras)})")
        for f in cls.option_fields():
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            help_text = (f.metadata or {}).get("help", "")
            print(f"{'':16s}{name}.{f.name} = {default!r}  {help_text}")
    return 0


def cmd_schema(args) -> int:
    from rayprune.config import json_schema

    print(json.dumps(json_schema(), indent=1))
    return 0


def cmd_search(args) -> int:
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search
    from rayprune.config import load_spec

    spec = load_spec(args.space)
    data_dir = args.data_dir or os.environ.get("RAYPRUNE_DATA_DIR")
    prepared = prepare_search(spec, output=args.output, data_dir=data_dir)
    s, d = prepared.settings, prepared.data_info
    print(f"space      {spec.path} ({len(spec.searched())} searched, {len(spec.constants())} fixed)")
    print(f"model      {spec.model}")
    print(f"task       {d['task']}: {d['train_examples']} train / {d['selection_examples']} selection / "
          f"{d['eval_examples']} eval examples, max_seq_length {d['max_seq_length']}")
    print(f"objectives {spec.objectives}")
    print(f"budget     {spec.num_samples} trials x {s.steps} steps, evaluation every {s.eval_interval} steps, "
          f"{spec.max_concurrent} at once, {spec.cpu:g} CPU / {spec.gpu:g} GPU each")
    print(f"scheduler  {spec.scheduler['kind']} (grace {spec.scheduler['grace_period']} evaluations, "
          f"reduction {spec.scheduler['reduction_factor']}); search {spec.algorithm} seed {spec.seed}")
    for key, value in spec.space.items():
        print(f"  {key:34s} {value.describe() if hasattr(value, 'describe') else repr(value)}")
    print(f"output     {prepared.search_dir}")
    if args.dry_run:
        print("dry run: space, model, tokenizer and data resolve; no trial started")
        return 0
    summary = run_search(prepared, tracking_uri=args.tracking_uri, address=args.address,
                         resume=args.resume, verbose=args.verbose)
    _print_front(s.metric, summary["front"], summary["hypervolume"])
    print(f"\nresults in {summary['search_dir']} ({summary['errors']} errored trials)")
    if summary.get("interrupted"):
        again = ["rayprune", "search", "--space", args.space, "--output", args.output, "--resume"]
        if args.data_dir:
            again += ["--data-dir", args.data_dir]
        if args.address:
            again += ["--address", args.address]
        if args.tracking_uri:
            again += ["--tracking-uri", args.tracking_uri]
        print("interrupted: the front above covers the trials that finished so far; unfinished "
              "trials continue from their last checkpoint with")
        print("  " + " ".join(shlex.quote(a) for a in again))
        return 130
    print(f"compare runs:  rayprune ui {summary['search_dir']}")
    print(f"export:        rayprune export {summary['search_dir']} --out exported/")
    return 0


def _print_front(metric: str, front: list[dict], hypervolume: float) -> None:
    print(f"\nPareto front (trials that ran their full budget), hypervolume {hypervolume:.4f}")
    print(f"{'trial':<14} {'method':<14} {'target':>7} {'sparsity':>9} {metric:>22}")
    for r in front:
        print(f"{r['trial_id']:<14} {r['method']:<14} {float(r['target_sparsity']):>7.3f} "
              f"{float(r['sparsity']):>9.4f} {float(r[metric]):>22.4f}")
    if not front:
        print("(empty: no trial ran its full budget)")


def cmd_pareto(args) -> int:
    from rayprune.search.results import load_search_dir

    meta, rows, front = load_search_dir(args.search_dir)
    pareto = json.loads((Path(args.search_dir) / "pareto.json").read_text())
    if args.json:
        print(json.dumps(pareto, indent=1, default=str))
    else:
        _print_front(meta["settings"]["metric"], front, pareto["hypervolume"])
    return 0


def cmd_export(args) -> int:
    from rayprune.export import export_search

    export_search(args.search_dir, args.out, top=args.top)
    return 0


def cmd_train(args) -> int:
    from rayprune.training.standalone import train_from_config

    metrics = train_from_config(args.config, out=args.out, data_dir=args.data_dir)
    print(json.dumps(metrics, indent=1, default=float))
    return 0


def cmd_ui(args) -> int:
    import subprocess

    from rayprune.search.results import load_search_dir
    from rayprune.tracking.mlflow_tracker import default_tracking_uri

    search_dir = Path(args.search_dir).resolve()
    load_search_dir(search_dir)
    uri = default_tracking_uri(search_dir)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--default-artifact-root", (search_dir / "mlartifacts").as_uri(),
           "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri}); Ctrl-C to stop")
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayprune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="run a pruning search from a space file")
    p.add_argument("--space", required=True, help="search-space YAML (see README)")
    p.add_argument("--data-dir", help="local GLUE directory (default $RAYPRUNE_DATA_DIR, else the HF hub)")
    p.add_argument("--output", default="rayprune_runs", help="parent of the search directory")
    p.add_argument("--tracking-uri", help="MLflow server URI (default: sqlite file in the search dir)")
    p.add_argument("--address", help="Ray cluster address (default: start Ray in-process)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted search")
    p.add_argument("--dry-run", action="store_true", help="validate and preflight only")
    p.add_argument("-v", "--verbose", type=int, default=1, help="0 quiet, 1 live table, 2 trial logs")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("methods", help="list pruning methods and their options")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("schema", help="print the JSON Schema of the search-space file")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("pareto", help="print a search's Pareto front")
    p.add_argument("search_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pareto)

    p = sub.add_parser("export", help="export Pareto-optimal (or top-K) trials as HF models + configs")
    p.add_argument("search_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=int, help="export the K best by the objective instead of the front")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("train", help="re-run one exported config without a search")
    p.add_argument("--config", required=True)
    p.add_argument("--out", help="save the pruned model here")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ui", help="start the MLflow UI on a search's store")
    p.add_argument("search_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline_defaults()
    args = build_parser().parse_args(argv)
    from rayprune.errors import SpecError

    try:
        return args.func(args)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
