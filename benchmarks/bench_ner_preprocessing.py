"""Seconds and peak memory of reading and tokenising the Broad Twitter Corpus (train + dev), the
preflight work of a token-classification search.

    python benchmarks/bench_ner_preprocessing.py [--btc ../shared/data/ner/btc] [--max-seq-length 128]

Three timed phases, each once, in one process (the tokenizer is loaded before timing starts):
reading the CoNLL files into a ``TaskData`` (``load_task``), tokenising the three splits with
first-sub-word alignment and the baseline's eval tags (``tokenize_task``), and the floor.  Memory:
the process's peak resident set (``ru_maxrss``, which includes the Rust tokenizer's buffers) before
and after, and Python's own peak allocation during the two phases (``tracemalloc``, which slows
the phases: ``--no-tracemalloc`` times them without it).  The numbers
printed last are one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from pathlib import Path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--btc", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ner" / "btc"))
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="time without tracemalloc (which slows Python code about 2x); no Python peaks")
    args = parser.parse_args()

    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer

    spec = DataSpec(task_type="token_classification", train_files=[f"{args.btc}/btc.train"],
                    eval_files=[f"{args.btc}/btc.dev"], max_seq_length=args.max_seq_length)
    probe = load_task(DataSpec(task_type="token_classification", train_files=[f"{args.btc}/btc.dev"],
                               eval_files=[f"{args.btc}/btc.dev"]))
    _, tokenizer = load_model_and_tokenizer(args.model, task=probe.task)
    rss_before = peak_rss_mib()

    if not args.no_tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    task = load_task(spec)
    t1 = time.perf_counter()
    _, read_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    data = tokenize_task(task, tokenizer)
    t2 = time.perf_counter()
    _, tok_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    floor = task.task.floor("f1", data)
    t3 = time.perf_counter()
    arrays = sum(a.nbytes for s in (data.train, data.selection, data.eval)
                 for a in (s.input_ids, s.attention_mask, s.labels))
    result = {
        "sentences": {"train": len(task.train), "selection": len(task.selection), "eval": len(task.eval)},
        "words": sum(len(ex["tokens"]) for split in (task.train, task.selection, task.eval) for ex in split),
        "read_s": round(t1 - t0, 3), "tokenize_s": round(t2 - t1, 3), "floor_s": round(t3 - t2, 3),
        "python_peak_read_mib": round(read_peak / 2**20, 1), "python_peak_tokenize_mib": round(tok_peak / 2**20, 1),
        "rss_peak_before_mib": round(rss_before, 1), "rss_peak_after_mib": round(peak_rss_mib(), 1),
        "token_arrays_mib": round(arrays / 2**20, 2), "floor_f1": round(floor, 4),
        "max_seq_length": args.max_seq_length,
    }
    for note in task.notes:
        print("note:", note)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
