"""Per-step bookkeeping cost and state memory of every method, as a ratio to a training step.

    python benchmarks/bench_method_overhead.py --threads 2

On the bundled MiniLM at batch 32, sequence 128 (CPU): times one plain training step (forward,
backward, AdamW) and, for each method, its hooks on the same step (``task_loss``/``extra_loss``
overhead excluded: teachers are a method's *modelled* cost, not bookkeeping) plus its masking
``step`` amortised over the method's own masking interval, all in one process.  Memory is the
size of the tensors in the method's ``state_dict`` beyond the model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--methods", default="magnitude,movement,soft_movement,platon,mgpp,pins,seven,rpp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rayprune.methods import SparsitySchedule, TrainingContext, get_method
    from rayprune.models import load_model_and_tokenizer, prunable_targets

    model, _ = load_model_and_tokenizer("bundled:minilm-l6", num_labels=2)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1000, 20000, (args.batch_size, args.seq), generator=gen)
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": torch.randint(0, 2, (args.batch_size,), generator=gen)}

    def train_step():
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return out

    step_times = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        train_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - t0)
    base = statistics.median(step_times[1:])
    print(f"training step (batch {args.batch_size}, seq {args.seq}, {args.threads} threads): {base * 1000:.0f} ms")
    print(f"{'method':<14} {'hooks ms':>9} {'mask ms':>9} {'interval':>8} {'per-step ms':>11} {'ratio':>7} {'state MB':>9}")
    total = 1000
    for name in args.methods.split(","):
        cls = get_method(name)
        method = cls()
        schedule = SparsitySchedule(final_sparsity=0.9, **{**dict(cls.schedule_defaults), "start": 0.0, "end": 1.0})
        ctx = TrainingContext(total_steps=total, num_train_examples=67349, learning_rate=5e-5, schedule=schedule,
                              evaluate_selection=lambda m: 0.5, step=10)
        method.prepare(model, prunable_targets(model, cls.default_scope), ctx)
        hooks, masks = [], []
        for r in range(args.repeats + 1):
            ctx.step = 10 + r
            train_step()
            t0 = time.perf_counter()
            method.after_backward(model)
            opt.zero_grad(set_to_none=True)
            method.after_optimizer_step(model)
            method.apply_masks()
            t1 = time.perf_counter()
            method.step(schedule.sparsity_at(ctx.step, total))
            t2 = time.perf_counter()
            hooks.append(t1 - t0)
            masks.append(t2 - t1)
        h, m = statistics.median(hooks[1:]), statistics.median(masks[1:])
        # masking events per step: every `interval` steps of the ramp, or once per run for
        # constant/oneshot schedules (RPP fixes its mask once)
        interval = total if schedule.kind in ("constant", "oneshot") else schedule.interval
        per_step = h + m / interval
        mem = tensor_bytes(method.state_dict()) / 2**20
        print(f"{name:<14} {h * 1000:>9.1f} {m * 1000:>9.1f} {interval:>8d} {per_step * 1000:>11.1f} "
              f"{per_step / base:>7.3f} {mem:>9.1f}")
        method.finalize()
        # fresh dense weights and optimizer for the next method
        model, _ = load_model_and_tokenizer("bundled:minilm-l6", num_labels=2)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5)


if __name__ == "__main__":
    main()
