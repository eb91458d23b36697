"""Dense fine-tune vs GMP at 50/80/90% sparsity: bundled MiniLM on SST-2, same step budget.

    python benchmarks/bench_gmp_sst2.py --data-dir ../shared/data/glue --steps 600

Train subsampled (``--max-train``), evaluated on the full SST-2 dev set (872 sentences).
Prints dev accuracy, measured sparsity and wall-clock per run, all in one process.
"""

from __future__ import annotations

import argparse

from common import DEFAULT_GLUE, load_sst2, print_table, run_one, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train", type=int, default=20000)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsities", default="0.5,0.8,0.9")
    parser.add_argument("--out")
    args = parser.parse_args()
    data = load_sst2(data_dir=args.data_dir, model=args.model, max_train=args.max_train,
                     max_seq_length=args.max_seq_length)
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
