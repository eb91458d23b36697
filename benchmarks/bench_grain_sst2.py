"""GRAIN at 20% and 10% encoder density vs its dense teacher: MiniLM on SST-2.

    python benchmarks/bench_grain_sst2.py --data-dir ../shared/data/glue --steps 300 --teacher-steps 300

The teacher is fine-tuned once (as a search does) and shared by both GRAIN runs; the students start
from the pretrained model and distil from it (SPEC §3.3).  Train subsampled, full dev set (872).
Reports dev accuracy, measured encoder sparsity and
wall-clock, plus the fraction of the teacher's accuracy kept (the paper keeps 99% at 20% and 10%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import add_sst2_arguments, load_sst2_for, print_table, run_one, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sst2_arguments(parser, steps=300, max_train=8000)
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--densities", default="0.2,0.1")
    parser.add_argument("--embedding-ranks", default="0",
                        help="comma-separated grain.embedding_rank values to run at every density "
                             "(0 = no factorisation; the paper's EF uses 192)")
    parser.add_argument("--teacher-dir", help="reuse a teacher saved by an earlier run (its cache directory)")
    parser.add_argument("--out")
    args = parser.parse_args()

    from rayprune.training.teacher import ensure_teacher
    from rayprune.training import TrialSettings

    data = load_sst2_for(args)
    work = Path(args.teacher_dir) if args.teacher_dir else Path(tempfile.mkdtemp(prefix="rayprune-grain-"))
    settings = TrialSettings(model=args.model, metric="accuracy", steps=args.teacher_steps,
                             batch_size=args.batch_size, threads=args.threads, learning_rate=args.learning_rate)
    t0 = time.perf_counter()
    teacher_dir = ensure_teacher(work, settings, data)
    print(f"teacher: {teacher_dir}")
    from transformers import AutoModelForSequenceClassification

    from rayprune.training import evaluate

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    teacher_acc = evaluate(teacher, data.eval, data, 128)["accuracy"]
    rows = [{"method": "teacher", "target_sparsity": 0.0, "accuracy": teacher_acc, "sparsity": 0.0,
             "sparsity_encoder": 0.0, "seconds": time.perf_counter() - t0}]
    common = dict(data=data, model=args.model, steps=args.steps, batch_size=args.batch_size,
                  threads=args.threads, teacher_dir=teacher_dir)
    for density in (float(x) for x in args.densities.split(",")):
        for rank in (int(x) for x in args.embedding_ranks.split(",")):
            row = run_one({"method": "grain", "target_sparsity": round(1 - density, 4),
                           "learning_rate": args.learning_rate, "grain.embedding_rank": rank}, **common)
            row["kept_of_teacher"] = row["accuracy"] / teacher_acc
            row["embedding_rank"] = rank
            rows.append(row)
            print_table(rows[-1:], f"grain density {density} embedding rank {rank or 'full'}")
    print_table(rows, f"SST-2 dev (872), MiniLM-L6, teacher {args.teacher_steps} steps, GRAIN {args.steps} steps")
    for r in rows[1:]:
        print(f"{r['target_sparsity']:.2f}: keeps {100 * r['kept_of_teacher']:.1f}% of the teacher's accuracy")
    save(rows, args.out)


if __name__ == "__main__":
    main()
