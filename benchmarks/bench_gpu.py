"""GPU throughput: optimizer steps per second in fp32 vs bf16, and trials per GPU-hour when 1, 2
or 4 trials share one GPU.

    python benchmarks/bench_gpu.py                      # on a machine with a CUDA GPU
    python benchmarks/bench_gpu.py --device cpu --models minilm --steps 5 --warmup 2 --packings ''
                                                        # checks the script on a CPU (tiny)

Steps per second: dense fine-tuning steps of MiniLM (``bundled:minilm-l6``) and of a
BERT-base-sized model built from ``BertConfig()`` (12 layers, hidden 768, random weights, no
download), on fixed-length synthetic batches, through the trial loop's own precision object
(:class:`rayprune.training.precision.Precision`: autocast, fused AdamW, pinned non-blocking
batches, TF32), so the numbers are the loop's.

Trials per GPU-hour: the same small search (GMP to 80 % on MiniLM, demo task, ``--search-trials``
trials, FIFO) run through ``rayprune``'s search driver with ``resources.gpu`` = 1, 0.5 and 0.25
and as many trials at once, on a Ray instance that is given exactly one GPU; trials per hour of
wall-clock from the first trial's start to the last one's end, model loading and Ray's worker
start included (what a user's search sees).

Without CUDA (and without ``--device cpu``) it exits with status 2 and says so.  Record what it
measured on a GPU in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("minilm", "bert-base")


def build_model(kind: str):
    """A sequence classifier of ``kind`` (2 labels) and its vocabulary size."""
    from transformers import BertConfig, BertForSequenceClassification

    if kind == "minilm":
        from rayprune.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer("bundled:minilm-l6", num_labels=2)
        return model, tokenizer.vocab_size
    if kind == "bert-base":
        config = BertConfig(num_labels=2)  # BertConfig's defaults are BERT-base's shape
        return BertForSequenceClassification(config), config.vocab_size
    raise SystemExit(f"bench_gpu.py: unknown model {kind!r}; choose from {', '.join(MODELS)}")


def steps_per_second(kind: str, precision_name: str, *, device: str, batch_size: int, seq: int,
                     steps: int, warmup: int) -> dict:
    """Time ``steps`` training steps (after ``warmup``) of ``kind`` in ``precision_name``."""
    import torch

    from rayprune.training.precision import Precision

    torch.manual_seed(0)
    model, vocab = build_model(kind)
    precision = Precision.create(precision_name, device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = precision.optimizer(params, lr=2e-5, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    host_batches = [
        {"input_ids": torch.randint(1, vocab, (batch_size, seq), generator=gen),
         "attention_mask": torch.ones(batch_size, seq, dtype=torch.long),
         "labels": torch.randint(0, 2, (batch_size,), generator=gen)}
        for _ in range(4)
    ]

    def one_step(model, optimizer, i: int) -> None:
        batch = precision.to_device(host_batches[i % len(host_batches)])
        with precision.autocast():
            loss = model(**batch).loss
        precision.backward(loss)
        finite = precision.unscale(optimizer)
        if finite:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        precision.step(optimizer, finite=finite)
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for i in range(warmup):
        one_step(model, optimizer, i)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        one_step(model, optimizer, i)
    sync()
    elapsed = time.perf_counter() - t0
    row = {"model": kind, "precision": precision.name, "device": device, "batch_size": batch_size, "seq": seq,
           "steps": steps, "steps_per_s": steps / elapsed, "examples_per_s": steps * batch_size / elapsed,
           "skipped_steps": precision.skipped_steps}
    if device.startswith("cuda"):
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer
    from rayprune.training.precision import release_device_memory

    release_device_memory()
    return row


def packing_space(args, per_gpu: int, name: str) -> dict:
    """The search for one packing: ``per_gpu`` trials at once, each with 1/per_gpu of the GPU."""
    return {
        "name": name,
        "model": "bundled:minilm-l6",
        "data": {"task": "demo", "max_train_samples": 2000, "max_eval_samples": 300, "max_seq_length": args.seq},
        "objective": {"metric": "accuracy"},
        "reference": "none",
        "training": {"steps": args.search_steps, "batch_size": args.batch_size,
                     "eval_interval": args.search_steps, "learning_rate": 1e-4},
        "budget": {"num_samples": args.search_trials, "max_concurrent": per_gpu},
        "resources": {"cpu": args.cpus_per_trial, "gpu": (1.0 / per_gpu) if args.device == "cuda" else 0},
        "scheduler": {"kind": "fifo"},
        "search": {"skip_duplicates": False},  # N trials of one configuration: throughput, not search
        "space": {"method": "magnitude", "target_sparsity": 0.8},
    }


def trials_per_gpu_hour(args, per_gpu: int, work: Path) -> dict:
    """Run one packing's search and measure its throughput from Ray's own trial timestamps."""
    from ray.tune import ExperimentAnalysis

    from rayprune.config import parse_spec
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search

    name = f"pack{per_gpu}"
    spec = parse_spec(packing_space(args, per_gpu, name), path=str(work / f"{name}.yaml"))
    prepared = prepare_search(spec, output=work / name)
    summary = run_search(prepared, verbose=0)
    analysis = ExperimentAnalysis(str(Path(summary["search_dir"]) / "ray" / "tune"))
    results = [t.last_result for t in analysis.trials if t.last_result]
    starts = [r["timestamp"] - r["time_total_s"] for r in results]
    ends = [r["timestamp"] for r in results]
    span = max(ends) - min(starts)
    return {
        "trials_per_gpu": per_gpu, "trials": len(results), "steps_per_trial": args.search_steps,
        "span_s": span, "trials_per_gpu_hour": 3600.0 * len(results) / span,
        "precision": sorted({str(r.get("numeric_precision")) for r in results}),
        "mean_trial_s": sum(r["time_total_s"] for r in results) / len(results),
        "errors": summary.get("errors"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu only checks that the script works (tiny runs); numbers are for cuda")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per model and precision")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--packings", default="1,2,4", help="trials per GPU for the search part ('' skips it)")
    parser.add_argument("--search-trials", type=int, default=4)
    parser.add_argument("--search-steps", type=int, default=300)
    parser.add_argument("--cpus-per-trial", type=float, default=None,
                        help="CPUs per trial in the search part (default: a quarter of the machine)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device here (torch.cuda.is_available() is False); run it on a "
              "machine with a GPU, or pass --device cpu to check that the script works", file=sys.stderr)
        return 2
    if args.cpus_per_trial is None:
        args.cpus_per_trial = max(1, (os.cpu_count() or 4) // 4)
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "steps_per_s": [], "packing": []}
    if args.device == "cpu":
        torch.set_num_threads(max(1, int(args.cpus_per_trial)))
    for kind in filter(None, args.models.split(",")):
        for precision in filter(None, args.precisions.split(",")):
            row = steps_per_second(kind, precision, device=args.device, batch_size=args.batch_size,
                                   seq=args.seq, steps=args.steps, warmup=args.warmup)
            result["steps_per_s"].append(row)
            print(f"{kind:10s} {row['precision']:5s} {row['steps_per_s']:8.2f} steps/s "
                  f"({row['examples_per_s']:.0f} examples/s, batch {args.batch_size} x {args.seq})", flush=True)
    packings = [int(k) for k in args.packings.split(",") if k]
    if packings:
        import ray

        work = Path(tempfile.mkdtemp(prefix="rayprune-bench-gpu-"))
        # A Ray of our own (address="local": never a cluster already running here) with exactly
        # one GPU, so 1/k-GPU trials pack onto that one instead of spreading over several.
        ray.init(address="local", num_gpus=1 if args.device == "cuda" else 0, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        try:
            for per_gpu in packings:
                row = trials_per_gpu_hour(args, per_gpu, work)
                result["packing"].append(row)
                print(f"{per_gpu} trial(s) per GPU: {row['trials_per_gpu_hour']:.0f} trials/GPU-hour "
                      f"({row['trials']} trials in {row['span_s']:.1f} s, precision {row['precision']})", flush=True)
        finally:
            ray.shutdown()
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
