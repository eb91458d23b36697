"""CPU inference latency and memory of the bundled MiniLM-L6, dense vs structurally pruned.

For each method (``grain``: query/value/FFN units; ``head_ffn``: whole heads + FFN units) and
each target encoder density, the units are chosen by the method's own hooks and selection
(``after_backward`` + ``step``: Taylor scores, EMA, StructReg, global parameter-weighted ranking,
masks only grow) driven through a simulated cubic ramp of ``--ramp-steps`` masking steps.  No
distillation training happens, so the structure is the one the *selection* produces, not the one
a full GRAIN run would converge to.  Unit scores (``--scores``):

* ``taylor`` (default): the gradients of the hard-label loss on ``--taylor-batches`` SST-2
  training batches (pretrained encoder, fresh classifier; /work/shared/data/glue, or
  ``$RAYPRUNE_GLUE_DIR``), cycled through the ramp: IS = |Σ g·w| as in GRAIN;
* ``magnitude``: ``.grad`` set to the weight itself, IS = Σ w² over the unit's gate parameters
  (used automatically when the data is absent).

``beta`` is lowered to 0.9 so that the EMA memory (~10 steps) relative to the ramp (200 steps)
is close to a real GRAIN run's (~500 steps for a ramp of ~8k steps), which lets StructReg empty
thin heads as it would in training.  Latency depends only on the resulting shapes; accuracy is
not measured here.

The pruned model is exported with ``rayprune.methods.structured.models.shrink_model`` and checked against the
masked model on a small batch.  Latency: forward passes of batch 32 x seq 128 (random token ids,
no padding) under ``torch.inference_mode`` with ``torch.set_num_threads(os.cpu_count())``
(``--threads``); all models are timed round-robin in each repeat (so background load hits all of
them alike) and the median per model is reported, and the minimum (the least disturbed run),
with ratios to the dense model timed in the same run.  A second pass (``--cpu-repeats``) times
one thread by process CPU time, which other processes sharing the cores barely disturb: with
OpenMP threads on oversubscribed cores, waiting threads spin and wall time inflates several-fold
for small models, so on a busy machine that column is the one to trust.

Memory: each model is saved (``save_pretrained``), then loaded and run once on the same batch in
a fresh subprocess; we report that process's peak resident set size (``VmHWM`` of
/proc/self/status: imports + load + one forward; not ``ru_maxrss``, which a child inherits from
its parent's peak) and its RSS just after ``import torch, transformers`` (``base``), so
``peak - base`` is what the model costs (weights, load spike and activations).  Linux only.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_structured.py [--repeats 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from rayprune.methods import SparsitySchedule, TrainingContext, get_method  # noqa: E402
from rayprune.models import load_model_and_tokenizer, prunable_targets  # noqa: E402
from rayprune.methods.structured.models import (  # noqa: E402
    dense_encoder_parameter_count,
    encoder_parameter_count,
    read_pruned_layout,
    shrink_model,
)

MODEL = "bundled:minilm-l6"
GLUE_DIR = os.environ.get("RAYPRUNE_GLUE_DIR", "/work/shared/data/glue")

_CHILD = r"""
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
def status_mb(field):
    # VmRSS: resident now; VmHWM: peak resident of this process image (reset by exec, unlike
    # getrusage's ru_maxrss, which a child inherits from its parent's peak)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
import torch, transformers
import rayprune.methods.structured.models  # registers the pruned model with the Auto classes
torch.set_num_threads(int(sys.argv[3]))
base = status_mb("VmRSS")
model = transformers.AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
loaded = status_mb("VmRSS")
batch = torch.load(sys.argv[2], weights_only=True)
with torch.inference_mode():
    model(**batch)
