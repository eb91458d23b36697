"""Is torch's fused AdamW worth it on CPU?  One trial step (forward + backward of a batch, then
the optimizer step) on the bundled MiniLM, with AdamW's ``foreach`` and ``fused`` kernels, in
one run, so the ratio is what counts (the machine is shared and noisy).

    .venv/bin/python benchmarks/bench_optimizer.py --threads 1 --repeats 20

rayprune.training.precision.Precision.optimizer picks ``fused`` on CPU and CUDA (not under an
fp16 loss scaler on CPU); this is the measurement behind that choice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    from rayprune.models import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer("bundled:minilm-l6", num_labels=2, is_regression=False)
    sentences = ["the film was not good at all, but the actors were quite wonderful in it"] * args.batch_size
    batch = dict(tokenizer(sentences, return_tensors="pt", padding=True))
    batch["labels"] = torch.zeros(args.batch_size, dtype=torch.long)
    kinds = {"foreach": {"foreach": True}, "fused": {"fused": True}}
    optimizers = {k: torch.optim.AdamW(model.parameters(), lr=1e-5, **kw) for k, kw in kinds.items()}
    times: dict[str, dict[str, list[float]]] = {k: {"forward_backward": [], "optimizer": []} for k in kinds}
    for repeat in range(args.repeats + 2):  # interleaved, the first two are warm-up
        for name, optimizer in optimizers.items():
            t0 = time.perf_counter()
            model(**batch).loss.backward()
            t1 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if repeat >= 2:
                times[name]["forward_backward"].append(t1 - t0)
                times[name]["optimizer"].append(t2 - t1)
    print(f"MiniLM-L6 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), batch "
          f"{args.batch_size} x {batch['input_ids'].shape[1]} tokens, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print("| AdamW | optimizer step s | forward+backward s | whole step s |")
    print("|---|---|---|---|")
    whole = {}
    for name, t in times.items():
        opt, fb = statistics.median(t["optimizer"]), statistics.median(t["forward_backward"])
        whole[name] = opt + fb
        print(f"| {name} | {opt:.3f} | {fb:.3f} | {opt + fb:.3f} |")
    print(f"fused / foreach: optimizer step {statistics.median(times['fused']['optimizer']) / statistics.median(times['foreach']['optimizer']):.2f}x, "
          f"whole step {whole['fused'] / whole['foreach']:.2f}x")


if __name__ == "__main__":
    main()
