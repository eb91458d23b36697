"""Command line: argument parsing only; the work is in the modules it calls.

    rayprune search --space search_spaces/quickstart.yaml [--data-dir DIR] [--dry-run]
    rayprune methods
    rayprune schema
    rayprune pareto <search-dir>
    rayprune export <search-dir> --out DIR [--top K] [--force] [--format dense|sparse]
    rayprune train --config config.yaml [--out DIR]
    rayprune ui <search-dir>
    rayprune sync <search-dir> [--tracking-uri URI]

User mistakes (bad YAML, unknown keys, missing data) print one ``error:`` line and exit 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import socket
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
    from rayprune.config.fields import describe_bounds
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
            bounds = describe_bounds(f.metadata or {})
            print(f"{'':16s}{name}.{f.name} = {default!r}  {help_text}" + (f" [{bounds}]" if bounds else ""))
    return 0


def cmd_schema(args) -> int:
    if args.generate:
        from rayprune.config import json_schema

        print(json.dumps(json_schema(), indent=1, ensure_ascii=False))
    else:
        from rayprune.config import packaged_schema

        print(packaged_schema(), end="")
    return 0


def _quiet_libraries(args) -> None:
    """Keep the first screen rayprune's: below ``-v 2`` the ``datasets`` split-generation bars
    (printed before the header) are off, and a new in-process Ray instance gets token
    authentication as Ray 2.60 gives it by default, set explicitly (``RAY_AUTH_MODE=token``) so
    Ray does not print its notice about that default.  Must run before ``datasets`` or ``ray``
    is imported: both read these settings once per process.  A cluster given by ``--address``
    or ``RAY_ADDRESS`` keeps Ray's own choice (it may run without tokens)."""
    if args.verbose < 2:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if not args.dry_run and not (args.address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def cmd_search(args) -> int:
    _quiet_libraries(args)
    from rayprune.config import load_spec

    spec = load_spec(args.space)  # a malformed file is reported before torch or ray load
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search

    data_dir = args.data_dir or os.environ.get("RAYPRUNE_DATA_DIR")
    trainable = None
    if args.replay:  # recorded curves stand in for training: no model or data is loaded
        from rayprune.search.replay import prepare_replay, replay_trainable

        prepared = prepare_replay(spec, args.replay, output=args.output, time_scale=args.replay_time_scale)
        trainable = replay_trainable
    else:
        prepared = prepare_search(spec, output=args.output, data_dir=data_dir)
    s, d = prepared.settings, prepared.data_info
    print(f"space      {spec.path} ({len(spec.searched())} searched, {len(spec.constants())} fixed)")
    print(f"model      {spec.model}" + ("  (trust_remote_code: true -- the model's own Python code runs in "
                                          "the driver and in every trial)" if spec.trust_remote_code else ""))
    if args.replay:
        print(f"replay     {d['replay_table']} (recorded {d['task']}: {d['train_examples']} train / "
              f"{d['eval_examples']} eval examples; floor {d['floor']:.4f}, reference {d['reference']}), "
              f"recorded seconds x {args.replay_time_scale:g}")
    else:
        print(f"task       {d['task']} ({d.get('task_type', 'classification')}): {d['train_examples']} train / "
              f"{d['selection_examples']} selection / {d['eval_examples']} eval examples, "
              f"max_seq_length {d['max_seq_length']}")
        for note in d.get("notes") or ():  # what loading decided or repaired (split rule, fixed offsets)
            print(f"  {note}")
    print(f"objectives {spec.objectives}")
    print(f"budget     {spec.num_samples} trials x {s.steps} steps, evaluation every {s.eval_interval} steps, "
          f"{spec.max_concurrent} at once, {spec.cpu:g} CPU / {spec.gpu:g} GPU each")
    print(f"scheduler  {spec.scheduler.kind} (grace {spec.scheduler.grace_period} evaluations, "
          f"reduction {spec.scheduler.reduction_factor:g}); search {spec.algorithm} seed {spec.seed}"
          + "".join(f", {k} {v}" for k, v in spec.search.sampler_options().items())
          + _describe_repeats(spec))
    from rayprune.search.criteria import check_cached_reference, objective_options

    if not args.replay:
        print(f"reference  {_describe_reference(spec, s)}")
    if args.dry_run and not args.replay:
        # The search's check, on the reference a previous start left in the search directory.
        cached = check_cached_reference(prepared)
        if cached:
            print(f"           {cached}")

    objective = objective_options(spec)
    limits = {k: v for k, v in {**objective["constraints"], "min_metric": objective["min_metric"],
                                "objective.min_retained": objective["min_retained"]}.items() if v is not None}
    print(f"judged by  the floor ({d.get('floor_rule', 'the best constant predictor')})" + "".join(f", {k} {v:g}" for k, v in limits.items()))
    for key, value in spec.space.items():
        print(f"  {key:34s} {value.describe() if hasattr(value, 'describe') else repr(value)}")
    print(f"output     {prepared.search_dir}")
    if args.dry_run:
        print("dry run: space, model, tokenizer and data resolve; no trial started")
        return 0
    summary = run_search(prepared, tracking_uri=args.tracking_uri, address=args.address, storage=args.storage,
                         resume=args.resume, verbose=args.verbose, trainable=trainable)
    _print_front(s.metric, summary["front"], summary["hypervolume"], summary["search_dir"])
    verdicts = summary["verdicts"]
    below_floor = summary.get("reference", {}).get("reference_below_floor")
    if below_floor:
        print(f"\nwarning: {below_floor} (run anyway: reference.require_above_floor is false)")
    print(f"\nresults in {summary['search_dir']} ({verdicts['failed']} failed trials: errored, non-finite or "
          f"far below their target sparsity; {verdicts['collapsed']} collapsed; {verdicts['infeasible']} infeasible)")
    if summary.get("interrupted"):
        again = ["rayprune", "search", "--space", args.space, "--output", args.output, "--resume"]
        if args.data_dir:
            again += ["--data-dir", args.data_dir]
        if args.replay:
            again += ["--replay", args.replay, "--replay-time-scale", str(args.replay_time_scale)]
        if args.address:
            again += ["--address", args.address]
        if args.storage:
            again += ["--storage", args.storage]
        if args.tracking_uri:
            again += ["--tracking-uri", args.tracking_uri]
        print("interrupted: the front above covers the trials that finished so far; unfinished "
              "trials continue from their last checkpoint with")
        print("  " + " ".join(shlex.quote(a) for a in again))
        return 130
    if summary.get("repeats_skipped"):
        print(f"{summary['repeats_skipped']} proposals repeated a configuration already tried: given its "
              f"result, not trained again")
    if summary.get("space_exhausted"):
        print("every configuration of the space was tried: the search ended before num_samples")
    print(f"compare runs:  rayprune ui {summary['search_dir']}")
    print(f"export:        rayprune export {summary['search_dir']} --out exported/")
    return 0


def _describe_repeats(spec) -> str:
    """How the search treats proposals that repeat a configuration (``search.skip_duplicates``)."""
    if not spec.search.skip_duplicates:
        return "; repeated configurations run again"
    from rayprune.config.grid import grid_size

    size = grid_size(spec)
    return "; none trained twice" + ("" if size is None else f" (the space holds {size} configurations)")


def _describe_reference(spec, settings) -> str:
    """The dense reference as the search will get it: none, a given model, or its resolved budget."""
    if spec.reference is None:
        return "none (reference: none)"
    if spec.reference.model:
        return f"{spec.reference.model} (given: evaluated, not trained)"
    steps, learning_rate = spec.reference.budget(settings.steps, settings.learning_rate)
    return f"dense fine-tune of {spec.model}: {steps} steps at learning rate {learning_rate:g}"


def _print_front(metric: str, front: list[dict], hypervolume: float, search_dir) -> None:
    from rayprune.search.results import front_report

    print(f"\nPareto front (full-budget trials clearly above the floor, within the constraints), "
          f"hypervolume {hypervolume:.4f}")
    print(f"{'trial':<14} {'method':<14} {'target':>7} {'sparsity':>9} {metric:>22}")
    for r in front:
        print(f"{r['trial_id']:<14} {r['method']:<14} {float(r['target_sparsity']):>7.3f} "
              f"{float(r['sparsity']):>9.4f} {float(r[metric]):>22.4f}")
    if not front:
        print("(empty: no full-budget trial clearly above the floor and within the constraints)")
    pareto_file = Path(search_dir) / "pareto.json"
    if pareto_file.exists():  # the reference, floor, constraints and the trials kept off the front
        for line in front_report(json.loads(pareto_file.read_text())):
            print(line)


def cmd_pareto(args) -> int:
    from rayprune.search.results import load_search_dir

    meta, rows, front = load_search_dir(args.search_dir)
    pareto = json.loads((Path(args.search_dir) / "pareto.json").read_text())
    if args.json:
        print(json.dumps(pareto, indent=1, default=str))
    else:
        _print_front(meta["settings"]["metric"], front, pareto["hypervolume"], args.search_dir)
    return 0


def cmd_export(args) -> int:
    from rayprune.export import export_search

    export_search(args.search_dir, args.out, top=args.top, force=args.force, weights_format=args.format)
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
    from rayprune.tracking.ui import ui_links, ui_server_command, ui_server_env

    search_dir = Path(args.search_dir).resolve()
    load_search_dir(search_dir)
    uri = default_tracking_uri(search_dir)
    # Serves the directory's store and, as a proxy, its artifacts: a copied or moved search opens with them.
    cmd = ui_server_command(search_dir, host=args.host, port=args.port)
    if args.auth:
        _require_mlflow_auth()
        cmd += ["--app-name", "basic-auth"]
    elif args.host not in _LOOPBACK_HOSTS:
        print(f"warning: the MLflow UI on {args.host} has no authentication: anyone who can reach port "
              f"{args.port} can read and change every run. Add --auth (MLflow's basic-auth app, "
              f"`mlflow server --app-name basic-auth`; needs `pip install 'mlflow[auth]'`), or keep "
              f"--host 127.0.0.1 and tunnel (ssh -L {args.port}:127.0.0.1:{args.port} ...)", file=sys.stderr)
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri}); Ctrl-C to stop")
    shown_host = socket.getfqdn() if args.host in ("0.0.0.0", "::") else args.host
    links = ui_links(search_dir, f"http://{shown_host}:{args.port}")
    for key, label in (("runs", "runs table"), ("front", "the front (tags.pareto = 'true')"),
                       ("parent", "the search's run (its description summarises the search)")):
        if key in links:
            print(f"  {label + ':':<58} {links[key]}")
    return subprocess.call(cmd, env=ui_server_env())


