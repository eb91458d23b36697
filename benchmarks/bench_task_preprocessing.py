"""How long a task's data preparation takes and how much memory it needs: reading + repairing the
files (``load_task``) and tokenising every split (``tokenize_task``), once per search on the driver.

    .venv/bin/python benchmarks/bench_task_preprocessing.py --task squad
    .venv/bin/python benchmarks/bench_task_preprocessing.py --task squad --max-seq-length 192 --doc-stride 64

``squad``: the whole SQuAD v1.1 dev file (10,570 questions, the only SQuAD file offline), carved
into train and eval by article (eval_fraction 0.2, group_field title) so every question is
tokenised exactly once; the selection split is off.  Prints one JSON line: seconds per stage,
questions, windows, the peak resident memory of the process (``ru_maxrss``, which includes the
tokenizer's Rust allocations that ``tracemalloc`` cannot see) above the baseline after the
imports and the tokenizer, and the pickled size of the tokenised task (what Ray's object store
holds for the trials).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[2] / "shared"
SQUAD_DEV = SHARED / "data" / "squad" / "v1.1" / "dev-v1.1.json"


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["squad"], required=True)
    parser.add_argument("--file", default=str(SQUAD_DEV))
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    args = parser.parse_args()

    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer
    from rayprune.tasks.extractive_qa import ExtractiveQATask

    _, tokenizer = load_model_and_tokenizer(args.model, task=ExtractiveQATask(metrics=("f1",)))
    baseline = _current_rss_mib()
    spec = DataSpec(task=args.task, train_files=[args.file], eval_fraction=0.2, group_field="title",
                    selection_fraction=0.0, max_seq_length=args.max_seq_length,
                    task_options={"doc_stride": args.doc_stride})
    t0 = time.perf_counter()
    task = load_task(spec)
    t1 = time.perf_counter()
    data = tokenize_task(task, tokenizer)
    t2 = time.perf_counter()
    pickled = len(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    questions = len(task.train) + len(task.eval)
    windows = len(data.train) + len(data.eval)
    print(json.dumps({
        "task": args.task, "file": args.file, "model": args.model, "max_seq_length": args.max_seq_length,
        "doc_stride": args.doc_stride, "questions": questions, "windows": windows,
        "load_s": round(t1 - t0, 2), "tokenize_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
        "baseline_rss_mib": round(baseline, 1), "peak_rss_mib": round(_rss_mib(), 1),
        "peak_above_baseline_mib": round(_rss_mib() - baseline, 1), "pickled_mib": round(pickled / 2**20, 1),
        "notes": task.notes,
    }))


if __name__ == "__main__":
    main()
