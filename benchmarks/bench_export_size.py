"""Size and load time of an export: dense ``model.safetensors`` vs ``--format sparse`` (issue 27).

The bundled MiniLM-L6 (with a 2-label classification head) has its encoder linears (the
``encoder_linear`` set every unstructured method prunes: 36 matrices, 10.6M of its 22.7M
parameters) zeroed by magnitude per matrix at 50 / 90 / 97%, or to 2:4 along the input dimension
(the two smallest of every four consecutive inputs of each row).  Each model is saved both ways
with ``rayprune.compression.save_model``; we report the weights file's size and the median
wall time (``--repeats``) of loading it back: ``AutoModelForSequenceClassification.from_pretrained``
for the dense file, ``rayprune.compression.load_sparse`` for the sparse one, in this process
(the files are in the page cache after the first load).  Every sparse load is checked to give
the dense model's logits exactly on a fixed batch.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_export_size.py [--repeats 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATTERNS = ["dense", 0.5, 0.9, 0.97, "2:4"]


def zero(model, targets: list[str], pattern) -> None:
    """Zero the smallest weights of each target matrix in place (fraction, or ``"2:4"``)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for fqn in targets:
            weight = params[fqn if fqn.endswith(".weight") else f"{fqn}.weight"]  # (out, in)
            if pattern == "2:4":
                groups = weight.view(weight.shape[0], -1, 4)  # (out, in / 4, 4)
                groups.scatter_(-1, groups.abs().argsort(dim=-1)[..., :2], 0.0)
            elif pattern != "dense":
                flat = weight.view(-1)
                flat[flat.abs().argsort()[: int(pattern * flat.numel())]] = 0.0


def timed(load, repeats: int) -> tuple[float, object]:
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = load()
        times.append(time.perf_counter() - start)
    return statistics.median(times), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from rayprune import measure
    from rayprune.compression import SPARSE_WEIGHTS_NAME, load_sparse, save_model
    from rayprune.models import load_model_and_tokenizer, prunable_targets

    torch.manual_seed(0)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    batch = {"input_ids": torch.randint(1000, 20000, (4, 32), generator=torch.Generator().manual_seed(0))}
    rows = []
    for pattern in PATTERNS:
        model, _ = load_model_and_tokenizer(args.model, num_labels=2)
        model.eval()
        targets = prunable_targets(model, "encoder_linear")
        zero(model, targets, pattern)
        with torch.no_grad():
            expected = model(**batch).logits
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
            dense_dir, sparse_dir = Path(tmp) / "dense", Path(tmp) / "sparse"
            save_model(model, dense_dir)
            start = time.perf_counter()
            save_model(model, sparse_dir, weights_format="sparse")
            save_sparse_s = time.perf_counter() - start
            dense_bytes = os.path.getsize(dense_dir / "model.safetensors")
            sparse_bytes = os.path.getsize(sparse_dir / SPARSE_WEIGHTS_NAME)
            dense_s, dense_model = timed(
                lambda: AutoModelForSequenceClassification.from_pretrained(dense_dir).eval(), args.repeats)
            sparse_s, sparse_model = timed(lambda: load_sparse(sparse_dir), args.repeats)
            with torch.no_grad():
                identical = (torch.equal(sparse_model(**batch).logits, expected)
                             and torch.equal(dense_model(**batch).logits, expected))
        params = dict(model.named_parameters())
        weights = [params[t if t.endswith(".weight") else f"{t}.weight"].detach() for t in targets]
        row = {
            "pattern": pattern,
            "sparsity_encoder_linear": measure.sparsity(model, targets),
            "sparsity_all_parameters": 1 - measure.count_parameters(model, nonzero=True) / measure.count_parameters(model),
            # The pruned matrices alone: as dense float32, and as the sparse file stores them
            # (bitmask + values where that is smaller, else dense).
            "targets_dense_bytes": sum(4 * w.numel() for w in weights),
            "targets_sparse_bytes": sum(min(4 * w.numel(), (w.numel() + 7) // 8 + 4 * int((w != 0).sum()))
                                        for w in weights),
            "dense_bytes": dense_bytes, "sparse_bytes": sparse_bytes, "ratio": sparse_bytes / dense_bytes,
            "dense_load_s": dense_s, "sparse_load_s": sparse_s, "sparse_save_s": save_sparse_s,
            "identical_logits": identical,
        }
        rows.append(row)
        print(f"{str(pattern):>6}  enc-linear sparsity {row['sparsity_encoder_linear']:.3f}  "
              f"all {row['sparsity_all_parameters']:.3f}  dense {dense_bytes / 1e6:6.1f} MB  "
              f"sparse {sparse_bytes / 1e6:6.1f} MB ({row['ratio']:.2f}; pruned matrices "
              f"{row['targets_dense_bytes'] / 1e6:.1f} -> {row['targets_sparse_bytes'] / 1e6:.1f} MB)  load dense {dense_s:.3f}s "
              f"sparse {sparse_s:.3f}s  save sparse {save_sparse_s:.2f}s  identical={identical}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
