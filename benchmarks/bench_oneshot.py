"""Cost of the one-shot calibration pass (Wanda, SparseGPT) on the bundled MiniLM.

    flock /tmp/rayprune-heavy.lock python benchmarks/bench_oneshot.py --threads 2

For each method x pattern (unstructured 50%, 2:4) a fresh subprocess loads MiniLM-L6 and SST-2
(the shared GLUE copy; the built-in demo task if it is absent), then runs the whole layer-by-layer
pass through ``method.prepare`` exactly as a trial does (``schedule.kind: oneshot, start: 0``)
with ``--samples`` training examples (default 128, the papers' number) in batches of 32.
Reported: wall seconds of the pass, peak resident memory of the process during the pass above
its peak before it (``resource.getrusage``: torch's CPU allocations are invisible to
tracemalloc), the calibration tokens, and SparseGPT's relative reconstruction error.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
CONFIGS = [("wanda", "unstructured"), ("wanda", "2:4"), ("sparsegpt", "unstructured"), ("sparsegpt", "2:4")]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def one(method_name: str, pattern: str, args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.methods import SparsitySchedule, TrainingContext, get_method
    from rayprune.models import load_model_and_tokenizer, prunable_targets

    glue = Path(args.data_dir)
    if (glue / "sst2").is_dir():
        spec = DataSpec(task="sst2", max_train_samples=4000)
        task = load_task(spec, data_dir=str(glue))
    else:
        spec = DataSpec(task="demo", max_train_samples=1600)
        task = load_task(spec)
    model, tokenizer = load_model_and_tokenizer("bundled:minilm-l6", num_labels=task.num_labels)
    data = tokenize_task(task, tokenizer, max_seq_length=args.max_seq_length)
    model.train()

    def calibration(samples: int, seed: int):
        idx = np.random.default_rng(seed).permutation(len(data.train))[:samples]
        for batch in data.train.subset(np.sort(idx)).batches(32, shuffle=False):
            batch.pop("labels")
            yield batch

    tokens = sum(int(b["attention_mask"].sum()) for b in calibration(args.samples, 0))
    cls = get_method(method_name)
    method = cls(sparsity_pattern=pattern, calibration_samples=args.samples)
    schedule = SparsitySchedule(final_sparsity=0.5, kind="oneshot", start=0.0)
    context = TrainingContext(total_steps=100, schedule=schedule, seed=0, calibration_batches=calibration)
    before = _peak_mb()
    method.prepare(model, prunable_targets(model, cls.default_scope), context)
    after = _peak_mb()
    diag = method.diagnostics()
    return {
        "method": method_name, "pattern": pattern, "task": spec.task, "samples": args.samples,
        "tokens": tokens, "seconds": round(diag["oneshot_seconds"], 2),
        "peak_rss_before_mb": round(before), "peak_rss_growth_mb": round(after - before),
        "reconstruction_error": round(diag.get("reconstruction_error", float("nan")), 4),
        "nm_violations": diag.get("nm_violations"),
        "sparsity": round(sum(int((p == 0).sum()) for p in method.params.values())
                          / sum(p.numel() for p in method.params.values()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--data-dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "PATTERN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args)))
        return
    rows = []
    for method_name, pattern in CONFIGS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", method_name, pattern, "--threads", str(args.threads),
             "--samples", str(args.samples), "--max-seq-length", str(args.max_seq_length),
             "--data-dir", args.data_dir],
            check=True, capture_output=True, text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| method | pattern | samples (tokens) | pass seconds | peak RSS growth (MB) | reconstruction error | sparsity |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['pattern']} | {r['samples']} ({r['tokens']}) | {r['seconds']} | "
              f"{r['peak_rss_growth_mb']} | {r['reconstruction_error']} | {r['sparsity']} |")


if __name__ == "__main__":
    main()