def cmd_sync(args) -> int:
    from rayprune.tracking.mlflow_tracker import sync_search_dir
    from rayprune.tracking.uris import redact_uri

    sent, left = sync_search_dir(args.search_dir, args.tracking_uri)
    where = redact_uri(args.tracking_uri) if args.tracking_uri else "the search's tracking store"
    if left:
        print(f"{sent} tracking records sent to {where}; {left} still pending (MLflow stopped answering)",
              file=sys.stderr)
        return 1
    print(f"{sent} tracking records sent to {where}; nothing pending" if sent else "nothing pending")
    return 0


_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _require_mlflow_auth() -> None:
    from rayprune.errors import SpecError

    try:
        import flask_wtf  # noqa: F401  (MLflow's basic-auth app needs it for CSRF checks)
    except ImportError:
        raise SpecError("--auth: MLflow's basic-auth app needs Flask-WTF: pip install 'mlflow[auth]'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayprune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="run a pruning search from a space file")
    p.add_argument("--space", required=True, help="search-space YAML (see README)")
    p.add_argument("--data-dir", help="local GLUE directory (default $RAYPRUNE_DATA_DIR, else the HF hub)")
    p.add_argument("--output", default="rayprune_runs", help="parent of the search directory")
    p.add_argument("--tracking-uri", help="MLflow server URI (default: sqlite file in the search dir)")
    p.add_argument("--address", help="Ray cluster to attach to: auto, HOST:PORT or ray://HOST:PORT "
                   "(default: start Ray in-process); token auth: RAY_AUTH_TOKEN or ~/.ray/auth_token")
    p.add_argument("--storage", help="Ray Tune storage for results and checkpoints: s3://..., gs://..., "
                   "file:///... or a path every node mounts (default: <output>/<name>/ray; overrides `storage:`)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted search")
    p.add_argument("--dry-run", action="store_true", help="validate and preflight only")
    p.add_argument("--replay", metavar="TABLE",
                   help="replay a recorded learning-curve table (benchmarks/curves/*.parquet) instead of "
                        "training: the space must be a grid of the table; compares search settings in seconds")
    p.add_argument("--replay-time-scale", type=float, default=0.01, metavar="X",
                   help="with --replay: each report waits its recorded seconds times X (default 0.01)")
    p.add_argument("-v", "--verbose", type=int, default=1, help="0 quiet, 1 live table, 2 trial logs")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("methods", help="list pruning methods and their options")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("schema", help="print the JSON Schema of the search-space file")
    p.add_argument("--generate", action="store_true",
                   help="build it from the dataclasses and the method registry instead of printing the shipped copy")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("pareto", help="print a search's Pareto front")
    p.add_argument("search_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pareto)

    p = sub.add_parser("export", help="export Pareto-optimal (or top-K) trials as HF models + configs")
    p.add_argument("search_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=int, help="export the K best by the objective instead of the front")
    p.add_argument("--force", action="store_true",
                   help="export into a non-empty --out, replacing only what an earlier export wrote there")
    p.add_argument("--format", choices=["dense", "sparse"], default="dense",
                   help="dense (default): model.safetensors, what every runtime reads; sparse: zeros stored "
                        "as a bitmask (rayprune's own format, smaller when sparse), loaded with "
                        "rayprune.compression.load_sparse")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("train", help="re-run one exported config without a search")
    p.add_argument("--config", required=True)
    p.add_argument("--out", help="save the pruned model here")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ui", help="start the MLflow UI on a search's store")
    p.add_argument("search_dir")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every one; use --auth)")
    p.add_argument("--auth", action="store_true", help="MLflow's basic-auth app (users and passwords)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("sync", help="send what a tracking outage kept in a search directory to MLflow")
    p.add_argument("search_dir")
    p.add_argument("--tracking-uri", help="MLflow URI (default: the one the search used; give it again if it "
                                          "had credentials)")
    p.set_defaults(func=cmd_sync)
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
    except OSError as err:
        full = _disk_full(err, search=args.command == "search")
        if full is None:
            raise
        print(f"error: {full}", file=sys.stderr)
        return 1


def _disk_full(err: BaseException, *, search: bool) -> str | None:
    """One line for a filesystem that ran out of space (or quota) while rayprune wrote to it,
    or None for any other error.  What a search wrote before stays consistent (its files are
    replaced whole, Ray's state is saved atomically), so ``--resume`` continues it once there
    is space again."""
    import errno

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            where = err.filename or "the output directory"
            what = "no space left on the device" if err.errno == errno.ENOSPC else "disk quota exceeded"
            again = (" and continue with the same command plus --resume (the search directory stays "
                     "consistent)") if search else " and run the command again"
            return f"{what} while writing {where}; free space there{again}"
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
