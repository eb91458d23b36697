"""Every unstructured method at 80% and 90% sparsity vs dense and GMP: MiniLM on SST-2.

    python benchmarks/bench_methods.py --data-dir ../shared/data/glue --steps 300 \
        --baseline bench_out/gmp_sst2.json --out bench_out/methods.json

Same step budget, batch, learning rate and data for every run; each method with its paper's
default hyperparameters (its Options defaults and ``schedule_defaults``).  Train subsampled,
evaluated on the full SST-2 dev set (872).  ``--baseline`` reuses the dense and GMP rows of a
``bench_gmp_sst2.py --out`` file made with the same settings instead of re-running them.

``--teacher-dir DIR`` gives every run the dense reference as its teacher (trained once into
``DIR`` at the runs' budget, as a search does, and reused by later runs with the same ``DIR``);
with ``--set distill.alpha=0.5`` that is the methods table with distillation (issue 9 item 4).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from common import add_sst2_arguments, load_sst2_for, print_table, run_one, save

METHODS = ("movement", "soft_movement", "platon", "mgpp", "pins", "seven", "rpp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sst2_arguments(parser, steps=300, max_train=20000)
    parser.add_argument("--sparsities", default="0.8,0.9")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--baseline", help="JSON rows of bench_gmp_sst2.py with the same settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a searched value for every method run (YAML value), e.g. "
                             "--set schedule.kind=constant; repeatable")
    parser.add_argument("--eval-interval", type=int,
                        help="also evaluate every this many steps; the rows then carry a 'curve' "
                             "(accuracy, train loss, method diagnostics per evaluation)")
    parser.add_argument("--teacher-dir", help="the dense reference as every run's teacher: trained once into "
                                              "this directory at --steps, reused when it is there")
    parser.add_argument("--out")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    data = load_sst2_for(args)
    common = dict(data=data, model=args.model, steps=args.steps, batch_size=args.batch_size, threads=args.threads,
                  eval_interval=args.eval_interval)
    if args.teacher_dir:
        from rayprune.training import TrialSettings
        from rayprune.training.reference import ensure_reference

        settings = TrialSettings(model=args.model, metric="accuracy", steps=args.steps, batch_size=args.batch_size,
                                 eval_interval=args.steps, threads=args.threads, learning_rate=args.learning_rate)
        teacher = ensure_reference(Path(args.teacher_dir), settings, data)
        common["teacher_dir"] = teacher.path
    sparsities = [float(x) for x in args.sparsities.split(",")]
    rows = []
    if args.baseline and Path(args.baseline).exists():
        rows = [r for r in json.loads(Path(args.baseline).read_text())
                if r["method"] == "dense" or r["target_sparsity"] in sparsities]
    else:
        rows.append(run_one({"learning_rate": args.learning_rate}, **common))
        for s in sparsities:
            rows.append(run_one({"method": "magnitude", "target_sparsity": s, "learning_rate": args.learning_rate}, **common))
    if args.teacher_dir:
        rows.append({"method": "teacher", "target_sparsity": 0.0, "accuracy": teacher.metrics["accuracy"],
                     "sparsity": 0.0, "sparsity_encoder": 0.0, "seconds": 0.0, "config": {"steps": teacher.steps}})
    print_table(rows, "baselines")
    for method in args.methods.split(","):
        for s in sparsities:
            config = {"method": method, "target_sparsity": s, "learning_rate": args.learning_rate, **overrides}
            rows.append(run_one(config, **common))
            print_table(rows[-1:], f"{method} {s} {overrides or ''}")
            diagnostics = {k: round(v, 4) for k, v in rows[-1].items() if k.startswith("method/")}
            if diagnostics:
                print(f"  diagnostics: {diagnostics}")
            save(rows, args.out)
    print_table(rows, f"SST-2 dev (872), MiniLM-L6, {args.steps} steps x batch {args.batch_size}, "
                      f"lr {args.learning_rate}, train subsample {len(data.train)}, seq {args.max_seq_length}")
    save(rows, args.out)


if __name__ == "__main__":
    main()