print(json.dumps({"base_rss_mb": base, "loaded_rss_mb": loaded, "peak_rss_mb": status_mb("VmHWM")}))
"""


def taylor_gradients(dense, tokenizer, batches: int, batch_size: int) -> list[dict[str, torch.Tensor]] | None:
    """Gradients of the hard-label loss on ``batches`` SST-2 training batches (pretrained encoder,
    fresh classifier), per named parameter; ``None`` when the GLUE data directory is absent."""
    path = os.path.join(GLUE_DIR, "sst2", "train.tsv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    model = copy.deepcopy(dense).train()
    grads = []
    for b in range(batches):
        chosen = [rows[i] for i in order[b * batch_size:(b + 1) * batch_size]]
        batch = tokenizer([r["sentence"] for r in chosen], padding=True, truncation=True,
                          max_length=64, return_tensors="pt")
        model.zero_grad(set_to_none=True)
        model(**batch, labels=torch.tensor([int(r["label"]) for r in chosen])).loss.backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
    return grads


def select_and_shrink(dense, method_name: str, density: float, ramp_steps: int, beta: float, grads,
                      embedding_rank: int = 0):
    """Prune a copy of ``dense`` to ``density`` with the method's own hooks and selection, the
    unit scores coming from ``grads`` (a list of per-parameter gradients cycled through the ramp)
    or, when ``grads`` is None, from the weights themselves (magnitude).  Returns (shrunk model,
    max |logit difference| shrunk vs masked)."""
    model = copy.deepcopy(dense)
    cls = get_method(method_name)
    method = cls(beta=beta, hidden_loss_weight=0.0, embedding_rank=embedding_rank)
    method.prepare(model, prunable_targets(model, cls.default_scope), TrainingContext(total_steps=ramp_steps))
    schedule = SparsitySchedule(final_sparsity=1.0 - density, kind="cubic", start=0.0, end=1.0, interval=1)
    for t in range(ramp_steps):
        for fqn, p in method.params.items():
            # magnitude: g = w, so g . w = w^2 through the same Taylor formula
            p.grad = p.detach() if grads is None else grads[t % len(grads)][fqn]
        method.after_backward(model)
        if schedule.should_update(t, ramp_steps):
            method.step(schedule.sparsity_at(t, ramp_steps))
    for p in method.params.values():
        p.grad = None
    check = {"input_ids": torch.randint(1000, 20000, (4, 128), generator=torch.Generator().manual_seed(1))}
    check["attention_mask"] = torch.ones_like(check["input_ids"])
    check["attention_mask"][1, 60:] = 0
    with torch.inference_mode():
        masked_logits = model(**check).logits
    small = method.finalize().eval()
    with torch.inference_mode():
        diff = float((small(**check).logits - masked_logits).abs().max())
    return small, diff


def describe(summary) -> dict:
    heads = [(q, v) for layer in summary for q, v in zip(layer["query_units"], layer["value_units"]) if v > 0]
    return {
        "heads_kept": len(heads),
        "mean_query_units": round(statistics.mean(q for q, _ in heads), 1) if heads else 0.0,
        "mean_value_units": round(statistics.mean(v for _, v in heads), 1) if heads else 0.0,
        "ffn_kept": sum(layer["intermediate_size"] for layer in summary),
    }


def time_models(models: dict, batch: dict, repeats: int, warmup: int, threads: int) -> dict[str, dict[str, list[float]]]:
    """Wall-clock and process CPU seconds of one forward per model, ``repeats`` times, models
    interleaved (round-robin) so that background load hits all of them alike."""
    torch.set_num_threads(threads)
    times = {name: {"wall": [], "cpu": []} for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(**batch)
        for _ in range(repeats):
            for name, model in models.items():
                cpu, wall = time.process_time(), time.perf_counter()
                model(**batch)
                times[name]["wall"].append(time.perf_counter() - wall)
                times[name]["cpu"].append(time.process_time() - cpu)
    return times


def measure_memory(model, batch_path: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, tmp, batch_path, str(threads)],
            check=True, capture_output=True, text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", default="0.2,0.1,0.05", help="encoder densities (comma-separated)")
    parser.add_argument("--methods", default="grain,head_ffn", help="structured methods (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the timed pass (default: os.cpu_count())")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cpu-repeats", type=int, default=3,
                        help="repeats of the single-thread process-CPU-time pass (0 skips it)")
    parser.add_argument("--ramp-steps", type=int, default=200)
    parser.add_argument("--beta", type=float, default=0.9)
    parser.add_argument("--scores", choices=("taylor", "magnitude"), default="taylor",
                        help="unit scores: Taylor from a few SST-2 batches (magnitude if no data) or |w|^2")
    parser.add_argument("--taylor-batches", type=int, default=8)
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory runs")
    parser.add_argument("--embedding-rank", type=int, default=0,
                        help="also time every pruned model with its word embeddings SVD-factorised "
                             "to this rank (GRAIN's EF; 0 = skip)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    threads = args.threads
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dense, tokenizer = load_model_and_tokenizer(MODEL, num_labels=2)
    dense.eval()
    grads = None
    if args.scores == "taylor":
        grads = taylor_gradients(dense, tokenizer, args.taylor_batches, 32)
        if grads is None:
            print(f"no SST-2 data under {GLUE_DIR}: falling back to magnitude scores", file=sys.stderr)
    score_kind = "magnitude (grad := weight)" if grads is None else (
        f"Taylor |sum g.w| from {len(grads)} hard-label SST-2 batches of 32 (fresh classifier)")
    dense_encoder = dense_encoder_parameter_count(dense.config)

    models = {"dense (HF BERT)": dense}
    full = describe(read_pruned_layout(dense)[0])
    rows = {"dense (HF BERT)": {"method": "dense", "target_density": 1.0, "layout": full, "max_logit_diff": 0.0}}
    models["dense (PrunedBert)"] = shrink_model(dense).eval()  # same sizes, our implementation
    rows["dense (PrunedBert)"] = {"method": "dense", "target_density": 1.0, "layout": full, "max_logit_diff": None}
    for method_name in args.methods.split(","):
        for density in (float(x) for x in args.densities.split(",")):
            print(f"selecting units: {method_name} at density {density}", file=sys.stderr, flush=True)
            small, diff = select_and_shrink(dense, method_name, density, args.ramp_steps, args.beta, grads)
            name = f"{method_name} {density:.0%}"
            models[name] = small
            rows[name] = {"method": method_name, "target_density": density,
                          "layout": describe(small.config.pruned_layout), "max_logit_diff": diff}
            if args.embedding_rank:
                small, diff = select_and_shrink(dense, method_name, density, args.ramp_steps, args.beta,
                                                grads, embedding_rank=args.embedding_rank)
                name = f"{method_name} {density:.0%} EF{args.embedding_rank}"
                models[name] = small
                rows[name] = {"method": method_name, "target_density": density,
                              "embedding_rank": args.embedding_rank,
                              "layout": describe(small.config.pruned_layout), "max_logit_diff": diff}

    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch_size, args.seq_len), generator=gen)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    print(f"timing {len(models)} models", file=sys.stderr, flush=True)
    times = time_models(models, batch, args.repeats, args.warmup, threads)
    dense_median = statistics.median(times["dense (HF BERT)"]["wall"])
    # One thread, process CPU time: insensitive to other processes sharing the cores.
    single = time_models(models, batch, args.cpu_repeats, 1, 1) if args.cpu_repeats else None
    torch.set_num_threads(threads)

    with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as f:
        torch.save(batch, f.name)
        batch_path = f.name
    try:
        for name, model in models.items():
            row = rows[name]
            row["params"] = sum(p.numel() for p in model.parameters())
            row["encoder_params"] = encoder_parameter_count(model)
            row["encoder_density"] = row["encoder_params"] / dense_encoder
            row["latency_s"] = times[name]["wall"]
            row["process_cpu_s"] = times[name]["cpu"]
            row["median_s"] = statistics.median(times[name]["wall"])
            row["speedup_vs_dense"] = dense_median / row["median_s"]
            row["min_s"] = min(times[name]["wall"])
            row["min_speedup_vs_dense"] = min(times["dense (HF BERT)"]["wall"]) / row["min_s"]
            if single is not None:
                row["single_thread_cpu_s"] = single[name]["cpu"]
                row["single_thread_cpu_median_s"] = statistics.median(single[name]["cpu"])
                row["single_thread_speedup_vs_dense"] = (
                    statistics.median(single["dense (HF BERT)"]["cpu"]) / row["single_thread_cpu_median_s"]
                )
            if not args.no_memory:
                print(f"memory: {name}", file=sys.stderr, flush=True)
                row["memory"] = measure_memory(model, batch_path, threads)
    finally:
        os.unlink(batch_path)

    print(f"\nMiniLM-L6 ({MODEL}), batch {args.batch_size} x seq {args.seq_len}, {threads} threads, "
          f"median of {args.repeats} (round-robin), torch {torch.__version__}")
    print(f"unit scores: {score_kind}; simulated cubic ramp of {args.ramp_steps} steps, beta={args.beta}")
    header = (f"{'model':<20} {'enc.dens':>8} {'params':>10} {'enc.params':>10} {'median s':>8} "
              f"{'speedup':>7} {'min s':>6} {'speedup':>7} {'1thr cpu s':>10} {'speedup':>7} "
              f"{'peak MB':>7} {'-base':>5} {'heads':>5} {'q/v per head':>12} {'FFN':>5}")
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        mem = row.get("memory")
        peak = f"{mem['peak_rss_mb']:.0f}" if mem else "-"
        delta = f"{mem['peak_rss_mb'] - mem['base_rss_mb']:.0f}" if mem else "-"
        cpu = f"{row['single_thread_cpu_median_s']:.3f}" if single is not None else "-"
        cpu_ratio = f"{row['single_thread_speedup_vs_dense']:.2f}x" if single is not None else "-"
        layout = row["layout"]
        print(
            f"{name:<20} {row['encoder_density']:>8.3f} {row['params']:>10,} {row['encoder_params']:>10,} "
            f"{row['median_s']:>8.3f} {row['speedup_vs_dense']:>6.2f}x {row['min_s']:>6.3f} "
            f"{row['min_speedup_vs_dense']:>6.2f}x {cpu:>10} {cpu_ratio:>7} {peak:>7} {delta:>5} "
            f"{layout['heads_kept']:>5} {layout['mean_query_units']:>5}/{layout['mean_value_units']:<6} "
            f"{layout['ffn_kept']:>5}"
        )
    print(f"max |logit difference| shrunk vs masked: "
          f"{max(r['max_logit_diff'] or 0.0 for r in rows.values()):.2e}")
    result = {
        "model": MODEL, "batch_size": args.batch_size, "seq_len": args.seq_len, "threads": threads,
        "repeats": args.repeats, "torch": torch.__version__, "score": score_kind,
        "ramp_steps": args.ramp_steps, "beta": args.beta, "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
