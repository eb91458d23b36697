"""Shared by the quality benchmarks: load SST-2, run one fine-tune(-and-prune) job, time it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def add_sst2_arguments(parser, *, steps: int, max_train: int) -> None:
    """The options every SST-2 quality benchmark takes (data, model, budget, threads); the
    defaults that differ between benchmarks are passed in."""
    parser.add_argument("--data-dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train", type=int, default=max_train)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)


def load_sst2_for(args):
    """:func:`load_sst2` with the options of :func:`add_sst2_arguments`."""
    return load_sst2(data_dir=args.data_dir, model=args.model, max_train=args.max_train,
                     max_seq_length=args.max_seq_length)


def load_sst2(*, data_dir: str, model: str, max_train: int, max_seq_length: int, seed: int = 0):
    """Tokenised SST-2: a seeded train subsample, the full dev set (872) for evaluation."""
    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer

    task = load_task(DataSpec(task="sst2", max_train_samples=max_train, seed=seed), data_dir=data_dir)
    _, tokenizer = load_model_and_tokenizer(model, num_labels=task.num_labels)
    return tokenize_task(task, tokenizer, max_seq_length=max_seq_length)


def run_one(flat_config: dict, *, data, model: str, steps: int, batch_size: int, threads: int,
            eval_interval: int | None = None, teacher_dir: str | None = None) -> dict:
    """Train one configuration (``flat_config`` as a search would produce it) and return a row."""
    from rayprune.training import TrialConfig, TrialSettings, run_training

    settings = TrialSettings(model=model, metric="accuracy", steps=steps, batch_size=batch_size,
                             eval_interval=eval_interval or steps, threads=threads, teacher_dir=teacher_dir,
                             learning_rate=flat_config.get("learning_rate", 5e-5))
    config = TrialConfig.from_flat(flat_config, settings)
    curve = []  # one entry per evaluation: how accuracy, loss and the method's numbers evolved

    def record(metrics: dict, _save) -> None:
        curve.append({k: v for k, v in metrics.items()
                      if k in ("step", "accuracy", "train_loss", "sparsity", "scheduled_sparsity")
                      or k.startswith("method/")})

    t0 = time.perf_counter()
    _, _, metrics = run_training(config, settings, data, report=record)
    return {
        "method": flat_config.get("method") or "dense",
        "target_sparsity": flat_config.get("target_sparsity", 0.0),
        "accuracy": metrics["accuracy"],
        "sparsity": metrics["sparsity"],
        "sparsity_encoder": metrics["sparsity_encoder"],
        "seconds": time.perf_counter() - t0,
        "train_loss": metrics.get("train_loss"),
        "config": dict(flat_config),
        # How the method got there (e.g. RPP: prox zeros vs magnitude top-up).
        **{k: v for k, v in metrics.items() if k.startswith("method/")},
        **({"curve": curve} if len(curve) > 1 else {}),
    }


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'method':<14} {'target':>7} {'dev acc':>8} {'sparsity':>9} {'encoder':>8} {'wall s':>8}")
    for r in rows:
        print(f"{r['method']:<14} {r['target_sparsity']:>7.2f} {r['accuracy']:>8.4f} "
              f"{r['sparsity']:>9.4f} {r['sparsity_encoder']:>8.4f} {r['seconds']:>8.1f}")


def save(rows: list[dict], out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(rows, indent=1))
