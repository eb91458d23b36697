"""Dense fine-tune vs GMP at 50/80/90% sparsity: bundled MiniLM on SST-2, same step budget.

    python benchmarks/bench_gmp_sst2.py --data-dir ../shared/data/glue --steps 600

Train subsampled (``--max-train``), evaluated on the full SST-2 dev set (872 sentences).
Prints dev accuracy, measured sparsity and wall-clock per run, all in one process.
"""

from __future__ import annotations

import argparse

from common import add_sst2_arguments, load_sst2_for, print_table, run_one, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sst2_arguments(parser, steps=600, max_train=20000)
    parser.add_argument("--sparsities", default="0.5,0.8,0.9")
    parser.add_argument("--out")
    args = parser.parse_args()
    data = load_sst2_for(args)
    common = dict(data=data, model=args.model, steps=args.steps, batch_size=args.batch_size, threads=args.threads)
    rows = [run_one({"learning_rate": args.learning_rate}, **common)]
    print_table(rows, "dense")
    for s in (float(x) for x in args.sparsities.split(",")):
        rows.append(run_one({"method": "magnitude", "target_sparsity": s, "learning_rate": args.learning_rate}, **common))
        print_table(rows[-1:], f"gmp {s}")
    print_table(rows, f"SST-2 dev (872), MiniLM-L6, {args.steps} steps x batch {args.batch_size}, "
                      f"train subsample {len(data.train)}, seq {args.max_seq_length}")
    save(rows, args.out)


if __name__ == "__main__":
    main()
